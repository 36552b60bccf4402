// Shapes that ran without an exact tuned result, for `kjit cache misses` (tune them next). The
// launch path only queues a miss; a background thread writes the queue every few seconds (and at
// exit or flush_misses()) into an existing database only: running an op never creates one.
#pragma once

#include "cache/tuning/tuning_db.hpp"

namespace kjit::tuning {

void record_miss(const Miss& miss);  // never blocks on the database
void flush_misses();                 // writes what is queued now

}  // namespace kjit::tuning

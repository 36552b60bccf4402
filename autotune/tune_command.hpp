// `kjit tune`: tunes ops for shapes given as flags, a JSON file or named presets, into the
// tuning database.
#pragma once

#include <CLI/CLI.hpp>

namespace kjit::autotune {

void add_tune_command(CLI::App& app, int* exit_code);

}  // namespace kjit::autotune

// The multi-rank suites run as `mpirun -n N kjit_dist_tests`: every rank runs the same tests in
// the same order over one world communicator (backend from KJIT_COMM), and inputs come from a
// seed rank 0 draws per run, so every rank can compute any rank's values alone.
#pragma once

#include <cstdint>

#include "kjit/comm.hpp"

namespace kjit::test {

comm::Communicator& world();
std::uint64_t run_seed();
bool has_gpu();  // false: the GPU tests skip, saying why

}  // namespace kjit::test

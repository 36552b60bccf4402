// The MPI backend: each call copies its device input to page-locked host memory, runs the MPI
// collective there, and copies the result back, waiting for each step (polling, so the timeout
// holds). Slow by design (host round trips, no overlap) but it runs any number of ranks on one
// GPU, which NCCL refuses: the multi-rank suites use it on one-GPU machines.
#pragma once

#include <mpi.h>

#include <chrono>
#include <memory>

#include "kjit/comm.hpp"

namespace kjit::comm {

// Takes ownership of `comm` (a communicator kjit duplicated for itself).
std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm,
                                                    std::chrono::milliseconds timeout);

}  // namespace kjit::comm

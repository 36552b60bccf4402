// Communicators over MPI: MPI bootstraps the NCCL backend (rank 0 makes the unique id and
// broadcasts it), or carries the data itself through the MPI backend (host staging through
// page-locked buffers; any number of ranks on one GPU). Link kjit::kjit_mpi and MPI.
#pragma once

#include <mpi.h>

#include <memory>

#include "kjit/comm.hpp"

namespace kjit::comm {

// Initialises MPI (thread level: serialized) for the object's lifetime unless the process has
// already done so, and finalises only what it initialised.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  bool owned_ = false;
};

// One communicator over the ranks of `comm` (a collective call: every rank makes it). MPI must
// be initialised. The backend is KJIT_COMM=nccl|mpi; unset, NCCL when every rank can run it
// (NCCL loads, a driver is present, and no two ranks of a node share a GPU), else MPI, with the
// reason on rank 0's stderr. `device`: the rank's GPU, or -1 for its index among the ranks of
// its node modulo the node's GPUs; made current on the calling thread.
std::unique_ptr<Communicator> from_mpi(MPI_Comm comm = MPI_COMM_WORLD, int device = -1,
                                       const Options& options = {});

}  // namespace kjit::comm

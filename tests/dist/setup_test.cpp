// Making communicators over MPI: the backend choice (KJIT_COMM), the timeout setting, and the
// argument checks through a real MPI communicator. These need no GPU: the CPU suite runs them
// under `mpirun -n 2`.
#include <gtest/gtest.h>

#include <string>

#include "kjit/comm_mpi.hpp"
#include "tests/dist/dist_world.hpp"
#include "tests/support/scoped_env.hpp"

namespace kjit::test {
namespace {

int mpi_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int mpi_size() {
  int n = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

TEST(CommSetup, MpiBackendOnRequest) {
  ScopedEnv env("KJIT_COMM", "mpi");
  auto c = comm::from_mpi(MPI_COMM_WORLD);
  EXPECT_EQ(c->backend(), comm::Backend::Mpi);
  EXPECT_EQ(c->rank(), mpi_rank());
  EXPECT_EQ(c->size(), mpi_size());
}

TEST(CommSetup, UnknownBackendIsRefused) {
  ScopedEnv env("KJIT_COMM", "gloo");
  try {
    comm::from_mpi(MPI_COMM_WORLD);
    FAIL() << "KJIT_COMM=gloo was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("the backends are nccl and mpi"), std::string::npos);
  }
}

TEST(CommSetup, BadTimeoutIsRefused) {
  ScopedEnv env("KJIT_COMM_TIMEOUT_S", "soon");
  EXPECT_THROW(comm::from_mpi(MPI_COMM_WORLD), InvalidArgument);
}

// NCCL on request: made where every rank has its own GPU, else a clear error on every rank.
TEST(CommSetup, NcclOnRequestOrAClearError) {
  ScopedEnv env("KJIT_COMM", "nccl");
  std::string why;
  const bool gpus = driver_available(&why) && device_count() >= mpi_size();
  const bool nccl = comm::nccl_available(&why);
  try {
    auto c = comm::from_mpi(MPI_COMM_WORLD);
    EXPECT_TRUE(gpus && nccl) << "NCCL formed where it cannot run";
    EXPECT_EQ(c->backend(), comm::Backend::Nccl);
  } catch (const comm::CommError& e) {
    EXPECT_FALSE(gpus && nccl) << e.what();
    EXPECT_NE(std::string(e.what()).find("KJIT_COMM=nccl, but NCCL cannot run"), std::string::npos)
        << e.what();
  }
}

// Unset: NCCL where it can run, else MPI (never an error).
TEST(CommSetup, DefaultFallsBackToMpi) {
  ScopedEnv env("KJIT_COMM", std::nullopt);
  auto c = comm::from_mpi(MPI_COMM_WORLD);
  const bool gpus = driver_available() && device_count() >= mpi_size();
  EXPECT_EQ(c->backend(),
            gpus && comm::nccl_available() ? comm::Backend::Nccl : comm::Backend::Mpi);
}

TEST(CommSetup, NullCommunicatorIsRefused) {
  EXPECT_THROW(comm::from_mpi(MPI_COMM_NULL), InvalidArgument);
}

// The checks run before anything is sent, with or without a GPU.
TEST(CommChecksOverMpi, MismatchesAreRefusedOnEveryRank) {
  comm::Communicator& w = world();
  const auto f = DType::Float32;
  void* p = reinterpret_cast<void*>(0x10000);  // never dereferenced: refused before
  EXPECT_THROW(w.all_gather({p, 4, f}, {p, 4 * std::size_t(w.size()) + 1, f}, nullptr),
               InvalidArgument);
  EXPECT_THROW(w.reduce_scatter({p, 4, DType::BFloat16}, {p, 4, f}, nullptr), InvalidArgument);
  EXPECT_THROW(w.broadcast({}, {nullptr, 3, f}, 0, nullptr), InvalidArgument);
  EXPECT_THROW(w.broadcast({}, {p, 3, f}, w.size(), nullptr), InvalidArgument);
  // Still usable, and in step: an empty barrier-free call completes on every rank.
  w.all_gather({nullptr, 0, f}, {nullptr, 0, f}, nullptr);
}

}  // namespace
}  // namespace kjit::test

// main() of the multi-rank suites: MPI up, one world communicator, a seed shared by all ranks.
//   mpirun -n N kjit_dist_tests [--require-gpu] [gtest flags]
// --require-gpu: exit 77 (ctest's "skipped") with the reason where there is no GPU.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>

#include "kjit/comm_mpi.hpp"
#include "tests/dist/dist_world.hpp"

namespace kjit::test {
namespace {
std::unique_ptr<comm::Communicator> g_world;
std::uint64_t g_seed = 0;
bool g_has_gpu = false;
}  // namespace

comm::Communicator& world() {
  return *g_world;
}
std::uint64_t run_seed() {
  return g_seed;
}
bool has_gpu() {
  return g_has_gpu;
}

}  // namespace kjit::test

int main(int argc, char** argv) {
  kjit::comm::MpiSession mpi(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  bool require_gpu = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--require-gpu") == 0) require_gpu = true;
  }
  std::string why;
  kjit::test::g_has_gpu = kjit::driver_available(&why) && kjit::device_count() > 0;
  if (require_gpu && !kjit::test::g_has_gpu) {
    if (rank == 0) std::printf("skipped: the multi-rank suites need a CUDA GPU: %s\n", why.c_str());
    return 77;
  }
  if (rank != 0) GTEST_FLAG_SET(brief, true);  // one full report, failures from every rank
  ::testing::InitGoogleTest(&argc, argv);
  std::uint64_t seed = std::random_device{}();
  MPI_Bcast(&seed, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  kjit::test::g_seed = seed;
  kjit::test::g_world = kjit::comm::from_mpi(MPI_COMM_WORLD);
  if (rank == 0) {
    std::printf("world: %d rank(s), backend %s, seed %llu\n", kjit::test::g_world->size(),
                kjit::comm::backend_name(kjit::test::g_world->backend()),
                static_cast<unsigned long long>(seed));
  }
  const int result = RUN_ALL_TESTS();
  kjit::test::g_world.reset();
  // Every rank must agree on the outcome: one failing rank fails the run.
  int worst = result;
  MPI_Allreduce(&result, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}

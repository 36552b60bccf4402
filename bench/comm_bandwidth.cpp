// Collective bandwidth, nccl-tests' definitions: for all_gather the size is the gathered
// (receive) buffer, for reduce_scatter the send buffer, for all_to_all either one; algbw =
// size / time and busbw = algbw x (n - 1) / n. The time is the slowest rank's mean over the
// timed iterations. At one rank (no bus) a device-to-device copy of the same size is the yardstick.
//   mpirun -n N kjit_bench_comm [max MiB, default 1024]        (backend from KJIT_COMM)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kjit/comm_mpi.hpp"

using namespace kjit;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The slowest rank's seconds per call of `call`.
template <class Call>
double time_calls(comm::Communicator& c, StreamHandle stream, std::size_t bytes, Call&& call) {
  const int warmup = 2;
  const int iters = bytes >= (std::size_t{256} << 20)  ? 5
                    : bytes >= (std::size_t{16} << 20) ? 10
                                                       : 30;
  for (int i = 0; i < warmup; ++i)
    call();
  c.barrier(stream);
  c.synchronize(stream);
  const auto start = Clock::now();
  for (int i = 0; i < iters; ++i)
    call();
  c.synchronize(stream);
  double mine = seconds_since(start) / iters, slowest = 0;
  MPI_Allreduce(&mine, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return slowest;
}

}  // namespace

int main(int argc, char** argv) {
  comm::MpiSession mpi(&argc, &argv);
  const std::size_t max_mib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1024;
  auto c = comm::from_mpi(MPI_COMM_WORLD);
  const int n = c->size();
  Stream stream;
  if (c->rank() == 0) {
    std::printf("backend %s, %d rank(s), %s\n", comm::backend_name(c->backend()), n,
                device_info(current_device()).name.c_str());
    std::printf(
        "| backend | ranks | op | MiB | time ms | algbw GB/s | busbw GB/s |\n"
        "|---|---|---|---|---|---|---|\n");
  }
  const DType f32 = DType::Float32;
  for (std::size_t mib = 1; mib <= max_mib; mib *= 4) {
    const std::size_t bytes = mib << 20;
    const std::size_t count = bytes / 4 / n * n;  // a multiple of the ranks
    DeviceBuffer big_a(count * 4), big_b(count * 4);
    const comm::Buffer a{big_a.data(), count, f32}, b{big_b.data(), count, f32};
    const comm::Buffer a_slice{big_a.data(), count / n, f32};
    struct Op {
      const char* name;
      double seconds;
    };
    std::vector<Op> ops = {
        {"all_gather", time_calls(*c, stream.handle(), bytes,
                                  [&] { c->all_gather(a_slice, b, stream.handle()); })},
        {"reduce_scatter",
         time_calls(*c, stream.handle(), bytes,
                    [&] {
                      c->reduce_scatter(a, {big_b.data(), count / n, f32}, stream.handle());
                    })},
        {"all_to_all",
         time_calls(*c, stream.handle(), bytes, [&] { c->all_to_all(a, b, stream.handle()); })},
    };
    if (n == 1) {
      ops.push_back({"device copy", time_calls(*c, stream.handle(), bytes, [&] {
                       big_b.copy_from(big_a, count * 4, stream.handle());
                     })});
    }
    if (c->rank() != 0) continue;
    for (const Op& op : ops) {
      const double algbw = count * 4.0 / op.seconds / 1e9;
      std::printf("| %s | %d | %s | %zu | %.3f | %.1f | %.1f |\n", comm::backend_name(c->backend()),
                  n, op.name, mib, op.seconds * 1e3, algbw, algbw * (n - 1) / n);
    }
    std::fflush(stdout);
  }
  return 0;
}

// Host cost of a launch: raw cuLaunchKernel on the same kernel vs kjit::Kernel::launch (argument
// check + cuLaunchKernelEx) vs kjit::load(spec) + launch (key hashing + memory hit). The kernel
// is saxpy with n = 0, so the device does nearly nothing; every benchmark synchronises once per
// 256 launches so the queue never fills, and that cost is the same for all three.
#include <benchmark/benchmark.h>

#include <cuda.h>

#include "driver/cuda_driver.hpp"
#include "kjit/jit.hpp"
#include "samples/samples.hpp"

namespace {

constexpr int kSyncEvery = 256;

struct Fixture {
  Fixture()
      : spec(kjit::samples::saxpy("float")), kernel(kjit::load(spec).kernel()), buffer(1024) {}
  kjit::KernelSpec spec;
  kjit::Kernel kernel;
  kjit::DeviceBuffer buffer;
  kjit::Stream stream;
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

// Runs `launch` once per iteration, synchronising every kSyncEvery launches (the same cost for
// every variant) so the launch queue never fills.
template <class Launch>
void launch_loop(benchmark::State& state, Fixture& f, Launch&& launch) {
  int i = 0;
  for (auto _ : state) {
    launch();
    if (++i % kSyncEvery == 0) f.stream.synchronize();
  }
  f.stream.synchronize();
}

void BM_RawCuLaunchKernel(benchmark::State& state) {
  Fixture& f = fixture();
  const auto& api = kjit::driver::api();
  CUfunction fn = reinterpret_cast<CUfunction>(f.kernel.native_handle());
  long long n = 0;
  float a = 1.f;
  const float* x = f.buffer.as<const float>();
  float* y = f.buffer.as<float>();
  void* args[] = {&n, &a, &x, &y};
  launch_loop(state, f, [&] {
    kjit::driver::check(
        api.cuLaunchKernel(fn, 1, 1, 1, 32, 1, 1, 0, f.stream.handle(), args, nullptr),
        "cuLaunchKernel");
  });
}
BENCHMARK(BM_RawCuLaunchKernel)->UseRealTime();

void BM_KjitKernelLaunch(benchmark::State& state) {
  Fixture& f = fixture();
  const kjit::LaunchConfig config{{1}, {32}, 0, f.stream.handle(), {}};
  const float* x = f.buffer.as<const float>();
  float* y = f.buffer.as<float>();
  launch_loop(state, f, [&] { f.kernel.launch(config, 0LL, 1.f, x, y); });
}
BENCHMARK(BM_KjitKernelLaunch)->UseRealTime();

void BM_KjitLoadThenLaunch(benchmark::State& state) {
  Fixture& f = fixture();
  const kjit::LaunchConfig config{{1}, {32}, 0, f.stream.handle(), {}};
  const float* x = f.buffer.as<const float>();
  float* y = f.buffer.as<float>();
  launch_loop(state, f, [&] { kjit::load(f.spec).kernel().launch(config, 0LL, 1.f, x, y); });
}
BENCHMARK(BM_KjitLoadThenLaunch)->UseRealTime();

void BM_KjitMemoryHitLookup(benchmark::State& state) {
  Fixture& f = fixture();
  for (auto _ : state)
    benchmark::DoNotOptimize(kjit::load(f.spec));
}
BENCHMARK(BM_KjitMemoryHitLookup);

}  // namespace

int main(int argc, char** argv) {
  std::string reason;
  if (!kjit::driver_available(&reason)) {
    std::printf("launch_overhead needs a CUDA GPU: %s\n", reason.c_str());
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

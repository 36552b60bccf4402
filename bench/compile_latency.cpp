// Compile and lookup latencies of the JIT on a realistic template (samples/mma_gemm.cuh: CUDA
// fp16/bf16 headers, cuda::std, PTX wrappers, deep templates):
//   cold NVRTC compile without and with -pch (each compile a different specialisation, so no
//   result cache helps), a disk hit (store read + driver load), a memory hit (key + map lookup).
// Prints a table; the figures go to docs/perf.md.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "kjit/jit.hpp"
#include "samples/samples.hpp"
#include "tests/support/scoped_env.hpp"
#include "tests/support/temp_dir.hpp"

namespace {

using Clock = std::chrono::steady_clock;
std::string g_arch;

struct Summary {
  double first_ms, median_ms, min_ms;
};

template <class F>
Summary time_runs(int runs, F&& body) {
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    const auto t0 = Clock::now();
    body(i);
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  const double first = ms.front();
  std::sort(ms.begin(), ms.end());
  return {first, ms[ms.size() / 2], ms.front()};
}

// Distinct specialisations of the same template (stage counts and tile shapes vary), compiled
// with the store off so nothing is reused but what NVRTC itself keeps (its PCH).
kjit::KernelSpec gemm_variant(int i) {
  kjit::samples::MmaGemmConfig c;
  c.stages = 2 + i % 3;
  c.block_k = (i / 3) % 2 ? 64 : 32;
  c.block_m = (i / 6) % 2 ? 64 : 128;
  c.warps_m = (i / 12) % 2 ? 1 : 2;
  c.block_n = (i / 24) % 2 ? 64 : 128;
  return kjit::samples::mma_gemm(c, g_arch);
}

// A small kernel: the cost floor of one NVRTC round trip.
kjit::KernelSpec saxpy_variant(int i) {
  static const char* const kTypes[] = {"float",    "double",        "int",
                                       "unsigned", "long long",     "unsigned long long",
                                       "short",    "unsigned short"};
  return kjit::samples::saxpy(kTypes[i % 8], g_arch);
}

void row(const char* what, const Summary& s, int runs) {
  std::printf("%-46s %5d %10.3f %10.3f %10.3f\n", what, runs, s.first_ms, s.median_ms, s.min_ms);
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = std::min(argc > 1 ? std::atoi(argv[1]) : 6, 8);  // distinct variants each
  std::string reason;
  const bool gpu = kjit::driver_available(&reason);
  const std::string arch = gpu ? kjit::device_info(kjit::current_device()).arch() : "sm_90a";
  g_arch = arch;
  kjit::test::TempDir cache;
  kjit::test::ScopedEnv dir("KJIT_CACHE_DIR", cache.str());
  std::printf("kjit %s, NVRTC %d.%d, arch %s, %s\n", kjit::version().c_str(),
              kjit::nvrtc_version().first, kjit::nvrtc_version().second, arch.c_str(),
              gpu ? kjit::device_info(kjit::current_device()).name.c_str() : "no GPU");
  std::printf("%-46s %5s %10s %10s %10s\n", "measurement", "runs", "first ms", "median ms",
              "min ms");
  {
    kjit::test::ScopedEnv off("KJIT_CACHE", "off");
    {
      kjit::test::ScopedEnv no_pch("KJIT_PCH", "0");
      row("cold compile, mma_gemm, KJIT_PCH=0",
          time_runs(runs, [&](int i) { kjit::compile(gemm_variant(i)); }), runs);
      row("cold compile, saxpy, KJIT_PCH=0",
          time_runs(runs, [&](int i) { kjit::compile(saxpy_variant(i)); }), runs);
    }
    row("cold compile, mma_gemm, PCH (default)",
        time_runs(runs, [&](int i) { kjit::compile(gemm_variant(24 + i)); }), runs);
    row("cold compile, saxpy, PCH (default)",
        time_runs(runs, [&](int i) { kjit::compile(saxpy_variant(i)); }), runs);
  }
  const kjit::KernelSpec spec = gemm_variant(0);
  kjit::compile(spec);  // into the store
  row("disk hit, store read only (compile())", time_runs(50, [&](int) { kjit::compile(spec); }),
      50);
  if (!gpu) {
    std::printf("(no GPU: %s; driver load and memory-hit rows skipped)\n", reason.c_str());
    return 0;
  }
  row("disk hit, store read + cuLibraryLoadData (load())",
      time_runs(50,
                [&](int) {
                  kjit::clear_memory_cache();
                  kjit::Origin o{};
                  kjit::load(spec, &o);
                  if (o != kjit::Origin::Disk) std::abort();
                }),
      50);
  kjit::load(spec);
  constexpr int kLookups = 200000;
  const auto t0 = Clock::now();
  for (int i = 0; i < kLookups; ++i)
    kjit::load(spec);
  const double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / kLookups;
  std::printf("%-46s %5d %21.1f ns per lookup\n", "memory hit, load(spec) with key hashing",
              kLookups, ns);
  return 0;
}

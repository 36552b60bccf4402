// What the benchmarks share: the median of CUDA-event-timed runs after warm-ups (also of a CUDA
// graph's replays, which leave the host's enqueue out), random bf16 or fp16 inputs, and the check
// that there is a GPU to time on.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "driver/cuda_driver.hpp"
#include "kjit/device.hpp"
#include "kjit/tensor.hpp"
#include "util/half_float.hpp"

namespace kjit::bench {

inline constexpr int kWarmup = 3, kIterations = 15;

// True, having said why, where there is no GPU to run `what` on (the benchmark then exits 0).
inline bool no_gpu(const char* what) {
  std::string reason;
  if (driver_available(&reason)) return false;
  std::printf("%s needs a CUDA GPU: %s\n", what, reason.c_str());
  return true;
}

template <class F>
double median_ms(F&& body, StreamHandle stream) {
  for (int i = 0; i < kWarmup; ++i)
    body();
  std::vector<double> ms;
  for (int i = 0; i < kIterations; ++i) {
    Event start, stop;
    start.record(stream);
    body();
    stop.record(stream);
    stop.synchronize();
    ms.push_back(stop.elapsed_ms_since(start));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// median_ms of one replay of a CUDA graph that captured body() on `stream`: the GPU's time
// alone, as a model runner that replays graphs sees it. body() runs once first, so that loading
// and compiling stay outside the capture.
template <class F>
double graph_median_ms(F&& body, StreamHandle stream) {
  const driver::Api& api = driver::api();
  const auto s = static_cast<CUstream>(stream);
  body();
  driver::check(api.cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
                "cuStreamBeginCapture");
  body();
  CUgraph graph = nullptr;
  driver::check(api.cuStreamEndCapture(s, &graph), "cuStreamEndCapture");
  CUgraphExec exec = nullptr;
  driver::check(api.cuGraphInstantiateWithFlags(&exec, graph, 0), "cuGraphInstantiateWithFlags");
  const double ms =
      median_ms([&] { driver::check(api.cuGraphLaunch(exec, s), "cuGraphLaunch"); }, stream);
  driver::check(api.cuGraphExecDestroy(exec), "cuGraphExecDestroy");
  driver::check(api.cuGraphDestroy(graph), "cuGraphDestroy");
  return ms;
}

// graph_median_ms of `calls` back-to-back call(i), i = 0 .. calls - 1, per call: a CUDA graph of
// many short calls, so that the launch gaps between its nodes are what a model runner sees.
template <class F>
double graph_per_call_ms(int calls, F&& call, StreamHandle stream) {
  return graph_median_ms(
             [&] {
               for (int i = 0; i < calls; ++i)
                 call(i);
             },
             stream) /
         calls;
}

// The device-to-device copy's bandwidth (bytes read and written), the ceiling a memory-bound
// kernel is measured against.
inline double copy_gbs(StreamHandle stream) {
  const std::size_t bytes = 2ull << 30;
  DeviceBuffer src(bytes), dst(bytes);
  return 2.0 * bytes / median_ms([&] { dst.copy_from(src, bytes, stream); }, stream) / 1e6;
}

// splitmix64: the next of a stream (a few ns a value: the MoE benchmarks draw billions).
inline std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform values of unit deviation, as bf16 or fp16.
inline DeviceBuffer random_values(std::size_t elems, DType dtype) {
  std::uint64_t state = 7;
  std::vector<std::uint16_t> host(elems);
  for (auto& x : host) {
    const float f = (static_cast<float>(splitmix64(state) >> 40) * 0x1p-24f - 0.5f) * 3.4641f;
    x = dtype == DType::Float16 ? float_to_fp16(f) : float_to_bf16(f);
  }
  DeviceBuffer b(elems * 2);
  b.upload(host.data(), b.size());
  return b;
}

// Bytes uniform in [lo, hi]: FP4 codes (0-255), or block scales within a range.
inline DeviceBuffer random_bytes(std::size_t n, unsigned lo, unsigned hi) {
  std::uint64_t state = 11;
  std::vector<std::uint8_t> host(n);
  for (auto& x : host)
    x = static_cast<std::uint8_t>(lo + splitmix64(state) % (hi - lo + 1));
  DeviceBuffer b(n);
  b.upload(host.data(), n);
  return b;
}
inline DeviceBuffer random_bf16(std::size_t elems) {
  return random_values(elems, DType::BFloat16);
}

}  // namespace kjit::bench

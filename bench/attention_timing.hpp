// What the attention benchmarks share: the median of CUDA-event-timed runs after warm-ups, and
// standard-normal bf16 inputs.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kjit/device.hpp"

namespace kjit::bench {

inline constexpr int kWarmup = 3, kIterations = 15;

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

inline DeviceBuffer random_bf16(std::size_t elems) {
  std::mt19937 rng(7);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<std::uint16_t> host(elems);
  for (auto& x : host) {
    const float f = n(rng);
    std::uint32_t bits;
    std::memcpy(&bits, &f, 4);
    x = static_cast<std::uint16_t>(bits >> 16);
  }
  DeviceBuffer b(elems * 2);
  b.upload(host.data(), b.size());
  return b;
}

}  // namespace kjit::bench

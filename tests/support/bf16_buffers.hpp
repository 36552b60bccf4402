// Standard-normal bf16 inputs on the device (their bits kept on the host), and bf16 outputs read
// back as floats, for the GPU tests.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "kjit/device.hpp"
#include "util/half_float.hpp"

namespace kjit::test {

struct Bf16Input {
  std::vector<std::uint16_t> host;
  DeviceBuffer device;
};

inline Bf16Input random_bf16(std::size_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  Bf16Input in{std::vector<std::uint16_t>(n), DeviceBuffer(n * 2)};
  for (auto& x : in.host)
    x = float_to_bf16(normal(rng));
  in.device.upload(in.host.data(), n * 2);
  return in;
}

inline std::vector<float> download_bf16(const DeviceBuffer& d) {
  std::vector<std::uint16_t> bits(d.size() / 2);
  d.download(bits.data(), d.size());
  std::vector<float> out(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i)
    out[i] = bf16_to_float(bits[i]);
  return out;
}

}  // namespace kjit::test

// Host-side conversions between float and the 16-bit formats (bf16, fp16), round to nearest
// even, for building inputs and references on the host (tests, tuning workloads). NaN and infinity
// are not needed there.
#pragma once

#include <cstdint>
#include <cstring>

namespace kjit {

inline std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline std::uint16_t float_to_bf16(float f) {
  const std::uint32_t u = float_bits(f);
  return static_cast<std::uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

inline float bf16_to_float(std::uint16_t h) {
  return bits_float(static_cast<std::uint32_t>(h) << 16);
}

// Normal and subnormal halves; |f| must stay under 65504.
inline std::uint16_t float_to_fp16(float f) {
  const std::uint32_t u = float_bits(f);
  const std::uint32_t sign = (u >> 16) & 0x8000;
  const int exponent = static_cast<int>((u >> 23) & 0xff) - 127 + 15;
  std::uint32_t mantissa = u & 0x7fffff;
  if (exponent <= 0) {  // subnormal half (or zero)
    if (exponent < -10) return static_cast<std::uint16_t>(sign);
    mantissa |= 0x800000;
    const int shift = 14 - exponent;
    std::uint32_t half = mantissa >> shift;
    const std::uint32_t rest = mantissa & ((1u << shift) - 1);
    const std::uint32_t midpoint = 1u << (shift - 1);
    if (rest > midpoint || (rest == midpoint && (half & 1))) ++half;
    return static_cast<std::uint16_t>(sign | half);
  }
  std::uint32_t half = (static_cast<std::uint32_t>(exponent) << 10) | (mantissa >> 13);
  const std::uint32_t rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (half & 1))) ++half;
  return static_cast<std::uint16_t>(sign | half);
}

inline float fp16_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000) << 16;
  const int exponent = (h >> 10) & 0x1f;
  const std::uint32_t mantissa = h & 0x3ff;
  if (exponent == 0) {
    const float v = static_cast<float>(mantissa) / 1024.f / 16384.f;  // m * 2^-24
    return sign ? -v : v;
  }
  return bits_float(sign | (static_cast<std::uint32_t>(exponent - 15 + 127) << 23) |
                    (mantissa << 13));
}

}  // namespace kjit

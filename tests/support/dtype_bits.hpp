// 16-bit float values as the raw bits the device buffers hold (fp16 or bf16), for tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kjit/tensor.hpp"
#include "util/half_float.hpp"

namespace kjit::test {

inline std::uint16_t to_bits(DType t, double v) {
  return t == DType::BFloat16 ? float_to_bf16(static_cast<float>(v))
                              : float_to_fp16(static_cast<float>(v));
}
inline double from_bits(DType t, std::uint16_t b) {
  return t == DType::BFloat16 ? bf16_to_float(b) : fp16_to_float(b);
}
inline double round_to(DType t, double v) {
  return from_bits(t, to_bits(t, v));
}
// One unit in the last place of the dtype at |v| (bf16: 8 significant bits, fp16: 11; fp16's
// below its smallest normal counted at that normal).
inline double ulp(DType t, double v) {
  const int mantissa = t == DType::BFloat16 ? 7 : 10;
  const double a = std::max(std::abs(v), t == DType::BFloat16 ? 1e-30 : std::ldexp(1.0, -14));
  return std::ldexp(1.0, static_cast<int>(std::floor(std::log2(a))) - mantissa);
}

}  // namespace kjit::test

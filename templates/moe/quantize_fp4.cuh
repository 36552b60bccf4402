// Weights to FP4 (E2M1 codes, two a byte) with block scales, bit for bit as
// tests/reference/moe_reference's quantize_nvfp4 / quantize_mxfp4: the arithmetic is the
// reference's, in fp64 (a load-time op: exactness over speed), every rounding to nearest with
// ties to the even code, magnitudes past the largest code saturating.
//  - NVFP4 (kBlock 16): moe_fp4_amax (one block) finds the tensor's largest magnitude; the
//    tensor scale maps it to E4M3's 448 x E2M1's 6: global = 2688 / amax; each block's E4M3
//    scale is block_max / 6 x global, each element's code e2m1(v global / scale).
//  - MXFP4 (kBlock 32): each block's E8M0 scale is 2^(floor(log2 block_max) - 2) (the OCP MX
//    choice), each element's code e2m1(v / scale).
// One thread a block of elements.
#pragma once

#include "common/numeric.cuh"
#include "moe/quantize_fp4_params.h"

namespace kjit::moe {

// The index of the nearest of `count` ascending values value(i) to x >= 0, ties to the even
// index (the reference's scan, so that ties and saturation match it exactly).
template <class Value>
__device__ __forceinline__ int nearest_even(double x, int count, Value value) {
  int best = 0;
  double best_distance = fabs(value(0) - x);
  for (int i = 1; i < count; ++i) {
    const double d = fabs(value(i) - x);
    if (d < best_distance || (d == best_distance && i % 2 == 0)) {
      best = i;
      best_distance = d;
    }
  }
  return best;
}

__device__ __forceinline__ double e2m1_value(int magnitude) {
  constexpr double kGrid[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  return kGrid[magnitude];
}

__device__ __forceinline__ double e4m3_value(int magnitude) {  // 0x00..0x7e (0x7f is NaN)
  const int e = magnitude >> 3, m = magnitude & 7;
  return e == 0 ? ldexp(m / 8.0, -6) : ldexp(1 + m / 8.0, e - 7);
}

__device__ __forceinline__ unsigned e2m1_code(double x) {
  const int magnitude = nearest_even(fabs(x), 8, e2m1_value);
  return (x < 0 ? 8u : 0u) | static_cast<unsigned>(magnitude);
}

template <class T>
__global__ void __launch_bounds__(1024) moe_fp4_amax(const KjitFp4QuantizeParams p) {
  __shared__ float warp_max[32];
  float m = 0.f;
  for (int r = 0; r < p.rows; ++r) {
    const T* row = static_cast<const T*>(p.w) + r * p.w_stride;
    for (int c = threadIdx.x; c < p.cols; c += blockDim.x)
      m = fmaxf(m, fabsf(to_float(row[c])));
  }
  for (int d = 16; d > 0; d /= 2)
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, d));
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < blockDim.x / 32; ++w)
      m = fmaxf(m, warp_max[w]);
    *p.amax = m;
  }
}

template <class T, int kBlock>
__global__ void __launch_bounds__(256) moe_fp4_quantize(const KjitFp4QuantizeParams p) {
  static_assert(kBlock == 16 || kBlock == 32, "NVFP4's 16 or MXFP4's 32");
  constexpr bool kNvFp4 = kBlock == 16;
  const long long block = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int blocks_per_row = p.cols / kBlock;
  const double amax = kNvFp4 ? static_cast<double>(*p.amax) : 0.0;
  const double global = kNvFp4 && amax > 0 ? 448.0 * 6.0 / amax : 1.0;
  if (block == 0) *p.tensor_scale = static_cast<float>(kNvFp4 ? 1.0 / global : 1.0);
  if (block >= static_cast<long long>(p.rows) * blocks_per_row) return;
  const long long row = block / blocks_per_row;
  const int col0 = static_cast<int>(block % blocks_per_row) * kBlock;
  const T* w = static_cast<const T*>(p.w) + row * p.w_stride + col0;
  double v[kBlock], block_max = 0;
#pragma unroll
  for (int i = 0; i < kBlock; ++i) {
    v[i] = to_float(w[i]);
    block_max = fmax(block_max, fabs(v[i]));
  }
  unsigned scale_code;
  double scale, multiplier;  // code of element i: e2m1(v[i] x multiplier)
  if constexpr (kNvFp4) {
    const double target = block_max / 6.0 * global;
    scale_code = static_cast<unsigned>(nearest_even(target, 0x7f, e4m3_value));
    scale = e4m3_value(static_cast<int>(scale_code));
    multiplier = global;
  } else {
    const int exponent = block_max > 0 ? ilogb(block_max) - 2 : -127;
    scale_code = static_cast<unsigned>(min(max(exponent + 127, 0), 254));
    scale = ldexp(1.0, static_cast<int>(scale_code) - 127);
    multiplier = 1.0;
  }
  p.scales[row * p.scales_stride + col0 / kBlock] = static_cast<unsigned char>(scale_code);
  unsigned char* codes = p.codes + row * p.codes_stride + col0 / 2;
#pragma unroll
  for (int i = 0; i < kBlock; i += 2) {
    const unsigned lo = scale > 0 ? e2m1_code(v[i] * multiplier / scale) : 0u;
    const unsigned hi = scale > 0 ? e2m1_code(v[i + 1] * multiplier / scale) : 0u;
    codes[i / 2] = static_cast<unsigned char>(lo | hi << 4);
  }
}

}  // namespace kjit::moe

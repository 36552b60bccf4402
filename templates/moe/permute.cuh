// MoE token dispatch around the grouped GEMM, in the layout of moe align (align.cuh):
//  - moe_reset_positions, then moe_permute: gathers the tokens' rows into the dispatch layout
//    (row i of x_sorted is the token of pair sorted[i], zeros for a padding row unless told not
//    to write them) and records each pair's row (positions), which the way back needs; a pair
//    align did not place keeps -1.
//  - moe_unpermute: back to token order, out[t] = shared[t] + sum_j w[t, j] y[positions[t k + j]]
//    summed in fp32 in slot order (deterministic) and rounded once; a position outside the
//    layout's rows counts as a pair not placed.
// permute: a warp a row; unpermute: a warp a token's 32 vectors; 16-byte vectors (rows of a
// multiple of 8 elements, 16-byte aligned).
#pragma once

#include <cuda/std/type_traits>

#include "common/mma.cuh"
#include "moe/permute_params.h"

namespace kjit::moe {

__global__ void __launch_bounds__(256) moe_reset_positions(const KjitMoePermuteParams p) {
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < p.pairs) p.positions[i] = -1;
}

template <class T>
__global__ void __launch_bounds__(256) moe_permute(const KjitMoePermuteParams p) {
  const long long row = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (row >= p.rows) return;
  const int pair = p.sorted[row];
  const bool placed = pair >= 0 && pair < p.pairs;
  uint4* dst = reinterpret_cast<uint4*>(static_cast<T*>(p.x_sorted) + row * p.out_row_stride);
  if (!placed) {  // padding: zeros, unless the caller reads no padding row
    if (p.zero_padding) {
      for (int v = lane; v < p.vectors; v += 32)
        dst[v] = make_uint4(0, 0, 0, 0);
    }
    return;
  }
  const uint4* src = reinterpret_cast<const uint4*>(static_cast<const T*>(p.x) +
                                                    (pair / p.top_k) * p.x_row_stride);
  for (int v = lane; v < p.vectors; v += 32)
    dst[v] = src[v];
  if (lane == 0) p.positions[pair] = static_cast<int>(row);
}

// The two elements of a packed pair (pack_pair's inverse), as floats.
template <class T>
__device__ __forceinline__ float2 unpack_pair(unsigned w) {
  if constexpr (cuda::std::is_same_v<T, __half>) {
    return make_float2(__half2float(__ushort_as_half(static_cast<unsigned short>(w & 0xffffu))),
                       __half2float(__ushort_as_half(static_cast<unsigned short>(w >> 16))));
  } else {
    return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
  }
}

// acc[0..7] += w * the 8 elements of v.
template <class T>
__device__ __forceinline__ void add_vector(float (&acc)[8], float w, const uint4& v) {
  const unsigned words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    const float2 e = unpack_pair<T>(words[c]);
    acc[2 * c] = fmaf(w, e.x, acc[2 * c]);
    acc[2 * c + 1] = fmaf(w, e.y, acc[2 * c + 1]);
  }
}

// A warp a token's 32 vectors (a row of H 2048 is 8 warps): at decode's few tokens, a warp a row
// left most SMs idle and each lane's vectors one after another (20 us at T 16 on the H100).
template <class T>
__global__ void __launch_bounds__(256) moe_unpermute(const KjitMoeUnpermuteParams p) {
  const long long warp = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int chunks = (p.vectors + 31) / 32;
  const long long token = warp / chunks;
  const int v = static_cast<int>(warp % chunks) * 32 + threadIdx.x % 32;
  if (token >= p.tokens || v >= p.vectors) return;
  const int* positions = p.positions + token * p.top_k;
  const float* weights = p.weights ? p.weights + token * p.top_k : nullptr;
  float acc[8] = {};
  if (p.shared) {
    add_vector<T>(acc, 1.f,
                  reinterpret_cast<const uint4*>(static_cast<const T*>(p.shared) +
                                                 token * p.shared_row_stride)[v]);
  }
  for (int j = 0; j < p.top_k; ++j) {
    const int row = positions[j];
    if (row < 0 || row >= p.rows) continue;
    add_vector<T>(
        acc, weights ? weights[j] : 1.f,
        reinterpret_cast<const uint4*>(static_cast<const T*>(p.y) + row * p.y_row_stride)[v]);
  }
  uint4 out;
  out.x = ptx::pack_pair<T>(acc[0], acc[1]);
  out.y = ptx::pack_pair<T>(acc[2], acc[3]);
  out.z = ptx::pack_pair<T>(acc[4], acc[5]);
  out.w = ptx::pack_pair<T>(acc[6], acc[7]);
  reinterpret_cast<uint4*>(static_cast<T*>(p.out) + token * p.out_row_stride)[v] = out;
}

}  // namespace kjit::moe

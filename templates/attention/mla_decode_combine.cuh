// The split-KV combine of the MLA decode kernels (mla_decode.cuh, mla_decode_sm90.cuh): merges
// the splits' fp32 partials of each row (exactly, as merge_states does) into O in T and the
// natural-log LSE; a row no split saw gives O = 0, LSE = -inf.
#pragma once

#include "attention/mla_decode_params.h"
#include "common/mma.cuh"
#include "common/numeric.cuh"

namespace kjit::attention {

// One warp per (request, row): the splits' partials weighted by exp(lse - max), in fp32.
template <class T>
__global__ void __launch_bounds__(256) mla_decode_combine(const KjitMlaDecodeParams p) {
  constexpr int kLatent = 512, kPerLane = kLatent / 32;
  const int rows = p.s_q * p.heads;
  const long long cell = static_cast<long long>(blockIdx.x) * 8 + threadIdx.x / 32;
  if (cell >= static_cast<long long>(p.batch) * rows) return;
  const int lane = threadIdx.x % 32, b = static_cast<int>(cell / rows);
  const int row = static_cast<int>(cell % rows), i = row / p.heads, head = row % p.heads;
  const long long per_split = static_cast<long long>(p.batch) * rows;
  float max = negative_infinity();
  for (int s = 0; s < p.splits; ++s)
    max = fmaxf(max, p.partial_lse[s * per_split + cell]);
  float acc[kPerLane] = {}, total = 0.f;
  if (max != negative_infinity()) {
    for (int s = 0; s < p.splits; ++s) {
      const float w = expf(p.partial_lse[s * per_split + cell] - max);  // 0 for an empty split
      if (w == 0.f) continue;
      total += w;
      const float4* part = reinterpret_cast<const float4*>(
          p.partial_out + (s * per_split + cell) * kLatent + lane * kPerLane);
#pragma unroll
      for (int v = 0; v < kPerLane / 4; ++v) {
        const float4 x = part[v];
        acc[4 * v] += w * x.x;
        acc[4 * v + 1] += w * x.y;
        acc[4 * v + 2] += w * x.z;
        acc[4 * v + 3] += w * x.w;
      }
    }
  }
  const float inv = total > 0.f ? 1.f / total : 0.f;
  T* out = static_cast<T*>(p.out) + b * p.o_batch_stride + i * p.o_token_stride +
           head * p.o_head_stride + lane * kPerLane;
#pragma unroll
  for (int c = 0; c < kPerLane; c += 2)
    *reinterpret_cast<unsigned*>(out + c) = ptx::pack_pair<T>(acc[c] * inv, acc[c + 1] * inv);
  if (p.lse && lane == 0) {
    p.lse[b * p.lse_batch_stride + i * p.lse_token_stride + head * p.lse_head_stride] =
        total > 0.f ? max + logf(total) : negative_infinity();
  }
}

}  // namespace kjit::attention

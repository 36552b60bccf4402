// The split-KV combine of the MLA decode kernels (mla_decode.cuh, mla_decode_sm90.cuh): merges
// the fp32 partials of each row over its request's slots (mla_decode_plan.cuh; exactly, as
// merge_states does) into O in T and the natural-log LSE; a row no split saw gives O = 0, LSE =
// -inf.
#pragma once

#include "attention/mla_decode_plan.cuh"
#include "common/grid_dependency.cuh"
#include "common/mma.cuh"
#include "common/numeric.cuh"

namespace kjit::attention {

// kWarps warps per (request, row), a block of 256 threads over 8 / kWarps rows; lane l of a row's
// warp w owns its float4 columns c = 32 (w + kWarps v) + l (coalesced). Each warp finds the max and
// the weights exp(lse - max) itself, from up to four splits' LSEs a lane (at most 128 splits, the
// family's kMaxSplits) and warp reductions, then sums the partial rows kUnroll splits at a time,
// their loads in flight together. The host takes kWarps 4 for many splits of few rows (a row's
// splits then spread over four times the SMs, whose L2 reads bound the combine), 1 for few
// splits (fewer, fuller blocks). On sm_90 it is launched to overlap the decode kernel's end (its
// launch and block start hidden there), so it waits for the partials first. Two blocks an SM,
// as before the balanced plan: its scan took the four-warp rows to 143 registers (one block an
// SM), and the even rows with 8-16 splits then ran 5-12 % slower on the H100 (2026-12-07); with
// the bound (111-117, no spills) they came back to within 1-4 % (docs/perf.md).
template <class T, int kWarps>
__global__ void __launch_bounds__(256, 2) mla_decode_combine(const KjitMlaDecodeParams p) {
  constexpr int kLatent = 512, kSlots = 4, kRowsPerBlock = 8 / kWarps;
  constexpr int kVectors = kLatent / 4 / 32 / kWarps, kUnroll = 16 / kVectors;
  static_assert(kWarps == 1 || kWarps == 2 || kWarps == 4, "a float4 column or more a lane");
  const int rows = p.s_q * p.heads, warp = threadIdx.x / 32 % kWarps, lane = threadIdx.x % 32;
  const long long cell =
      static_cast<long long>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32 / kWarps;
  const bool held = cell < static_cast<long long>(p.batch) * rows;  // (the warp's)
  const int b = static_cast<int>(held ? cell / rows : 0), row = static_cast<int>(cell % rows);
  const int i = row / p.heads, head = row % p.heads;
  // The request's slots from the lengths (the decode kernel's inputs, not its outputs: it is not
  // launched as a dependent) under its end; every thread then waits for it, also those with no
  // row to merge, so that this grid never completes before the decode's.
  const MlaSlots slots = held ? mla_request_slots(p, b) : MlaSlots{};
  ptx::wait_for_prior_grid();
  if (!held || (p.pieces > 0 && slots.count == 1)) return;  // (count 1: its one block wrote O)
  const auto slot_cell = [&](int s) { return (slots.first + slots.stride * s) * rows + row; };

  float lse[kSlots], max = negative_infinity();
#pragma unroll
  for (int k = 0; k < kSlots; ++k) {
    const int s = lane + 32 * k;
    lse[k] = s < slots.count ? p.partial_lse[slot_cell(s)] : negative_infinity();
    max = fmaxf(max, lse[k]);
  }
#pragma unroll
  for (int d = 16; d > 0; d /= 2)
    max = fmaxf(max, __shfl_xor_sync(0xffffffffu, max, d));
  float weight[kSlots], total = 0.f;  // 0 for an empty split, and for all when every one is
#pragma unroll
  for (int k = 0; k < kSlots; ++k) {
    weight[k] = max == negative_infinity() ? 0.f : expf(lse[k] - max);
    total += weight[k];
  }
#pragma unroll
  for (int d = 16; d > 0; d /= 2)
    total += __shfl_xor_sync(0xffffffffu, total, d);

  const auto column = [&](int v) { return 32 * (warp + kWarps * v) + lane; };
  float4 acc[kVectors] = {};
  for (int s0 = 0; s0 < slots.count; s0 += kUnroll) {
    float w[kUnroll];
    float4 x[kUnroll][kVectors];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int s = s0 + u, slot = s / 32;  // warp-uniform
      const float mine = slot == 0   ? weight[0]
                         : slot == 1 ? weight[1]
                         : slot == 2 ? weight[2]
                                     : weight[3];
      w[u] = __shfl_sync(0xffffffffu, mine, s % 32);
      const float4* part = reinterpret_cast<const float4*>(p.partial_out + slot_cell(s) * kLatent);
#pragma unroll
      for (int v = 0; v < kVectors; ++v)
        x[u][v] = s < slots.count ? part[column(v)] : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (s0 + u >= slots.count) break;
#pragma unroll
      for (int v = 0; v < kVectors; ++v) {
        acc[v].x += w[u] * x[u][v].x;
        acc[v].y += w[u] * x[u][v].y;
        acc[v].z += w[u] * x[u][v].z;
        acc[v].w += w[u] * x[u][v].w;
      }
    }
  }
  const float inv = total > 0.f ? 1.f / total : 0.f;
  T* out =
      static_cast<T*>(p.out) + b * p.o_batch_stride + i * p.o_token_stride + head * p.o_head_stride;
#pragma unroll
  for (int v = 0; v < kVectors; ++v) {
    *reinterpret_cast<uint2*>(out + 4 * column(v)) =
        make_uint2(ptx::pack_pair<T>(acc[v].x * inv, acc[v].y * inv),
                   ptx::pack_pair<T>(acc[v].z * inv, acc[v].w * inv));
  }
  if (p.lse && warp == 0 && lane == 0) {
    p.lse[b * p.lse_batch_stride + i * p.lse_token_stride + head * p.lse_head_stride] =
        total > 0.f ? max + logf(total) : negative_infinity();
  }
}

}  // namespace kjit::attention

// MoE dispatch layout (vLLM's moe_align_block_size): the (token, slot) pairs grouped by expert,
// each expert's run padded to a multiple of the GEMM's block of rows, with the expert of every
// block. One block of 1024 threads: counts by shared-memory atomics, a scan of the padded counts,
// padding fills, then one warp places the pairs in pair order (a stable counting sort:
// __match_any_sync ranks a warp's pairs of one expert, a shared running count carries the rest),
// so the layout is the same run to run and equals tests/reference/moe_reference's `align`.
// kExperts up to 1024.
#pragma once

#include "moe/align_params.h"

namespace kjit::moe {

template <int kExperts>
__global__ void __launch_bounds__(1024) moe_align(const KjitMoeAlignParams p) {
  static_assert(kExperts >= 1 && kExperts <= 1024, "experts");
  __shared__ int counts[kExperts], offsets[kExperts + 1], running[kExperts];
  __shared__ int warp_sums[32];
  __shared__ int invalid;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  for (int e = tid; e < kExperts; e += blockDim.x)
    counts[e] = running[e] = 0;
  if (tid == 0) invalid = 0;
  __syncthreads();
  for (int i = tid; i < p.pairs; i += blockDim.x) {
    const int e = p.ids[i];
    if (e >= 0 && e < kExperts) {
      atomicAdd(&counts[e], 1);
    } else {
      atomicAdd(&invalid, 1);
    }
  }
  __syncthreads();

  // Exclusive scan of the padded counts (one expert per thread, kExperts <= 1024).
  int padded = tid < kExperts ? (counts[tid] + p.block - 1) / p.block * p.block : 0;
  int inclusive = padded;
#pragma unroll
  for (int d = 1; d < 32; d *= 2) {
    const int v = __shfl_up_sync(0xffffffffu, inclusive, d);
    if (lane >= d) inclusive += v;
  }
  if (lane == 31) warp_sums[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {
    int s = lane < blockDim.x / 32 ? warp_sums[lane] : 0;
#pragma unroll
    for (int d = 1; d < 32; d *= 2) {
      const int v = __shfl_up_sync(0xffffffffu, s, d);
      if (lane >= d) s += v;
    }
    warp_sums[lane] = s;  // inclusive over warps
  }
  __syncthreads();
  const int before = (warp > 0 ? warp_sums[warp - 1] : 0) + inclusive - padded;
  if (tid < kExperts) {
    offsets[tid] = before;
    p.offsets[tid] = before;
    p.counts[tid] = counts[tid];
  }
  if (tid == kExperts - 1) {
    offsets[kExperts] = before + padded;
    p.offsets[kExperts] = before + padded;
  }
  if (tid == 0) *p.invalid = invalid;
  __syncthreads();

  // Padding everywhere, the expert of every block (-1 past the total).
  const int total = offsets[kExperts];
  for (int i = tid; i < p.capacity; i += blockDim.x)
    p.sorted[i] = p.pairs;
  for (int b = tid; b < p.capacity / p.block; b += blockDim.x) {
    int expert = -1;
    if (b * p.block < total) {
      int lo = 0, hi = kExperts - 1;  // the last expert whose run starts at or before the block
      while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (offsets[mid] <= b * p.block) {
          lo = mid;
        } else {
          hi = mid - 1;
        }
      }
      expert = lo;
    }
    p.block_expert[b] = expert;
  }
  __syncthreads();  // the padding is in place before the pairs overwrite it

  if (warp != 0) return;
  for (int base = 0; base < p.pairs; base += 32) {
    const int i = base + lane;
    const int e = i < p.pairs ? p.ids[i] : -1;
    const bool placed = e >= 0 && e < kExperts;
    const unsigned peers = __match_any_sync(0xffffffffu, placed ? e : -1);
    const int rank = __popc(peers & ((1u << lane) - 1));
    if (placed) p.sorted[offsets[e] + running[e] + rank] = i;
    __syncwarp();
    // The highest lane of each expert's peers carries the count on.
    if (placed && (peers >> lane) == 1u) running[e] += __popc(peers);
    __syncwarp();
  }
}

}  // namespace kjit::moe

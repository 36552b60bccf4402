// MoE dispatch layout (vLLM's moe_align_block_size): the (token, slot) pairs grouped by expert,
// each expert's run padded to a multiple of the GEMM's block of rows, with the expert of every
// block. One block of 1024 threads, a stable counting sort in pair order, so that the layout is the
// same run to run and equals tests/reference/moe_reference's `align`: the pairs split into kChunks
// contiguous chunks, a warp each, which counts its chunk per expert; each chunk's start within
// each expert's run is the sum of the earlier chunks' counts; a scan of the padded counts gives the
// runs; the padding is filled; then every warp places its chunk's pairs from its starts on, ranked
// among their expert's peers in each step of 32 (__match_any_sync groups the step's pairs by
// expert). kExperts up to 1024 (kChunks shrinks so that the chunks' counts fit 32 KB).
#pragma once

#include "moe/align_params.h"

namespace kjit::moe {

template <int kExperts>
__global__ void __launch_bounds__(1024) moe_align(const KjitMoeAlignParams p) {
  static_assert(kExperts >= 1 && kExperts <= 1024, "experts");
  constexpr int kChunks = kExperts <= 256 ? 32 : 8192 / kExperts;
  // Each chunk's count of each expert, then its first row within the expert's run.
  __shared__ int chunk_counts[kChunks][kExperts];
  __shared__ int counts[kExperts], offsets[kExperts + 1];
  __shared__ int warp_sums[32];
  __shared__ int invalid;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  for (int i = tid; i < kChunks * kExperts; i += blockDim.x)
    (&chunk_counts[0][0])[i] = 0;
  if (tid == 0) invalid = 0;
  __syncthreads();

  // This warp's chunk of pairs.
  const int chunk = (p.pairs + kChunks * 32 - 1) / (kChunks * 32) * 32;
  const int begin = min(warp * chunk, p.pairs), end = min(begin + chunk, p.pairs);
  if (warp < kChunks) {  // counted by shared atomics: no ranks needed yet
#pragma unroll 4
    for (int i = begin + lane; i < end; i += 32) {
      const int e = p.ids[i];
      atomicAdd(e >= 0 && e < kExperts ? &chunk_counts[warp][e] : &invalid, 1);
    }
  }
  __syncthreads();
  for (int e = tid; e < kExperts; e += blockDim.x) {
    int sum = 0;
    for (int c = 0; c < kChunks; ++c) {
      const int n = chunk_counts[c][e];
      chunk_counts[c][e] = sum;
      sum += n;
    }
    counts[e] = sum;
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

  if (warp >= kChunks) return;
  // In steps of 32 pairs, the next step's ids loaded ahead.
  int next = begin + lane < end ? p.ids[begin + lane] : -1;
  for (int base = begin; base < end; base += 32) {
    const int i = base + lane, e = next;
    next = i + 32 < end ? p.ids[i + 32] : -1;
    const bool placed = e >= 0 && e < kExperts;
    const unsigned peers = __match_any_sync(0xffffffffu, placed ? e : -1);
    if (placed) {
      p.sorted[offsets[e] + chunk_counts[warp][e] + __popc(peers & ((1u << lane) - 1))] = i;
      __syncwarp(peers);
      // The highest lane of each expert's peers carries the count on.
      if ((peers >> lane) == 1u) chunk_counts[warp][e] += __popc(peers);
    }
    __syncwarp();
  }
}

}  // namespace kjit::moe

// MoE dispatch layout (vLLM's moe_align_block_size): the (token, slot) pairs grouped by expert,
// each expert's run padded to a multiple of the GEMM's block of rows, with the expert of every
// block. A stable counting sort in pair order, so that the layout is the same run to run and
// equals tests/reference/moe_reference's `align`. One thread-block cluster of 1 to 8 blocks of
// 1024 threads (sm_90; one block elsewhere): the pairs split into contiguous chunks, one per
// counting warp in rank order; each warp counts its chunk per expert (shared atomics); every block
// reads its peers' per-expert counts through distributed shared memory, which gives each chunk's
// start within each expert's run and the totals; every block scans the padded totals itself;
// then each warp places its chunk from its starts on, ranked among their expert's peers in each
// step of 32 (__match_any_sync), while the padding rows (disjoint from the pairs' rows) and the
// blocks' experts are written by all. kExperts up to 1024 (fewer counting warps a block above
// 256 experts, so that their counts fit 32 KB).
#pragma once

#include "common/cluster.cuh"
#include "moe/align_params.h"

namespace kjit::moe {

// One block an SM is asked for: ptxas otherwise aims at two and spills at 32 registers.
template <int kExperts>
__global__ void __launch_bounds__(1024, 1) moe_align(const KjitMoeAlignParams p) {
  static_assert(kExperts >= 1 && kExperts <= 1024, "experts");
  using namespace kjit::ptx;
  constexpr int kChunks = kExperts <= 256 ? 32 : 8192 / kExperts;  // counting warps a block
  constexpr int kBatch = 8;  // steps of 32 ids loaded at once: one memory latency for 256 pairs
  // Each chunk's count of each expert, then its next row in the expert's run.
  __shared__ int chunk_counts[kChunks][kExperts];
  __shared__ int block_counts[kExperts];  // this block's pairs of each expert, read by the peers
  __shared__ int counts[kExperts], offsets[kExperts + 1];
  __shared__ int warp_sums[32];
  __shared__ int invalid;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int rank = cluster_rank(), ranks = cluster_blocks();

  // This warp's chunk of pairs: chunk rank kChunks + warp of ranks kChunks (64-bit: the last
  // chunks' bounds may pass 2^31 before they are clamped), in batches of kBatch steps of 32.
  const long long chunks = static_cast<long long>(ranks) * kChunks;
  const long long chunk = (p.pairs + chunks * 32 - 1) / (chunks * 32) * 32;
  const long long first_pair = warp < kChunks ? (rank * kChunks + warp) * chunk : p.pairs;
  const int begin = static_cast<int>(min(first_pair, static_cast<long long>(p.pairs)));
  const int end = static_cast<int>(min(begin + chunk, static_cast<long long>(p.pairs)));
  auto load = [&](int(&ids)[kBatch], int base) {  // -1 past the chunk
#pragma unroll
    for (int s = 0; s < kBatch; ++s) {
      const int i = base + s * 32 + lane;
      ids[s] = i < end ? p.ids[i] : -1;
    }
  };
  auto count = [&](const int(&ids)[kBatch], int base) {  // shared atomics: no ranks needed yet
#pragma unroll
    for (int s = 0; s < kBatch; ++s) {
      const int e = ids[s];
      if (base + s * 32 + lane < end)
        atomicAdd(e >= 0 && e < kExperts ? &chunk_counts[warp][e] : &invalid, 1);
    }
  };
  // From the chunk's starts on, each step's pairs ranked among their expert's peers.
  auto place = [&](const int(&ids)[kBatch], int base) {
#pragma unroll
    for (int s = 0; s < kBatch; ++s) {
      const int e = ids[s];
      if (base + s * 32 < end) {  // the warp's last batch may be short
        const bool placed = e >= 0 && e < kExperts;
        const unsigned peers = __match_any_sync(0xffffffffu, placed ? e : -1);
        if (placed) {
          p.sorted[chunk_counts[warp][e] + __popc(peers & ((1u << lane) - 1))] =
              base + s * 32 + lane;
          __syncwarp(peers);
          // The highest lane of each expert's peers carries the count on.
          if ((peers >> lane) == 1u) chunk_counts[warp][e] += __popc(peers);
        }
        __syncwarp();
      }
    }
  };
  // The first batch is loaded before anything else and kept for the placement: a chunk of up to
  // 256 pairs (most layouts, over the cluster) reads its ids once.
  int held[kBatch];
  load(held, begin);
  for (int i = tid; i < kChunks * kExperts; i += blockDim.x)
    (&chunk_counts[0][0])[i] = 0;
  if (tid == 0) invalid = 0;
  __syncthreads();
  count(held, begin);
  for (int base = begin + 32 * kBatch; base < end; base += 32 * kBatch) {
    int ids[kBatch];
    load(ids, base);
    count(ids, base);
  }
  __syncthreads();
  if (tid < kExperts) {  // each chunk's start within the block's pairs of expert tid
    int sum = 0;
    for (int c = 0; c < kChunks; ++c) {
      const int n = chunk_counts[c][tid];
      chunk_counts[c][tid] = sum;
      sum += n;
    }
    block_counts[tid] = sum;
  }
  cluster_arrive();
  cluster_wait();  // every block's counts are in place

  // Expert tid's pairs in the earlier blocks and in all; the invalid ids of all.
  int earlier = 0, total = 0;
  if (tid < kExperts) {
    for (int r = 0; r < ranks; ++r) {
      const int n = load_peer(&block_counts[tid], r);
      earlier += r < rank ? n : 0;
      total += n;
    }
    counts[tid] = total;
  }
  int invalid_total = 0;
  if (tid == 0) {
    for (int r = 0; r < ranks; ++r)
      invalid_total += load_peer(&invalid, r);
  }
  // The peers' shared memory is read: each may exit once all have arrived (a release arrival:
  // a relaxed one would not order the reads before it).
  cluster_arrive();

  // Exclusive scan of the padded totals (one expert a thread, kExperts <= 1024).
  const int padded = tid < kExperts ? (total + p.block - 1) / p.block * p.block : 0;
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
    for (int c = 0; c < kChunks; ++c)  // each chunk's first row in the run
      chunk_counts[c][tid] += before + earlier;
    if (rank == 0) {
      p.offsets[tid] = before;
      p.counts[tid] = total;
    }
  }
  if (tid == kExperts - 1) {
    offsets[kExperts] = before + padded;
    if (rank == 0) p.offsets[kExperts] = before + padded;
  }
  if (tid == 0 && rank == 0) *p.invalid = invalid_total;
  __syncthreads();

  // The padding rows (each run's tail past its pairs, every row past the padded total) and the
  // expert of every block (-1 past the total): a block of rows a warp, over the cluster's warps.
  // A block's expert is the last whose run starts at or before it: the count of such starts, all
  // compared at once (a ballot a 32 experts) rather than by a search of dependent steps.
  const int padded_total = offsets[kExperts];
  for (int b = rank * 32 + warp; b < p.capacity / p.block; b += ranks * 32) {
    const int first = b * p.block;
    int expert = -1, pad_from = first;
    if (first < padded_total) {
      int starts = 0;
#pragma unroll
      for (int e = lane; e < (kExperts + 31) / 32 * 32; e += 32)
        starts += __popc(__ballot_sync(0xffffffffu, e < kExperts && offsets[e] <= first));
      expert = starts - 1;
      pad_from = max(first, offsets[expert] + counts[expert]);
    }
    for (int r = pad_from + lane; r < first + p.block; r += 32)
      p.sorted[r] = p.pairs;
    if (lane == 0) p.block_expert[b] = expert;
  }

  // Each warp places its chunk.
  place(held, begin);
  for (int base = begin + 32 * kBatch; base < end; base += 32 * kBatch) {
    int ids[kBatch];
    load(ids, base);
    place(ids, base);
  }
  cluster_wait();  // no block leaves while a peer may still read its shared memory
}

}  // namespace kjit::moe

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
// blocks' experts are written by all, each piece of work independent of the others (a run's tail
// and its blocks' experts 8 threads, the rows past the padded total flat; 16-byte stores where
// sorted allows), so that few pairs (decode) cost a few memory latencies, not a chain of them a
// block of rows. kExperts up to 1024 (fewer counting warps a block above 256 experts, so that
// their counts fit 28 KB).
#pragma once

#include "common/cluster.cuh"
#include "moe/align_params.h"

namespace kjit::moe {

// One block an SM is asked for: ptxas otherwise aims at two and spills at 32 registers.
template <int kExperts>
__global__ void __launch_bounds__(1024, 1) moe_align(const KjitMoeAlignParams p) {
  static_assert(kExperts >= 1 && kExperts <= 1024, "experts");
  using namespace kjit::ptx;
  constexpr int kChunks = kExperts <= 256 ? 32 : 7168 / kExperts;  // counting warps a block
  constexpr int kBatch = 8;      // steps of 32 ids loaded at once: one memory latency for 256 pairs
  constexpr int kTailLanes = 8;  // threads a run's tail: 8 x 16 bytes, 32 rows a round
  // Each chunk's count of each expert, then the block's pairs of the expert before the chunk's next
  // (its next row in the run, past run_start).
  __shared__ int chunk_counts[kChunks][kExperts];
  __shared__ int block_counts[kExperts];  // this block's pairs of each expert, read by the peers
  __shared__ int counts[kExperts];
  __shared__ int first_block[kExperts + 1];  // each run's first block of rows; then the total
  __shared__ int run_start[kExperts];        // this block's first row in each expert's run
  __shared__ int warp_sums[32];
  __shared__ int invalid;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int rank = cluster_rank(), ranks = cluster_blocks();

  // This warp's chunk of pairs: chunk rank kChunks + warp of ranks kChunks, in batches of kBatch
  // steps of 32. Unsigned 32-bit (a division inline, not a 64-bit call on the first load's path):
  // the last chunks' bounds may pass 2^31 before they are clamped, never 2^32.
  const unsigned chunks = ranks * kChunks, pairs = p.pairs;
  const unsigned chunk = (pairs + chunks * 32 - 1) / (chunks * 32) * 32;
  const unsigned first_pair = warp < kChunks ? (rank * kChunks + warp) * chunk : pairs;
  const int begin = static_cast<int>(min(first_pair, pairs));
  const int end = static_cast<int>(min(begin + chunk, pairs));
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
  // From the chunk's starts on (the block's first row in each run plus the earlier chunks'
  // pairs), each step's pairs ranked among their expert's peers.
  auto place = [&](const int(&ids)[kBatch], int base) {
#pragma unroll
    for (int s = 0; s < kBatch; ++s) {
      const int e = ids[s];
      if (base + s * 32 < end) {  // the warp's last batch may be short
        const bool placed = e >= 0 && e < kExperts;
        const unsigned peers = __match_any_sync(0xffffffffu, placed ? e : -1);
        if (placed) {
          p.sorted[run_start[e] + chunk_counts[warp][e] + __popc(peers & ((1u << lane) - 1))] =
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

  // Exclusive scan of the runs' blocks of rows (one expert a thread, kExperts <= 1024): the
  // layout in blocks, rows = blocks x block, so that nothing after divides by the block.
  const int blocks = tid < kExperts ? (total + p.block - 1) / p.block : 0;
  int inclusive = blocks;
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
  const int before = (warp > 0 ? warp_sums[warp - 1] : 0) + inclusive - blocks;
  if (tid < kExperts) {
    first_block[tid] = before;
    run_start[tid] = before * p.block + earlier;
    if (rank == 0) {
      p.offsets[tid] = before * p.block;
      p.counts[tid] = total;
    }
  }
  if (tid == kExperts - 1) {
    first_block[kExperts] = before + blocks;
    if (rank == 0) p.offsets[kExperts] = (before + blocks) * p.block;
  }
  if (tid == 0 && rank == 0) *p.invalid = invalid_total;
  __syncthreads();

  // The padding rows and the blocks' experts, over the cluster's threads, none waiting on
  // another's result: kTailLanes threads a run, for its tail (past its pairs, within its last
  // block) and its blocks' experts; every thread for the rows and blocks past the padded total.
  // 16-byte stores of 4 rows where sorted allows (16-byte aligned, blocks of a multiple of 4 rows,
  // so that the runs' last blocks start on a store); the rows of the pairs are never written here.
  const int padded_blocks = first_block[kExperts];
  // The cluster's threads interleaved a warp at a time over the blocks, so that a few hundred
  // stores spread over all the blocks' SMs, each warp's 32 still adjacent.
  const int cluster_thread = (warp * ranks + rank) * 32 + lane, cluster_threads = ranks * 1024;
  const bool wide = reinterpret_cast<unsigned long long>(p.sorted) % 16 == 0 && p.block % 4 == 0;
  // Rows [from, to) (to a multiple of 4 if wide), from the first-th store on, every step-th.
  const auto pad = [&](int from, int to, int first, int step) {
    if (wide) {
      for (int g = from / 4 + first; g < to / 4; g += step) {
        if (4 * g >= from) {
          reinterpret_cast<int4*>(p.sorted)[g] = make_int4(p.pairs, p.pairs, p.pairs, p.pairs);
        } else {
          for (int r = from; r < 4 * g + 4; ++r)  // the store that also holds pairs: the rest
            p.sorted[r] = p.pairs;
        }
      }
    } else {
      for (int r = from + first; r < to; r += step)
        p.sorted[r] = p.pairs;
    }
  };
  for (int i = cluster_thread; i < kExperts * kTailLanes; i += cluster_threads) {  // 4 runs a warp
    const int e = i / kTailLanes, sub = i % kTailLanes;
    const int run = first_block[e], run_end = first_block[e + 1];
    if (run == run_end) continue;  // no pairs (decode: most experts)
    pad(run * p.block + counts[e], run_end * p.block, sub, kTailLanes);
    for (int b = run + sub; b < run_end; b += kTailLanes)
      p.block_expert[b] = e;
  }
  pad(padded_blocks * p.block, p.blocks * p.block, cluster_thread, cluster_threads);
  for (int b = padded_blocks + cluster_thread; b < p.blocks; b += cluster_threads)
    p.block_expert[b] = -1;

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

// Attention backward on Hopper's warpgroup MMA (sm_90a): flash_backward.cuh's algorithm (one
// block per key tile and key/value head; K and V resident; every query tile of every query head
// of the group streamed past them; dK and dV summed in registers; dQ added into an fp32
// accumulator) with wgmma GEMMs and copy-engine loads. Two warpgroups:
//  - Split keys (head dim <= 128): 128 keys a block, 64 per warpgroup. Each warpgroup computes
//    S^T = K Q^T and dP^T = V dO^T for its keys (the accumulator rows are keys), turns them into
//    P^T and dS^T in registers, and feeds those as the register A operand of dV += P^T dO and
//    dK += dS^T Q: P and dS never touch shared memory for dK and dV.
//  - Split roles (head dim 256, where a warpgroup cannot hold both 64 x 256 dK and dV): 64 keys a
//    block; warpgroup 0 computes S^T, P^T and dV, and hands P^T (fp32) through shared memory to
//    warpgroup 1, which computes dP^T, dS^T and dK.
// dS^T goes to shared memory (double-buffered) and dQ = dS K reads it MN-major, in 64 x 64 blocks
// shared out between the warpgroups, each added into dq_accum with vector reductions.
// Loads: thread 0 arms an mbarrier per stage and issues the tensor copies of Q and dO (64-column
// boxes, 128-byte swizzled: the layout the wgmma descriptors read) and bulk copies of the rows'
// lse2 and dsum. A stage is refilled kStages query tiles ahead as soon as every warpgroup is past
// its dV and dK GEMMs (the block-wide barrier each tile has anyway before dQ reads dS), so no
// producer warp and no empty barriers are needed and both warpgroups keep the full register file.
#pragma once

#include "attention/flash_backward.cuh"
#include "common/mbarrier.cuh"
#include "common/named_barrier.cuh"
#include "common/tma.cuh"
#include "common/wgmma.cuh"

namespace kjit::attention {

template <int kHeadDim_, int kBlockM_, int kStages_>
struct BackwardSm90Shape {
  static constexpr int kHeadDim = kHeadDim_, kBlockM = kBlockM_, kStages = kStages_;
  static constexpr bool kSplitKeys = kHeadDim <= 128;
  static constexpr int kBlockN = kSplitKeys ? 128 : 64;
  static constexpr int kThreads = 256;
  static constexpr int kSlab = 64;  // columns of a 128-byte swizzled row of 16-bit elements
  static constexpr int kSlabs = kHeadDim / kSlab;
  static constexpr int kQueryTiles = kBlockM / 8;   // n8 column tiles of S^T
  static constexpr int kQuerySteps = kBlockM / 16;  // k16 steps of dV and dK
  static constexpr int kStatsLen = kBlockM + 4;     // floats of a stats copy (16-byte aligned run)
  static constexpr int kKVElems = kBlockN * kHeadDim, kQElems = kBlockM * kHeadDim;
  static constexpr int kDsElems = kBlockN * kBlockM;
  static constexpr int kPElems = kSplitKeys ? 0 : kDsElems;  // fp32 P^T, handed between roles
  // dQ in 64 x 64 blocks (query slab, head-dim slab).
  static constexpr int kDqBlocks = kBlockM / kSlab * kSlabs;
  // Byte offsets in the (1024-byte aligned) shared memory; elements are 2 bytes.
  static constexpr int kOffK = 0, kOffV = kOffK + 2 * kKVElems, kOffQ = kOffV + 2 * kKVElems;
  static constexpr int kOffDout = kOffQ + kStages * 2 * kQElems;
  static constexpr int kOffDs = kOffDout + kStages * 2 * kQElems;
  static constexpr int kOffP = kOffDs + 2 * 2 * kDsElems;
  static constexpr int kOffStats = kOffP + 4 * kPElems;
  static constexpr int kOffBarriers = kOffStats + kStages * 2 * kStatsLen * 4;
  static constexpr int kBytes = kOffBarriers + (kStages + 1) * 8;
  static constexpr unsigned kKVBytes = 2 * 2 * kKVElems;
  static constexpr unsigned kStageBytes = 2 * 2 * kQElems + 2 * kStatsLen * 4;
  static_assert((kHeadDim == 64 || kHeadDim == 128 || kHeadDim == 256) && kBlockM % 64 == 0 &&
                    kBlockM <= 128 && kStages >= 2,
                "flash_backward_sm90 tile shape");
};

// The block's shared memory: K, V; per stage Q, dO and the rows' stats; two dS^T buffers (and,
// split roles, the P^T handover).
template <class T, class Shape>
struct BackwardSm90Tiles {
  T *k, *v, *q, *dout, *ds;
  float* handover;
  float* stats;               // [stage][lse2 | dsum][kStatsLen]
  cuda::std::uint64_t* full;  // [stage]: that stage's Q, dO and stats have landed
  cuda::std::uint64_t* kv;    // K and V have landed

  __device__ explicit BackwardSm90Tiles(unsigned char* raw) {
    unsigned char* base = ptx::swizzle_aligned(raw);
    k = reinterpret_cast<T*>(base + Shape::kOffK);
    v = reinterpret_cast<T*>(base + Shape::kOffV);
    q = reinterpret_cast<T*>(base + Shape::kOffQ);
    dout = reinterpret_cast<T*>(base + Shape::kOffDout);
    ds = reinterpret_cast<T*>(base + Shape::kOffDs);
    handover = reinterpret_cast<float*>(base + Shape::kOffP);
    stats = reinterpret_cast<float*>(base + Shape::kOffStats);
    full = reinterpret_cast<cuda::std::uint64_t*>(base + Shape::kOffBarriers);
    kv = full + Shape::kStages;
  }
  __device__ T* q_at(int stage) const { return q + stage * Shape::kQElems; }
  __device__ T* dout_at(int stage) const { return dout + stage * Shape::kQElems; }
  __device__ float* lse2_at(int stage) const { return stats + stage * 2 * Shape::kStatsLen; }
  __device__ float* dsum_at(int stage) const { return lse2_at(stage) + Shape::kStatsLen; }
};

// A stats copy starts at the 16-byte boundary at or below the tile's first row's cell; the row
// is `skip` floats into it.
__device__ __forceinline__ int stats_skip(long long cell) {
  return static_cast<int>(cell & 3);
}

// The block's query tiles over every group: steps t = 0, 1, ... walk group 0's tiles (head by
// head, BackwardSteps' tiles each), then group 1's, and so on. Built once per block in shared
// memory, where every thread looks its steps up.
template <int kGroups>
struct BlockSteps {
  BackwardSequence seq[kGroups];
  BackwardSteps steps[kGroups];
  int first[kGroups + 1];  // group g's steps are [first[g], first[g + 1])
};
template <class Params>
constexpr int kGroupsOf = 1;
template <>
constexpr int kGroupsOf<KjitGroupedBackwardParams> = KJIT_MAX_ATTENTION_GROUPS;

struct Step {
  int group, head, row0;
};
template <int kGroups>
__device__ __forceinline__ Step locate(const BlockSteps<kGroups>& b, int t, int kv_head, int heads,
                                       int block_m) {
  int g = 0;
  while (t >= b.first[g + 1])
    ++g;
  const BackwardSteps& s = b.steps[g];
  const int u = t - b.first[g];
  return {g, kv_head * heads + u / s.m_count, (s.m_first + u % s.m_count) * block_m};
}

// Thread 0's loads of step t into its stage: Q and dO tiles and the rows' lse2 and dsum.
template <class T, class Shape, class Params>
__device__ __forceinline__ void issue_query_tile(const Params& params,
                                                 const BlockSteps<kGroupsOf<Params>>& table,
                                                 const BackwardSm90Tiles<T, Shape>& tiles,
                                                 int batch, int kv_head, int t) {
  const int stage = t % Shape::kStages;
  const Step step = locate(table, t, kv_head, group_params(params, 0).group, Shape::kBlockM);
  const KjitFlashBackwardParams& p = group_params(params, step.group);
  const BackwardSequence& seq = table.seq[step.group];
  const int row = seq.q_start + step.row0, tma_batch = p.cu_seqlens_q ? 0 : batch;
  cuda::std::uint64_t* bar = tiles.full + stage;
  ptx::mbarrier_arrive_expect_tx(bar, Shape::kStageBytes);
#pragma unroll
  for (int slab = 0; slab < Shape::kSlabs; ++slab) {
    const int at = slab * Shape::kBlockM * Shape::kSlab;
    ptx::tma_load_4d(tiles.q_at(stage) + at, p.tma_q, bar, slab * Shape::kSlab, row, step.head,
                     tma_batch);
    ptx::tma_load_4d(tiles.dout_at(stage) + at, p.tma_dout, bar, slab * Shape::kSlab, row,
                     step.head, tma_batch);
  }
  const long long cell = stats_cell(p, seq, batch, step.head, step.row0);
  const long long first = cell - stats_skip(cell);
  ptx::bulk_load(tiles.lse2_at(stage), p.lse2 + first, Shape::kStatsLen * 4, bar);
  ptx::bulk_load(tiles.dsum_at(stage), p.dsum + first, Shape::kStatsLen * 4, bar);
}

// Thread 0's loads of the block's K and V tiles.
template <class T, class Shape>
__device__ __forceinline__ void issue_key_tile(const KjitFlashBackwardParams& p,
                                               const BackwardSm90Tiles<T, Shape>& tiles,
                                               const BackwardSequence& seq, int batch, int kv_head,
                                               int key0) {
  const int row = seq.k_start + key0, tma_batch = p.cu_seqlens_k ? 0 : batch;
  ptx::mbarrier_arrive_expect_tx(tiles.kv, Shape::kKVBytes);
#pragma unroll
  for (int slab = 0; slab < Shape::kSlabs; ++slab) {
    const int at = slab * Shape::kBlockN * Shape::kSlab;
    ptx::tma_load_4d(tiles.k + at, p.tma_k, tiles.kv, slab * Shape::kSlab, row, kv_head, tma_batch);
    ptx::tma_load_4d(tiles.v + at, p.tma_v, tiles.kv, slab * Shape::kSlab, row, kv_head, tma_batch);
  }
}

// acc (64 x N) = A B^T over the head dim: A's 64 rows start at row `a_row` of a tile of `a_rows`
// rows, B is a whole tile of N rows, both K-major with the head dim along K.
template <class T, int kHeadDim, int kN>
__device__ __forceinline__ void gemm_over_head_dim(float (&acc)[kN / 8][4], const T* a, int a_rows,
                                                   int a_row, const T* b) {
#pragma unroll
  for (int kk = 0; kk < kHeadDim / 16; ++kk) {
    const int slab = kk / 4, col = kk % 4 * 16;
    ptx::wgmma_ss<T, kN>(acc, ptx::swizzled_descriptor(a + (slab * a_rows + a_row) * 64 + col),
                         ptx::swizzled_descriptor(b + slab * kN * 64 + col), kk > 0);
  }
}

// acc[slab] (64 x kHeadDim) += A B: A (64 x kBlockM) as register fragments, B a tile of kBlockM
// rows read N-major, one 64-column slab of the head dim per instruction.
template <class T, int kSlabs, int kSteps>
__device__ __forceinline__ void gemm_over_queries(float (&acc)[kSlabs][8][4],
                                                  const unsigned (&a)[kSteps][4], const T* b) {
#pragma unroll
  for (int kk = 0; kk < kSteps; ++kk) {
#pragma unroll
    for (int slab = 0; slab < kSlabs; ++slab) {
      ptx::wgmma_rs<T, 64, 8, true>(
          acc[slab], a[kk], ptx::swizzled_descriptor(b + (slab * kSteps + kk) * 16 * 64), 1);
    }
  }
}

// P^T = exp2(S^T scale_log2 - lse2) in place of S^T (rows: keys key.., columns: the tile's
// queries from query0). With kMask, keys outside the window (the sequence), queries past the
// sequence and, when causal, keys after query + diagonal give 0.
template <bool kMask, bool kCausal, int kTiles>
__device__ __forceinline__ void probabilities(float (&s)[kTiles][4], const float* lse2,
                                              float scale_log2, int key, int query0,
                                              const BackwardSequence& seq) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int c = 8 * j + 2 * (lane % 4) + e % 2;
      const float prob = exp2_flush(fmaf(s[j][e], scale_log2, -lse2[c]));
      if constexpr (kMask) {
        const int k = key + 8 * (e / 2), q = query0 + c;
        const bool visible = k >= seq.key_begin && k < seq.key_end && q < seq.seqlen_q &&
                             (!kCausal || k <= q + seq.diagonal);
        s[j][e] = visible ? prob : 0.f;
      } else {
        s[j][e] = prob;
      }
    }
  }
}

// dS^T = P^T (dP^T - dsum) in place of dP^T.
template <int kTiles>
__device__ __forceinline__ void score_gradients(const float (&p)[kTiles][4], float (&dp)[kTiles][4],
                                                const float* dsum) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e)
      dp[j][e] = p[j][e] * (dp[j][e] - dsum[8 * j + 2 * (lane % 4) + e % 2]);
  }
}

// The fp32 tile rounded to T as wgmma's register A fragments, one per k16 step.
template <class T, int kTiles>
__device__ __forceinline__ void fragments_of(const float (&acc)[kTiles][4],
                                             unsigned (&a)[kTiles / 2][4]) {
#pragma unroll
  for (int kk = 0; kk < kTiles / 2; ++kk)
    probability_fragment<T>(acc, kk, a[kk]);
}

// Fragments of a 64-key tile (the warp's 16 rows from warp_key of the block, the tile's query
// columns) into a swizzled kBlockN-row buffer of 64-query slabs.
template <class T, int kBlockN, int kSteps>
__device__ __forceinline__ void store_fragments(T* tile, const unsigned (&a)[kSteps][4],
                                                int warp_key) {
  const int lane = threadIdx.x % 32;
  const int r = warp_key + lane / 4;
#pragma unroll
  for (int kk = 0; kk < kSteps; ++kk) {
    const int c = 16 * kk + 2 * (lane % 4);
    *reinterpret_cast<unsigned*>(tile + ptx::swizzled_offset<T, kBlockN>(r, c)) = a[kk][0];
    *reinterpret_cast<unsigned*>(tile + ptx::swizzled_offset<T, kBlockN>(r + 8, c)) = a[kk][1];
    *reinterpret_cast<unsigned*>(tile + ptx::swizzled_offset<T, kBlockN>(r, c + 8)) = a[kk][2];
    *reinterpret_cast<unsigned*>(tile + ptx::swizzled_offset<T, kBlockN>(r + 8, c + 8)) = a[kk][3];
  }
}

// Split roles' P^T handover: an fp32 64 x kCols tile (rows: keys, columns: queries) in the mma C
// layout's float2 pairs, their columns XOR-swizzled by the row so that each half warp's four
// rows hit distinct banks.
template <int kCols>
__device__ __forceinline__ int handover_offset(int row, int col) {
  return row * kCols + 2 * ((col / 2) ^ (4 * (row % 4)));
}
// kGive: the fp32 tile into the handover; else back out of it.
template <int kCols, bool kGive, int kTiles>
__device__ __forceinline__ void handover(float* tile, float (&acc)[kTiles][4], int warp_key) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float2* at = reinterpret_cast<float2*>(
          tile + handover_offset<kCols>(warp_key + lane / 4 + 8 * h, 8 * j + 2 * (lane % 4)));
      if constexpr (kGive) {
        *at = make_float2(acc[j][2 * h], acc[j][2 * h + 1]);
      } else {
        const float2 v = *at;
        acc[j][2 * h] = v.x;
        acc[j][2 * h + 1] = v.y;
      }
    }
  }
}

// Issues (and commits) dQ block `block` (64 queries x 64 head-dim columns) = dS K over the
// block's keys.
template <class T, class Shape>
__device__ __forceinline__ void issue_dq_block(float (&dq)[8][4], const T* ds, const T* k,
                                               int block) {
  constexpr int kBlockN = Shape::kBlockN, kSlab = Shape::kSlab;
  const int query_slab = block / Shape::kSlabs, dim_slab = block % Shape::kSlabs;
  ptx::wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < kBlockN / 16; ++kk) {
    ptx::wgmma_ss_mn_major<T>(
        dq, ptx::swizzled_descriptor(ds + (query_slab * kBlockN + 16 * kk) * kSlab),
        ptx::swizzled_descriptor(k + (dim_slab * kBlockN + 16 * kk) * kSlab), kk > 0);
  }
  ptx::wgmma_commit();
}

// Adds a finished dQ block into dq_accum (rows past the sequence skipped).
template <class Shape>
__device__ __forceinline__ void add_dq_block(const KjitFlashBackwardParams& p,
                                             const BackwardSequence& seq, float (&dq)[8][4],
                                             int batch, int head, int row0, int block) {
  constexpr int kSlab = Shape::kSlab;
  const int query_slab = block / Shape::kSlabs, dim_slab = block % Shape::kSlabs;
  ptx::fence_operand(dq);
  const int warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = row0 + query_slab * kSlab + 16 * warp + lane / 4 + 8 * h;
    if (r >= seq.seqlen_q) continue;
    float* acc = p.dq_accum + batch * p.acc_batch_stride +
                 ((seq.q_start + r) * static_cast<long long>(p.heads_q) + head) * Shape::kHeadDim +
                 dim_slab * kSlab + 2 * (lane % 4);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(acc + 8 * j), "f"(dq[j][2 * h]),
                   "f"(dq[j][2 * h + 1])
                   : "memory");
    }
  }
}

// The thread's rows of a 64 x kHeadDim dK or dV accumulator (rows: keys key_row..) times
// `scale`, in T; keys past the sequence are not written.
template <class T, int kSlabs>
__device__ __forceinline__ void store_key_rows(const KjitAttentionTensor& out,
                                               const float (&acc)[kSlabs][8][4],
                                               const BackwardSequence& seq, int batch, int kv_head,
                                               int key, float scale) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    if (key + 8 * h >= seq.seqlen_k) continue;
    T* row = token_row<T>(out, batch, seq.k_start + key + 8 * h, kv_head) + 2 * (lane % 4);
#pragma unroll
    for (int slab = 0; slab < kSlabs; ++slab) {
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        *reinterpret_cast<unsigned*>(row + slab * 64 + 8 * j) =
            ptx::pack_pair<T>(acc[slab][j][2 * h] * scale, acc[slab][j][2 * h + 1] * scale);
      }
    }
  }
}

// The main loop of one warpgroup over the block's query tiles, and its dK / dV stores. kP: it
// computes S^T, P^T and dV; kDs: dP^T, dS^T and dK (split keys: both; split roles: one each, P^T
// handed from the first to the second through shared memory, single-buffered: the step barrier
// keeps the next step's P^T from overwriting it before it is taken).
template <class T, class S, bool kCausal, bool kAtomicDq, bool kP, bool kDs, class Params>
__device__ __forceinline__ void backward_main_loop(const Params& params,
                                                   const BlockSteps<kGroupsOf<Params>>& table,
                                                   const BackwardSm90Tiles<T, S>& tiles,
                                                   const BackwardSequence& keys, int steps,
                                                   int batch, int kv_head, int key0) {
  constexpr int kBlockM = S::kBlockM, kBlockN = S::kBlockN, kSlabs = S::kSlabs;
  constexpr int kPReady = 1, kStepDone = 2;                    // named barriers
  const KjitFlashBackwardParams& p = group_params(params, 0);  // keys, heads, scales
  const int warpgroup = threadIdx.x / 128, warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
  // Split keys: this warpgroup's 64 keys; split roles: both see the block's 64.
  const int wg_key = S::kSplitKeys ? 64 * warpgroup : 0;
  const int my_key = wg_key + 16 * warp + lane / 4;  // within the block; and my_key + 8
  const bool issuer = threadIdx.x == 0;
  float dv[kP ? kSlabs : 1][8][4] = {}, dk[kDs ? kSlabs : 1][8][4] = {};
  if (steps > 0) ptx::mbarrier_wait(tiles.kv, 0);

  for (int t = 0; t < steps; ++t) {
    const int stage = t % S::kStages;
    const Step step = locate(table, t, kv_head, p.group, kBlockM);
    const KjitFlashBackwardParams& pg = group_params(params, step.group);
    const BackwardSequence& seq = table.seq[step.group];
    const int head = step.head, row0 = step.row0;
    const T* q = tiles.q_at(stage);
    const T* dout = tiles.dout_at(stage);
    ptx::mbarrier_wait(tiles.full + stage, (t / S::kStages) & 1);

    float s[S::kQueryTiles][4], dp[S::kQueryTiles][4];
    ptx::wgmma_fence();
    if constexpr (kP) {
      gemm_over_head_dim<T, S::kHeadDim, kBlockM>(s, tiles.k, kBlockN, wg_key, q);
      ptx::wgmma_commit();
    }
    if constexpr (kDs) {
      gemm_over_head_dim<T, S::kHeadDim, kBlockM>(dp, tiles.v, kBlockN, wg_key, dout);
      ptx::wgmma_commit();
    }

    // P^T (under the dP^T GEMM), then dS^T.
    const int skip = stats_skip(stats_cell(pg, seq, batch, head, row0));
    unsigned pt[S::kQuerySteps][4], dst[S::kQuerySteps][4];
    if constexpr (kP) {
      ptx::wgmma_wait<kDs ? 1 : 0>();
      ptx::fence_operand(s);
      const int key = key0 + my_key;
      const bool mask = row0 + kBlockM > seq.seqlen_q || key0 + kBlockN > seq.key_end ||
                        key0 < seq.key_begin ||
                        (kCausal && key0 + wg_key + 63 > row0 + seq.diagonal);
      const float* lse2 = tiles.lse2_at(stage) + skip;
      if (mask) {
        probabilities<true, kCausal>(s, lse2, p.scale_log2, key, row0, seq);
      } else {
        probabilities<false, kCausal>(s, lse2, p.scale_log2, key, row0, seq);
      }
      if constexpr (!kDs) {
        handover<kBlockM, true>(tiles.handover, s, 16 * warp);
        ptx::named_barrier_arrive(kPReady, S::kThreads);
      }
      fragments_of<T>(s, pt);
    }
    if constexpr (kDs) {
      ptx::wgmma_wait<0>();
      ptx::fence_operand(dp);
      const float* dsum = tiles.dsum_at(stage) + skip;
      if constexpr (!kP) {
        ptx::named_barrier_sync(kPReady, S::kThreads);
        handover<kBlockM, false>(tiles.handover, s, 16 * warp);
      }
      score_gradients(s, dp, dsum);
      fragments_of<T>(dp, dst);
    }

    // dS^T to shared memory for dQ; dV += P^T dO, dK += dS^T Q.
    T* ds = tiles.ds + (t & 1) * S::kDsElems;
    if constexpr (kAtomicDq && kDs) store_fragments<T, kBlockN>(ds, dst, wg_key + 16 * warp);
    ptx::wgmma_fence();
    if constexpr (kP) gemm_over_queries<T>(dv, pt, dout);
    if constexpr (kDs) gemm_over_queries<T>(dk, dst, q);
    ptx::wgmma_commit();
    ptx::wgmma_wait<0>();
#pragma unroll
    for (int slab = 0; slab < kSlabs; ++slab) {
      if constexpr (kP) ptx::fence_operand(dv[slab]);
      if constexpr (kDs) ptx::fence_operand(dk[slab]);
    }
    if constexpr (kP) ptx::fence_operand(pt);
    if constexpr (kDs) ptx::fence_operand(dst);
    if constexpr (kAtomicDq) ptx::fence_proxy_async_shared();
    // Every warpgroup is past this stage's GEMMs and stats, and dS^T is complete.
    ptx::named_barrier_sync(kStepDone, S::kThreads);
    if (issuer && t + S::kStages < steps)
      issue_query_tile(params, table, tiles, batch, kv_head, t + S::kStages);

    if constexpr (kAtomicDq) {
      // The dQ blocks alternate between the warpgroups (from step to step when there is one).
      for (int block = (warpgroup + t) % 2; block < S::kDqBlocks; block += 2) {
        float dq[8][4];
        issue_dq_block<T, S>(dq, ds, tiles.k, block);
        ptx::wgmma_wait<0>();
        add_dq_block<S>(pg, seq, dq, batch, head, row0, block);
      }
    }
  }

  const int key = key0 + my_key;
  if constexpr (kDs) store_key_rows<T>(p.dk, dk, keys, batch, kv_head, key, p.scale);
  if constexpr (kP) store_key_rows<T>(p.dv, dv, keys, batch, kv_head, key, 1.f);
}

// Params: KjitFlashBackwardParams, or KjitGroupedBackwardParams; kHeadsFirst: key_tile_and_head's
// order for grids of a few waves (the launch chooses it by the grid).
template <class T, int kHeadDim, int kBlockM, int kStages, bool kCausal, bool kAtomicDq,
          class Params = KjitFlashBackwardParams, bool kHeadsFirst = false>
__global__ void __launch_bounds__(256, 1)
    flash_backward_sm90(const __grid_constant__ Params params) {
  using S = BackwardSm90Shape<kHeadDim, kBlockM, kStages>;
  extern __shared__ unsigned char shared_raw[];
  const BackwardSm90Tiles<T, S> tiles(shared_raw);
  // The launch sizes shared memory from its own copy of this layout (FlashBackward::
  // shared_bytes): a mismatch stops here rather than overrunning.
  unsigned dynamic_bytes;
  asm("mov.u32 %0, %%dynamic_smem_size;\n" : "=r"(dynamic_bytes));
  if (dynamic_bytes < S::kBytes + ptx::kSwizzleAtomBytes) __trap();

  const KjitFlashBackwardParams& p = group_params(params, 0);  // keys, heads, scales
  const int2 tile = key_tile_and_head<kHeadsFirst>();
  const int kv_head = tile.y, batch = blockIdx.z, groups = group_count(params);
  const BackwardSequence keys(p, batch);
  const int key0 = tile.x * S::kBlockN;
  if (key0 >= keys.seqlen_k) return;
  __shared__ BlockSteps<kGroupsOf<Params>> table;
  if (threadIdx.x < groups) {
    const BackwardSequence seq(group_params(params, threadIdx.x), batch);
    table.seq[threadIdx.x] = seq;
    table.steps[threadIdx.x] = BackwardSteps(seq, key0, S::kBlockN, p.group, kBlockM, kCausal);
  }
  const bool issuer = threadIdx.x == 0;
  if (issuer) {
    for (int s = 0; s <= kStages; ++s)
      ptx::mbarrier_init(tiles.full + s, 1);  // tiles.kv is full + kStages
    ptx::fence_mbarrier_init();
  }
  __syncthreads();
  if (issuer) {
    table.first[0] = 0;
    for (int g = 0; g < groups; ++g)
      table.first[g + 1] = table.first[g] + table.steps[g].count;
  }
  __syncthreads();
  const int steps = table.first[groups];
  if (issuer && steps > 0) {
    for (int g = 0; g < groups; ++g) {
      ptx::prefetch_tensor_map(group_params(params, g).tma_q);
      ptx::prefetch_tensor_map(group_params(params, g).tma_dout);
    }
    ptx::prefetch_tensor_map(p.tma_k);
    ptx::prefetch_tensor_map(p.tma_v);
    issue_key_tile(p, tiles, keys, batch, kv_head, key0);
    for (int t = 0; t < kStages && t < steps; ++t)
      issue_query_tile(params, table, tiles, batch, kv_head, t);
  }

  if constexpr (S::kSplitKeys) {
    backward_main_loop<T, S, kCausal, kAtomicDq, true, true>(params, table, tiles, keys, steps,
                                                             batch, kv_head, key0);
  } else if (threadIdx.x < 128) {
    backward_main_loop<T, S, kCausal, kAtomicDq, true, false>(params, table, tiles, keys, steps,
                                                              batch, kv_head, key0);
  } else {
    backward_main_loop<T, S, kCausal, kAtomicDq, false, true>(params, table, tiles, keys, steps,
                                                              batch, kv_head, key0);
  }
}

}  // namespace kjit::attention

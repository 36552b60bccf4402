// Attention backward, FlashAttention-2 style, on mma.sync m16n8k16 (sm_80+), eight warps a block:
//  - flash_backward_prep: per query row, dsum = rowsum(dO * O) and the LSE in log2 units (fp32,
//    into the workspace); zeroes dq_accum.
//  - flash_backward: one block per (key tile, key/value head, sequence), in key_tile_and_head's
//    order. K and V stay in shared memory while the block walks every query tile, of every query
//    head of its group (and of every group), that sees them; dK and dV (summed over the group:
//    GQA) accumulate in registers and are written once. Per query tile: S = Q K^T, P = exp2(S
//    scale_log2 - LSE log2 e), dP = dO V^T, dS = P (dP - dsum); P and dS go to shared memory as T;
//    dV += P^T dO, dK += dS^T Q, and, with kAtomicDq, dq_accum += dS K with fp32 atomics.
//  - flash_backward_dq (the other dq strategy, and the deterministic mode's): one block per
//    query tile walks its key tiles and keeps dQ in registers: bitwise reproducible, for the
//    price of recomputing S and dP (measured faster than the atomics above hd 64).
//  - flash_backward_dq_store: dq = dq_accum * scale in T.
// Rows that see no key (LSE = -inf) and rows past a sequence's end take LSE = +inf, which makes
// P = 0 and so every gradient they feed 0, never NaN. flash_backward_sm90.cuh holds the wgmma
// main loop that replaces flash_backward on sm_90a; the other kernels serve both.
#pragma once

#include "attention/flash_backward_params.h"
#include "attention/online_softmax.cuh"
#include "common/warp_gemm.cuh"

namespace kjit::attention {

// Tile geometry: Q, dO (kBlockM rows), K, V (kBlockN rows), padded rows against bank conflicts;
// P and dS [kBlockM][kBlockN + 8]; each GEMM spreads its output over the eight warps, 16 rows
// each: S and dP over (queries x keys), dK and dV over (keys x head dim), dQ over (queries x
// head dim, in chunks of at most 64 columns to bound registers).
template <int kHeadDim_, int kBlockM_, int kBlockN_>
struct BackwardShape {
  static constexpr int kHeadDim = kHeadDim_, kBlockM = kBlockM_, kBlockN = kBlockN_;
  static constexpr int kThreads = 256, kWarps = 8;
  static constexpr int kRow = kHeadDim + 8, kPRow = kBlockN + 8;
  static constexpr int kSWarpsM = kBlockM / 16 < kWarps ? kBlockM / 16 : kWarps;
  static constexpr int kSWarpsN = kWarps / kSWarpsM;
  static constexpr int kSTiles = kBlockN / (8 * kSWarpsN);
  static constexpr int kKvWarpsN = kBlockN / 16 < kWarps ? kBlockN / 16 : kWarps;
  static constexpr int kKvWarpsD = kWarps / kKvWarpsN;
  static constexpr int kKvTiles = kHeadDim / (8 * kKvWarpsD);
  static constexpr int kQWarpsM = kSWarpsM, kQWarpsD = kWarps / kQWarpsM;
  static constexpr int kQCols = kHeadDim / kQWarpsD;
  static constexpr int kQChunk = kQCols % 64 == 0 ? 64 : kQCols % 32 == 0 ? 32 : kQCols;
  static constexpr int kTileElems = (2 * kBlockM + 2 * kBlockN) * kRow + 2 * kBlockM * kPRow;
  static_assert(kSWarpsM * kSWarpsN == kWarps && kKvWarpsN * kKvWarpsD == kWarps,
                "block_m and block_n must split over eight warps");
  static_assert(kSTiles % 2 == 0 && kKvTiles % 2 == 0 && (kQChunk / 8) % 2 == 0 &&
                    kQCols % kQChunk == 0,
                "warp tiles are pairs of n8 tiles");
};

// The shared-memory tiles both main loops use (flash_backward_dq leaves P unused).
template <class T, class Shape>
struct BackwardTiles {
  T *q, *dout, *k, *v, *p, *ds;
  float *lse2, *dsum;  // per query row of the tile
  __device__ explicit BackwardTiles(unsigned char* raw) {
    q = reinterpret_cast<T*>(raw);
    dout = q + Shape::kBlockM * Shape::kRow;
    k = dout + Shape::kBlockM * Shape::kRow;
    v = k + Shape::kBlockN * Shape::kRow;
    p = v + Shape::kBlockN * Shape::kRow;
    ds = p + Shape::kBlockM * Shape::kPRow;
    lse2 = reinterpret_cast<float*>(ds + Shape::kBlockM * Shape::kPRow);
    dsum = lse2 + Shape::kBlockM;
  }
};

// A sequence's bounds: batched, or packed through cu_seqlens; with windows (grouped calls), the
// keys [key_begin, key_end) of the sequence its queries see. Trivially constructible, so that a
// grouped block's table of them can live in shared memory.
struct BackwardSequence {
  int q_start, k_start;
  int seqlen_q, seqlen_k;  // seqlen_k: all the sequence's keys (dK and dV rows)
  int key_begin, key_end;
  int diagonal;  // bottom-right causal alignment to the window: row r sees keys <= r + diagonal

  BackwardSequence() = default;
  __device__ BackwardSequence(const KjitFlashBackwardParams& p, int batch)
      : q_start(0), k_start(0), seqlen_q(p.seqlen_q), seqlen_k(p.seqlen_k) {
    if (p.cu_seqlens_q) {
      q_start = p.cu_seqlens_q[batch];
      seqlen_q = p.cu_seqlens_q[batch + 1] - q_start;
      k_start = p.cu_seqlens_k[batch];
      seqlen_k = p.cu_seqlens_k[batch + 1] - k_start;
    }
    key_begin = p.windows_k ? p.windows_k[2 * batch] : 0;
    key_end = p.windows_k ? p.windows_k[2 * batch + 1] : seqlen_k;
    diagonal = key_end - seqlen_q;
  }
};

// The query tiles of one query group that see a key tile [key0, key0 + block_n): tiles m_first..
// of every query head of the key/value head (GQA: `heads` of them), count in all.
struct BackwardSteps {
  int m_first, m_count, count;
  BackwardSteps() = default;
  __device__ BackwardSteps(const BackwardSequence& seq, int key0, int block_n, int heads,
                           int block_m, bool causal) {
    const int first_key = max(key0, seq.key_begin);
    const bool meets = first_key < min(key0 + block_n, seq.key_end);
    // The first query tile whose last row sees first_key (bottom-right causal).
    m_first = causal ? max(0, first_key - seq.diagonal) / block_m : 0;
    m_count = meets ? max(0, (seq.seqlen_q + block_m - 1) / block_m - m_first) : 0;
    count = heads * m_count;
  }
};

// Scores of keys before the window's first (grouped calls) masked like those past its end.
template <int kKeyTiles>
__device__ __forceinline__ void mask_keys_before(float (&s)[kKeyTiles][4], int first_key,
                                                 int key_begin) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < kKeyTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (first_key + j * 8 + (lane % 4) * 2 + (e & 1) < key_begin) s[j][e] = negative_infinity();
    }
  }
}

// The parameters of query group g: a plain call is its only group.
__device__ __forceinline__ const KjitFlashBackwardParams& group_params(
    const KjitFlashBackwardParams& p, int) {
  return p;
}
__device__ __forceinline__ int group_count(const KjitFlashBackwardParams&) {
  return 1;
}
__device__ __forceinline__ const KjitFlashBackwardParams& group_params(
    const KjitGroupedBackwardParams& p, int g) {
  return p.group[g];
}
__device__ __forceinline__ int group_count(const KjitGroupedBackwardParams& p) {
  return p.groups;
}
// The block's key tile and key/value head over the (key tile, head, sequence) grid. Key tiles
// fastest: the blocks in flight share a key/value head, so its query heads' Q and dO stay in L2.
// A launch of a few waves takes heads fastest instead (kHeadsFirst): the first key tiles of every
// head, which the most queries see under causal masking and prefix windows, start first,
// where key tiles fastest leaves the last head's longest blocks running alone at the end.
template <bool kHeadsFirst>
__device__ __forceinline__ int2 key_tile_and_head() {
  if constexpr (!kHeadsFirst) return make_int2(blockIdx.x, blockIdx.y);
  const unsigned block = blockIdx.x + blockIdx.y * gridDim.x;
  return make_int2(block / gridDim.y, block % gridDim.y);
}

// Row `row` (a token index: the sequence's start plus the row within it) of `head`.
template <class T>
__device__ __forceinline__ T* token_row(const KjitAttentionTensor& t, int batch, long long row,
                                        int head) {
  return static_cast<T*>(t.data) + batch * t.batch_stride + row * t.row_stride +
         static_cast<long long>(head) * t.head_stride;
}

// rows x kHeadDim from global (row stride `stride`) into shared (row stride kRow) with
// cp.async; rows at or past `valid` are zero-filled.
template <class T, int kHeadDim, int kRow, int kThreads>
__device__ __forceinline__ void load_rows(T* dst, const T* src, long long stride, int rows,
                                          int valid) {
  constexpr int kChunks = kHeadDim / 8;
  for (int c = threadIdx.x; c < rows * kChunks; c += kThreads) {
    const int r = c / kChunks, col = (c % kChunks) * 8;
    const bool ok = r < valid;
    ptx::cp_async_16(dst + r * kRow + col, src + (ok ? r : 0) * stride + col, ok);
  }
}

// Index of a query row's cell in lse2 and dsum.
__device__ __forceinline__ long long stats_cell(const KjitFlashBackwardParams& p,
                                                const BackwardSequence& seq, int batch, int head,
                                                int row) {
  return batch * p.stats_batch_stride + head * p.stats_head_stride + seq.q_start + row;
}

// The log2-domain LSE and dsum of a query tile's rows into shared memory (+inf and 0 for rows
// past the end).
__device__ __forceinline__ void load_row_stats(const KjitFlashBackwardParams& p,
                                               const BackwardSequence& seq, int batch, int head,
                                               int row0, int rows, float* lse2, float* dsum) {
  for (int i = threadIdx.x; i < rows; i += blockDim.x) {
    const int r = row0 + i;
    const bool inside = r < seq.seqlen_q;
    const long long at = stats_cell(p, seq, batch, head, r);
    lse2[i] = inside ? p.lse2[at] : -negative_infinity();
    dsum[i] = inside ? p.dsum[at] : 0.f;
  }
}

// K and V rows [key0, key0 + block_n) of `kv_head` into the tiles (cp.async, not committed).
template <class T, class Shape>
__device__ __forceinline__ void load_key_tile(const BackwardTiles<T, Shape>& t,
                                              const KjitFlashBackwardParams& p,
                                              const BackwardSequence& seq, int batch, int kv_head,
                                              int key0) {
  const long long at = seq.k_start + key0;
  load_rows<T, Shape::kHeadDim, Shape::kRow, Shape::kThreads>(
      t.k, token_row<const T>(p.k, batch, at, kv_head), p.k.row_stride, Shape::kBlockN,
      seq.seqlen_k - key0);
  load_rows<T, Shape::kHeadDim, Shape::kRow, Shape::kThreads>(
      t.v, token_row<const T>(p.v, batch, at, kv_head), p.v.row_stride, Shape::kBlockN,
      seq.seqlen_k - key0);
}

// Q and dO rows [row0, row0 + block_m) of `head` (cp.async, not committed) and their row stats.
template <class T, class Shape>
__device__ __forceinline__ void load_query_tile(const BackwardTiles<T, Shape>& t,
                                                const KjitFlashBackwardParams& p,
                                                const BackwardSequence& seq, int batch, int head,
                                                int row0) {
  const long long at = seq.q_start + row0;
  load_rows<T, Shape::kHeadDim, Shape::kRow, Shape::kThreads>(
      t.q, token_row<const T>(p.q, batch, at, head), p.q.row_stride, Shape::kBlockM,
      seq.seqlen_q - row0);
  load_rows<T, Shape::kHeadDim, Shape::kRow, Shape::kThreads>(
      t.dout, token_row<const T>(p.dout, batch, at, head), p.dout.row_stride, Shape::kBlockM,
      seq.seqlen_q - row0);
  load_row_stats(p, seq, batch, head, row0, Shape::kBlockM, t.lse2, t.dsum);
}

// The warp's tile of S = Q K^T and dP = dO V^T, turned into P and dS = P (dP - dsum) in place.
template <class T, class Shape, bool kCausal, int kHeadDim>
__device__ __forceinline__ void probabilities_and_ds(
    float (&s)[1][Shape::kSTiles][4], float (&dp)[1][Shape::kSTiles][4], const T* sq, const T* sdo,
    const T* sk, const T* sv, const float* lse2, const float* dsum, int m0, int n0, int row0,
    int key0, const BackwardSequence& seq, float scale_log2) {
  constexpr int kRow = Shape::kRow;
  ptx::warp_gemm<T, 1, Shape::kSTiles, kHeadDim, false, false>(s, sq, kRow, m0, sk, kRow, n0);
  ptx::warp_gemm<T, 1, Shape::kSTiles, kHeadDim, false, false>(dp, sdo, kRow, m0, sv, kRow, n0);
  const int lane = threadIdx.x % 32;
  mask_scores<kCausal>(s[0], key0 + n0, row0 + m0 + lane / 4, seq.key_end, seq.diagonal);
  if (key0 + n0 < seq.key_begin) mask_keys_before(s[0], key0 + n0, seq.key_begin);
#pragma unroll
  for (int j = 0; j < Shape::kSTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = m0 + lane / 4 + (e >= 2 ? 8 : 0);
      const float prob = exp2_flush(s[0][j][e] * scale_log2 - lse2[r]);
      s[0][j][e] = prob;
      dp[0][j][e] = prob * (dp[0][j][e] - dsum[r]);
    }
  }
}

template <class T, int kHeadDim>
__global__ void __launch_bounds__(256) flash_backward_prep(const KjitFlashBackwardParams p) {
  const int head = blockIdx.y, batch = blockIdx.z;
  const BackwardSequence seq(p, batch);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (blockIdx.x == 0 && head == 0 && batch == 0) {
    for (int i = threadIdx.x; i < KJIT_BACKWARD_STATS_SLACK; i += blockDim.x)
      p.lse2[p.stats_cells + i] = p.dsum[p.stats_cells + i] = 0.f;
  }
  for (int i = 0; i < 8; ++i) {
    const int r = blockIdx.x * 64 + warp * 8 + i;
    if (r >= seq.seqlen_q) break;
    const long long at = seq.q_start + r;
    const T* o = token_row<const T>(p.out, batch, at, head);
    const T* d_o = token_row<const T>(p.dout, batch, at, head);
    float sum = 0.f;
    for (int c = lane; c < kHeadDim; c += 32)
      sum += static_cast<float>(o[c]) * static_cast<float>(d_o[c]);
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2)
      sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0) {
      // A row that saw no key (lse -inf) takes +inf: P = exp2(s - inf) = 0, never NaN.
      const float lse = p.lse[batch * p.lse_batch_stride + head * p.lse_head_stride + at];
      const long long cell = stats_cell(p, seq, batch, head, r);
      p.lse2[cell] = lse == negative_infinity() ? -negative_infinity() : lse * 1.4426950408889634f;
      p.dsum[cell] = sum;
    }
    if (p.dq_accum) {
      float* acc = p.dq_accum + batch * p.acc_batch_stride +
                   (at * p.heads_q + head) * static_cast<long long>(kHeadDim);
      for (int c = lane; c < kHeadDim; c += 32)
        acc[c] = 0.f;
    }
  }
}

// Params: KjitFlashBackwardParams, or KjitGroupedBackwardParams (the query tiles of every group
// that sees the block's keys, group after group).
template <class T, int kHeadDim, int kBlockM, int kBlockN, bool kCausal, bool kAtomicDq,
          class Params = KjitFlashBackwardParams, bool kHeadsFirst = false>
__global__ void __launch_bounds__(256, 1) flash_backward(const __grid_constant__ Params params) {
  const KjitFlashBackwardParams& p = group_params(params, 0);  // keys, heads, scales: everyone's
  using S = BackwardShape<kHeadDim, kBlockM, kBlockN>;
  constexpr int kRow = S::kRow, kPRow = S::kPRow;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const BackwardTiles<T, S> tiles(shared_raw);
  T *sq = tiles.q, *sdo = tiles.dout, *sk = tiles.k, *sv = tiles.v, *sp = tiles.p, *sds = tiles.ds;
  float *lse2 = tiles.lse2, *dsum = tiles.dsum;

  const int2 tile = key_tile_and_head<kHeadsFirst>();
  const int kv_head = tile.y, batch = blockIdx.z;
  const BackwardSequence keys(p, batch);
  const int key0 = tile.x * kBlockN;
  if (key0 >= keys.seqlen_k) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  load_key_tile(tiles, p, keys, batch, kv_head, key0);

  const int s_m0 = warp / S::kSWarpsN * 16, s_n0 = warp % S::kSWarpsN * S::kSTiles * 8;
  const int kv_n0 = warp / S::kKvWarpsD * 16, kv_d0 = warp % S::kKvWarpsD * S::kKvTiles * 8;
  const int q_m0 = warp / S::kQWarpsD * 16, q_d0 = warp % S::kQWarpsD * S::kQCols;
  float dk[1][S::kKvTiles][4] = {}, dv[1][S::kKvTiles][4] = {};

  for (int group = 0; group < group_count(params); ++group) {
    const KjitFlashBackwardParams& pg = group_params(params, group);
    const BackwardSequence seq(pg, batch);
    const BackwardSteps steps(seq, key0, kBlockN, p.group, kBlockM, kCausal);
    for (int t = 0; t < steps.count; ++t) {
      const int head = kv_head * p.group + t / steps.m_count;
      const int row0 = (steps.m_first + t % steps.m_count) * kBlockM;
      __syncthreads();  // the previous tile is done with Q, dO, P, dS and the row stats
      load_query_tile(tiles, pg, seq, batch, head, row0);
      ptx::cp_async_commit();
      ptx::cp_async_wait<0>();
      __syncthreads();

      float s[1][S::kSTiles][4] = {}, ds[1][S::kSTiles][4] = {};
      probabilities_and_ds<T, S, kCausal, kHeadDim>(s, ds, sq, sdo, sk, sv, lse2, dsum, s_m0, s_n0,
                                                    row0, key0, seq, p.scale_log2);
      ptx::store_tile<T>(s, sp, kPRow, s_m0, s_n0);
      ptx::store_tile<T>(ds, sds, kPRow, s_m0, s_n0);
      __syncthreads();

      // dV += P^T dO and dK += dS^T Q: keys are the rows, so P and dS are read transposed.
      ptx::warp_gemm<T, 1, S::kKvTiles, kBlockM, true, true>(dv, sp, kPRow, kv_n0, sdo, kRow,
                                                             kv_d0);
      ptx::warp_gemm<T, 1, S::kKvTiles, kBlockM, true, true>(dk, sds, kPRow, kv_n0, sq, kRow,
                                                             kv_d0);
      if constexpr (kAtomicDq) {
#pragma unroll 1
        for (int c0 = 0; c0 < S::kQCols; c0 += S::kQChunk) {
          float dq[1][S::kQChunk / 8][4] = {};
          ptx::warp_gemm<T, 1, S::kQChunk / 8, kBlockN, false, true>(dq, sds, kPRow, q_m0, sk, kRow,
                                                                     q_d0 + c0);
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int r = row0 + q_m0 + lane / 4 + 8 * h;
            if (r >= seq.seqlen_q) continue;
            float* acc = pg.dq_accum + batch * pg.acc_batch_stride +
                         ((seq.q_start + r) * static_cast<long long>(p.heads_q) + head) * kHeadDim +
                         q_d0 + c0 + 2 * (lane % 4);
#pragma unroll
            for (int j = 0; j < S::kQChunk / 8; ++j) {
              atomicAdd(acc + 8 * j, dq[0][j][2 * h]);
              atomicAdd(acc + 8 * j + 1, dq[0][j][2 * h + 1]);
            }
          }
        }
      }
    }
  }

  ptx::cp_async_wait<0>();  // K and V may still be landing when no query tile saw them

  // dK = scale dS^T Q; rows past the sequence end are not written.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int key = key0 + kv_n0 + lane / 4 + 8 * h;
    if (key >= keys.seqlen_k) continue;
    T* out_k = token_row<T>(p.dk, batch, keys.k_start + key, kv_head) + kv_d0 + 2 * (lane % 4);
    T* out_v = token_row<T>(p.dv, batch, keys.k_start + key, kv_head) + kv_d0 + 2 * (lane % 4);
#pragma unroll
    for (int j = 0; j < S::kKvTiles; ++j) {
      *reinterpret_cast<unsigned*>(out_k + 8 * j) =
          ptx::pack_pair<T>(dk[0][j][2 * h] * p.scale, dk[0][j][2 * h + 1] * p.scale);
      *reinterpret_cast<unsigned*>(out_v + 8 * j) =
          ptx::pack_pair<T>(dv[0][j][2 * h], dv[0][j][2 * h + 1]);
    }
  }
}

template <class T, int kHeadDim, int kBlockM, int kBlockN, bool kCausal>
__global__ void __launch_bounds__(256, 1) flash_backward_dq(const KjitFlashBackwardParams p) {
  using S = BackwardShape<kHeadDim, kBlockM, kBlockN>;
  constexpr int kRow = S::kRow, kPRow = S::kPRow;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const BackwardTiles<T, S> tiles(shared_raw);
  T *sq = tiles.q, *sdo = tiles.dout, *sk = tiles.k, *sv = tiles.v, *sds = tiles.ds;
  float *lse2 = tiles.lse2, *dsum = tiles.dsum;

  const int head = blockIdx.y, batch = blockIdx.z;
  const BackwardSequence seq(p, batch);
  const int row0 = blockIdx.x * kBlockM;
  if (row0 >= seq.seqlen_q) return;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int kv_head = head / p.group;
  load_query_tile(tiles, p, seq, batch, head, row0);

  int key_blocks = (seq.seqlen_k + kBlockN - 1) / kBlockN;
  if (kCausal) {
    const int visible = min(seq.seqlen_k, row0 + kBlockM + seq.diagonal);
    key_blocks = visible <= 0 ? 0 : min(key_blocks, (visible + kBlockN - 1) / kBlockN);
  }
  const int s_m0 = warp / S::kSWarpsN * 16, s_n0 = warp % S::kSWarpsN * S::kSTiles * 8;
  const int q_m0 = warp / S::kQWarpsD * 16, q_d0 = warp % S::kQWarpsD * S::kQCols;
  float dq[1][S::kQCols / 8][4] = {};
  for (int n = 0; n < key_blocks; ++n) {
    const int key0 = n * kBlockN;
    __syncthreads();  // the previous key tile is done with K, V and dS
    load_key_tile(tiles, p, seq, batch, kv_head, key0);
    ptx::cp_async_commit();
    ptx::cp_async_wait<0>();
    __syncthreads();
    float s[1][S::kSTiles][4] = {}, ds[1][S::kSTiles][4] = {};
    probabilities_and_ds<T, S, kCausal, kHeadDim>(s, ds, sq, sdo, sk, sv, lse2, dsum, s_m0, s_n0,
                                                  row0, key0, seq, p.scale_log2);
    ptx::store_tile<T>(ds, sds, kPRow, s_m0, s_n0);
    __syncthreads();
    ptx::warp_gemm<T, 1, S::kQCols / 8, kBlockN, false, true>(dq, sds, kPRow, q_m0, sk, kRow, q_d0);
  }
  ptx::cp_async_wait<0>();  // Q and dO may still be landing when no key tile was visible
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = row0 + q_m0 + lane / 4 + 8 * h;
    if (r >= seq.seqlen_q) continue;
    T* out = token_row<T>(p.dq, batch, seq.q_start + r, head) + q_d0 + 2 * (lane % 4);
#pragma unroll
    for (int j = 0; j < S::kQCols / 8; ++j) {
      *reinterpret_cast<unsigned*>(out + 8 * j) =
          ptx::pack_pair<T>(dq[0][j][2 * h] * p.scale, dq[0][j][2 * h + 1] * p.scale);
    }
  }
}

template <class T, int kHeadDim>
__global__ void __launch_bounds__(256) flash_backward_dq_store(const KjitFlashBackwardParams p) {
  const int head = blockIdx.y, batch = blockIdx.z;
  const BackwardSequence seq(p, batch);
  constexpr int kPairs = kHeadDim / 2;
  for (int i = threadIdx.x; i < 64 * kPairs; i += 256) {
    const int r = blockIdx.x * 64 + i / kPairs, c = 2 * (i % kPairs);
    if (r >= seq.seqlen_q) break;
    const long long at = seq.q_start + r;
    const float* acc = p.dq_accum + batch * p.acc_batch_stride +
                       (at * p.heads_q + head) * static_cast<long long>(kHeadDim) + c;
    *reinterpret_cast<unsigned*>(token_row<T>(p.dq, batch, at, head) + c) =
        ptx::pack_pair<T>(acc[0] * p.scale, acc[1] * p.scale);
  }
}

}  // namespace kjit::attention

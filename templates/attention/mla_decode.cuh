// MLA decode (weight-absorbed: every query head attends one shared 576-column latent per cached
// token, V its first 512 columns) over a paged cache, on mma.sync m16n8k16 (sm_80+):
//  - mla_decode: one block per (run of a request's keys: mla_decode_plan.cuh's split, 64-row
//    tile of the request's s_q x H query rows). Rows are s_q-major (row = i H + h), so that query
//    i's causal limit, key
//    <= length - s_q + i, is per row. Eight warps: warp w owns rows 16 (w % 4).. and, of O's 512
//    columns, half w / 4, so that O (64 x 512 fp32) fits the register file (128 a thread). Per
//    tile of 32 keys, gathered through the block table with cp.async (two stages): each warp
//    computes S for its rows and its 16 of the 32 keys, the two warps of a row band exchange row
//    maxima and sums through shared memory (the online softmax of a row split across two warps),
//    P goes to shared memory as T, and each warp adds P V for its 256 columns.
// Split-KV partials are merged by mla_decode_combine.cuh.
// A row that sees no key gives O = 0 and LSE = -inf, never NaN (the empty-shard rule).
#pragma once

#include "attention/mla_decode_combine.cuh"
#include "attention/mla_decode_params.h"
#include "common/cp_async.cuh"
#include "common/numeric.cuh"
#include "common/warp_gemm.cuh"

namespace kjit::attention {

struct MlaShape {
  static constexpr int kRows = 64, kKeys = 32, kThreads = 256;
  static constexpr int kDim = 576, kLatent = 512, kChunks = kDim / 8;
  static constexpr int kRow = kDim + 8, kPRow = kKeys + 8;  // padded: no bank conflicts
  static constexpr int kQElems = kRows * kRow, kKElems = kKeys * kRow, kPElems = kRows * kPRow;
  // Q, two key stages, P (2-byte elements), then [2 halves][max, sum][kRows] floats.
  static constexpr int kBytes = (kQElems + 2 * kKElems + kPElems) * 2 + 2 * 2 * kRows * 4;
};

template <class T, int kBlockSize>
__global__ void __launch_bounds__(256, 1) mla_decode(const KjitMlaDecodeParams p) {
  using S = MlaShape;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  T* sq = reinterpret_cast<T*>(shared_raw);
  T* sk = sq + S::kQElems;                                   // [2 stages][kKeys][kRow]
  T* sp = sk + 2 * S::kKElems;                               // [kRows][kPRow]
  float* stats = reinterpret_cast<float*>(sp + S::kPElems);  // [half][max | sum][kRows]

  const MlaWork work = mla_block_work(p);  // (every warp finds the same)
  if (work.request < 0) return;
  const int row0 = work.row_tile * S::kRows, b = work.request;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int m0 = (warp % 4) * 16, half = warp / 4;
  const int rows = p.s_q * p.heads, length = work.length;
  const int key_begin = work.key_begin, key_end = work.key_end;
  const int tiles = key_end > key_begin ? (key_end - key_begin + S::kKeys - 1) / S::kKeys : 0;

  for (int c = threadIdx.x; c < S::kRows * S::kChunks; c += S::kThreads) {
    const int r = c / S::kChunks, col = (c % S::kChunks) * 8, row = row0 + r;
    const bool ok = row < rows;
    const int i = ok ? row / p.heads : 0, h = ok ? row % p.heads : 0;
    const T* src = static_cast<const T*>(p.q) + b * p.q_batch_stride + i * p.q_token_stride +
                   h * p.q_head_stride + col;
    ptx::cp_async_16(sq + r * S::kRow + col, src, ok);
  }
  const int* table = p.block_table + static_cast<long long>(b) * p.max_blocks;
  auto load_keys = [&](int key0, int stage) {
    for (int c = threadIdx.x; c < S::kKeys * S::kChunks; c += S::kThreads) {
      const int r = c / S::kChunks, col = (c % S::kChunks) * 8, t = key0 + r;
      const bool ok = t < key_end;
      const T* src = static_cast<const T*>(p.cache);
      if (ok) {
        src += table[t / kBlockSize] * p.cache_block_stride +
               (t % kBlockSize) * p.cache_row_stride + col;
      }
      ptx::cp_async_16(sk + stage * S::kKElems + r * S::kRow + col, src, ok);
    }
  };
  if (tiles > 0) load_keys(key_begin, 0);
  ptx::cp_async_commit();

  // The thread's rows: m0 + lane / 4 + 8 h. Running max (log2 domain) and sum.
  float o[1][32][4] = {};
  float row_max[2] = {negative_infinity(), negative_infinity()}, row_sum[2] = {0.f, 0.f};
  int last_key[2];  // causal: the last key each row sees
  for (int h = 0; h < 2; ++h) {
    const int row = row0 + m0 + lane / 4 + 8 * h;
    last_key[h] = row < rows ? length - p.s_q + row / p.heads : -1;
  }

  for (int t = 0; t < tiles; ++t) {
    const int stage = t & 1, key0 = key_begin + t * S::kKeys;
    ptx::cp_async_wait<0>();
    __syncthreads();  // tile t landed for everyone; stage ^ 1, P and the stats are free
    if (t + 1 < tiles) load_keys(key0 + S::kKeys, stage ^ 1);
    ptx::cp_async_commit();
    const T* keys = sk + stage * S::kKElems;

    float s[1][2][4] = {};
    ptx::warp_gemm<T, 1, 2, S::kDim, false, false>(s, sq, S::kRow, m0, keys, S::kRow, half * 16);
    float local_max[2] = {negative_infinity(), negative_infinity()};
#pragma unroll
    for (int j = 0; j < 2; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key0 + half * 16 + 8 * j + 2 * (lane % 4) + (e & 1), h = e / 2;
        const bool visible = key < key_end && key <= last_key[h];
        s[0][j][e] = visible ? s[0][j][e] * p.scale_log2 : negative_infinity();
        local_max[h] = fmaxf(local_max[h], s[0][j][e]);
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      local_max[h] = fmaxf(local_max[h], __shfl_xor_sync(0xffffffffu, local_max[h], 1));
      local_max[h] = fmaxf(local_max[h], __shfl_xor_sync(0xffffffffu, local_max[h], 2));
      if (lane % 4 == 0) stats[half * 2 * S::kRows + m0 + lane / 4 + 8 * h] = local_max[h];
    }
    __syncthreads();  // both halves' maxima

    float correction[2], local_sum[2] = {0.f, 0.f};
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = m0 + lane / 4 + 8 * h;
      const float tile_max = fmaxf(stats[r], stats[2 * S::kRows + r]);
      const float new_max = fmaxf(row_max[h], tile_max);
      // A row that has seen no key yet keeps max -inf: nothing to rescale, P = 0 (no NaN).
      correction[h] = new_max == negative_infinity() ? 1.f : exp2_flush(row_max[h] - new_max);
      row_max[h] = new_max;
    }
#pragma unroll
    for (int j = 0; j < 2; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e / 2;
        s[0][j][e] = row_max[h] == negative_infinity() ? 0.f : exp2_flush(s[0][j][e] - row_max[h]);
        local_sum[h] += s[0][j][e];
      }
    }
    ptx::store_tile<T>(s, sp, S::kPRow, m0, half * 16);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      local_sum[h] += __shfl_xor_sync(0xffffffffu, local_sum[h], 1);
      local_sum[h] += __shfl_xor_sync(0xffffffffu, local_sum[h], 2);
      if (lane % 4 == 0) stats[(half * 2 + 1) * S::kRows + m0 + lane / 4 + 8 * h] = local_sum[h];
    }
#pragma unroll
    for (int j = 0; j < 32; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e)
        o[0][j][e] *= correction[e / 2];
    }
    __syncthreads();  // P and both halves' sums
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = m0 + lane / 4 + 8 * h;
      row_sum[h] = row_sum[h] * correction[h] + stats[S::kRows + r] + stats[3 * S::kRows + r];
    }
    ptx::warp_gemm<T, 1, 32, S::kKeys, false, true>(o, sp, S::kPRow, m0, keys, S::kRow, half * 256);
  }
  ptx::cp_async_wait<0>();  // the tiles in flight when there were none to compute

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = row0 + m0 + lane / 4 + 8 * h;
    if (row >= rows) continue;
    const float inv = row_sum[h] > 0.f ? 1.f / row_sum[h] : 0.f;
    const float lse = row_sum[h] > 0.f ? (row_max[h] + log2f(row_sum[h])) * 0.6931471805599453f
                                       : negative_infinity();
    const int i = row / p.heads, head = row % p.heads;
    const int col0 = half * 256 + 2 * (lane % 4);
    if (work.pieces == 1) {
      T* out = static_cast<T*>(p.out) + b * p.o_batch_stride + i * p.o_token_stride +
               head * p.o_head_stride + col0;
#pragma unroll
      for (int j = 0; j < 32; ++j) {
        *reinterpret_cast<unsigned*>(out + 8 * j) =
            ptx::pack_pair<T>(o[0][j][2 * h] * inv, o[0][j][2 * h + 1] * inv);
      }
      if (p.lse && half == 0 && lane % 4 == 0)
        p.lse[b * p.lse_batch_stride + i * p.lse_token_stride + head * p.lse_head_stride] = lse;
    } else {
      const long long cell = work.slot * rows + row;
      float* out = p.partial_out + cell * S::kLatent + col0;
#pragma unroll
      for (int j = 0; j < 32; ++j)
        *reinterpret_cast<float2*>(out + 8 * j) =
            make_float2(o[0][j][2 * h] * inv, o[0][j][2 * h + 1] * inv);
      if (half == 0 && lane % 4 == 0) p.partial_lse[cell] = lse;
    }
  }
}

}  // namespace kjit::attention

// MLA decode on Hopper's warpgroup MMA (sm_90a): mla_decode.cuh's problem with 64-key tiles,
// wgmma and the copy engine. One block of two warpgroups per (run of a request's keys:
// mla_decode_plan.cuh's split, 64-row tile), one block per SM. Q (cp.async) and two stages of keys
// sit in 128-byte-swizzled shared memory, nine 64-column slabs of the 576; a key tile arrives as
// nine tensor copies per cache block through p.cache_map (the block id a coordinate), issued by one
// thread of warpgroup 1, which reads the block table a tile ahead (the first tile before the block
// loads Q), and completing on the stage's mbarrier.
//  - Warpgroup 0 computes S = Q K^T (m64n64, 36 k-steps), masks it, runs the online softmax (it
//    owns the rows' statistics; their max lags the scores by up to 2^kMaxSlack), hands P (rounded
//    to T) and the rows' rescale factors to warpgroup 1 through shared memory, and adds P V to
//    O's columns 0..255 with P in registers.
//  - Warpgroup 1 adds P V to columns 256..511 with P loaded from shared memory.
// Each rescales its O by the factors only in tiles where a row of the warp moved its max. P V is
// one m64n256k16 a 16-key step for each warpgroup's half.
// V is the first 512 columns of the key tile (N-major for the P V product). The rows of a tile
// past the split's end (the rest of the last block, or blocks never copied) are zeroed before
// use, so that their P = 0 never meets NaN. Rows as in mla_decode.cuh (s_q-major, causal limit
// per row); a row that sees no key gives O = 0 and LSE = -inf.
#pragma once

#include "attention/mla_decode_combine.cuh"
#include "attention/mla_decode_params.h"
#include "attention/online_softmax.cuh"
#include "common/grid_dependency.cuh"
#include "common/mbarrier.cuh"
#include "common/named_barrier.cuh"
#include "common/tma.cuh"
#include "common/wgmma.cuh"

namespace kjit::attention {

struct MlaSm90Shape {
  static constexpr int kRows = 64, kKeys = 64, kThreads = 256;
  static constexpr int kDim = 576, kLatent = 512, kSlabCols = 64, kChunks = kDim / 8;
  static constexpr int kSlabs = kDim / kSlabCols;            // 9 slabs of Q and of a key tile
  static constexpr int kOutSlabs = kLatent / kSlabCols / 2;  // O slabs per warpgroup
  static constexpr int kTileElems = kRows * kDim;            // Q, or one key stage
  static constexpr int kPElems = kRows * kKeys;              // one slab
  static constexpr int kProducer = 128;  // the thread that issues the key copies
  // How far (log2 units) the rows' running max may lag their scores (online_softmax): O's
  // rescale, 128 multiplies a thread in each warpgroup between S and P V, then runs only in the
  // tiles where a row's max jumps.
  static constexpr int kMaxSlack = 8;
  static_assert(kRows == kKeys, "Q and key tiles share a slab height");
};

template <class T, int kBlockSize>
__global__ void __launch_bounds__(256, 1)
    mla_decode_sm90(const __grid_constant__ KjitMlaDecodeParams p) {
  using S = MlaSm90Shape;
  extern __shared__ unsigned char shared_raw[];
  T* sq = reinterpret_cast<T*>(ptx::swizzle_aligned(shared_raw));
  T* sk = sq + S::kTileElems;      // [2 stages][9 slabs][kKeys][64]
  T* sp = sk + 2 * S::kTileElems;  // [kRows][kKeys]
  float* shared_correction = reinterpret_cast<float*>(sp + S::kPElems);  // [kRows] each
  float* shared_max = shared_correction + S::kRows;
  float* shared_sum = shared_max + S::kRows;
  auto* full = reinterpret_cast<cuda::std::uint64_t*>(shared_sum + S::kRows);  // [2 stages]

  // The combine (split-KV) may launch once every block here has started: it waits for the
  // partials, and its launch and block start run under this kernel's work.
  ptx::allow_dependent_launch();
  const MlaWork work = mla_block_work(p);  // (every warp finds the same)
  if (work.request < 0) return;
  const int row0 = work.row_tile * S::kRows, b = work.request;
  // The warpgroup as a warp-uniform value (a shuffle from lane 0): ptxas then knows the role
  // branches below do not diverge within a warp, and does not serialise their wgmma.
  const int warpgroup = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / 128, 0);
  const int warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
  const int rows = p.s_q * p.heads, length = work.length;
  const int key_begin = work.key_begin, key_end = work.key_end;
  const int tiles = key_end > key_begin ? (key_end - key_begin + S::kKeys - 1) / S::kKeys : 0;
  const int r0 = 16 * warp + lane / 4;  // the thread's rows of the tile: r0 and r0 + 8

  // The producer's block ids of the next tile to copy (-1: past the split's end), read a tile
  // ahead so that the table's latency is not on the copies' path.
  constexpr int kBlocksPerTile = S::kKeys / kBlockSize;
  static_assert(S::kKeys % kBlockSize == 0, "whole cache blocks per key tile");
  const int* table = p.block_table + static_cast<long long>(b) * p.max_blocks;
  int next_blocks[kBlocksPerTile];
  auto read_table = [&](int key0) {
#pragma unroll
    for (int k = 0; k < kBlocksPerTile; ++k) {
      const int first = key0 + k * kBlockSize;
      next_blocks[k] = first < key_end ? table[first / kBlockSize] : -1;
    }
  };
  // The keys under L2 evict-first, as FlashMLA loads them, so that what the call reads again (the
  // split partials that the combine reads back) stays in L2. On the H100 (2026-12-07, perf.md)
  // 1.02-1.13x on the rows with splits at L 1k-16k and at H 128 (whose two row tiles read the same
  // keys), 0.97-0.98x on some long rows at H 64.
  auto copy_keys = [&](int stage) {
    T* dst = sk + stage * S::kTileElems;
    const cuda::std::uint64_t policy = ptx::l2_evict_first();
    int copied = 0;
#pragma unroll
    for (int k = 0; k < kBlocksPerTile; ++k)
      copied += next_blocks[k] >= 0;
    ptx::mbarrier_arrive_expect_tx(full + stage, copied * S::kSlabs * kBlockSize * 128);
#pragma unroll
    for (int k = 0; k < kBlocksPerTile; ++k) {
      if (next_blocks[k] < 0) continue;
#pragma unroll
      for (int slab = 0; slab < S::kSlabs; ++slab) {
        ptx::tma_load_4d(dst + (slab * S::kKeys + k * kBlockSize) * S::kSlabCols, p.cache_map,
                         full + stage, slab * S::kSlabCols, 0, next_blocks[k], 0, policy);
      }
    }
  };
  // The producer starts the key stream first, the table's and the first copy's latency under
  // Q's load: it initialises the stages' barriers itself (the others wait on them only after the
  // block barrier below).
  if (threadIdx.x == S::kProducer) {
    ptx::mbarrier_init(full, 1);
    ptx::mbarrier_init(full + 1, 1);
    ptx::fence_mbarrier_init();
    if (tiles > 0) {
      ptx::prefetch_tensor_map(p.cache_map);
      read_table(key_begin);
      copy_keys(0);
      if (tiles > 1) read_table(key_begin + S::kKeys);
    }
  }

  // Q: warp w loads rows w, w + 8, ..., a row's token and head found once rather than per
  // 16-byte chunk (a division by the head count each); rows past the last are zero-filled.
  for (int r = threadIdx.x / 32; r < S::kRows; r += S::kThreads / 32) {
    const T* src = static_cast<const T*>(p.q) + b * p.q_batch_stride;
    const bool ok = row0 + r < rows;
    if (ok) src += (row0 + r) / p.heads * p.q_token_stride + (row0 + r) % p.heads * p.q_head_stride;
    for (int chunk = lane; chunk < S::kChunks; chunk += 32)
      ptx::cp_async_16(sq + ptx::swizzled_offset<T, S::kRows>(r, chunk * 8), src + chunk * 8, ok);
  }
  ptx::cp_async_commit();
  __syncthreads();  // the barriers' initialisation, before anyone waits on them

  ptx::cp_async_wait<0>();  // Q

  float o[S::kOutSlabs][8][4] = {};
  RowPairStats stats;  // warpgroup 0's
  stats.reset();
  int last_key[2];  // causal: the last key each of the thread's rows sees
  for (int h = 0; h < 2; ++h) {
    const int row = row0 + r0 + 8 * h;
    last_key[h] = row < rows ? length - p.s_q + row / p.heads : -1;
  }

  for (int t = 0; t < tiles; ++t) {
    const int stage = t & 1, key0 = key_begin + t * S::kKeys;
    T* keys = sk + stage * S::kTileElems;
    ptx::mbarrier_wait(full + stage, (t / 2) & 1);
    const int valid = key_end - key0;
    if (valid < S::kKeys) {  // the split's last tile: zero V's rows past its end
      for (int c = threadIdx.x; c < (S::kKeys - valid) * 2 * S::kOutSlabs * 8; c += S::kThreads) {
        const int r = valid + c / (2 * S::kOutSlabs * 8), col = c % (2 * S::kOutSlabs * 8) * 8;
        *reinterpret_cast<uint4*>(keys + ptx::swizzled_offset<T, S::kKeys>(r, col)) =
            make_uint4(0, 0, 0, 0);
      }
    }
    ptx::fence_proxy_async_shared();  // Q's cp.async and those zeros, to wgmma's reads
    __syncthreads();  // tile t ready for both warpgroups; stage ^ 1, P, factors free
    if (threadIdx.x == S::kProducer && t + 1 < tiles) {
      copy_keys(stage ^ 1);
      if (t + 2 < tiles) read_table(key0 + 2 * S::kKeys);
    }
    // O's half `half` += P V with P's k-step kk in `a`: one m64n256k16 over V's four slabs of
    // that half (N-major, slabs kKeys x 64 apart).
    auto add_values = [&](int half, int kk, const unsigned(&a)[4]) {
      const T* v = keys + (half * S::kOutSlabs * S::kKeys + kk * 16) * S::kSlabCols;
      ptx::wgmma_rs<T, S::kLatent / 2, S::kLatent / 16, true>(
          *reinterpret_cast<float(*)[S::kLatent / 16][4]>(&o),  // slabs in order
          a, ptx::n_major_descriptor(v, S::kKeys * S::kSlabCols * sizeof(T)), 1);
    };
    // Rescales O where a row of this warp moved its max (warp-uniform: most tiles skip it).
    auto rescale_where_moved = [&](const float(&correction)[2]) {
      if (__any_sync(0xffffffffu, correction[0] != 1.f || correction[1] != 1.f)) {
#pragma unroll
        for (int slab = 0; slab < S::kOutSlabs; ++slab)
          rescale_rows(o[slab], correction);
      }
    };

    if (warpgroup == 0) {
      float s[8][4];
      ptx::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < S::kDim / 16; ++kk) {
        const int slab = kk / 4, col = kk % 4 * 16;
        ptx::wgmma_ss<T, S::kKeys>(
            s, ptx::swizzled_descriptor(sq + slab * S::kRows * S::kSlabCols + col),
            ptx::swizzled_descriptor(keys + slab * S::kKeys * S::kSlabCols + col), kk > 0);
      }
      ptx::wgmma_commit();
      ptx::wgmma_wait<0>();
      if (key0 + S::kKeys > min(key_end, min(last_key[0], last_key[1]) + 1)) {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = key0 + 8 * j + 2 * (lane % 4) + (e & 1);
            if (key >= key_end || key > last_key[e / 2]) s[j][e] = negative_infinity();
          }
        }
      }
      float correction[2];
      online_softmax<8, S::kMaxSlack>(s, stats, p.scale_log2, correction);
      rescale_where_moved(correction);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          *reinterpret_cast<unsigned*>(
              sp + ptx::swizzled_offset<T, S::kRows>(r0 + 8 * h, 8 * j + 2 * (lane % 4))) =
              ptx::pack_pair<T>(s[j][2 * h], s[j][2 * h + 1]);
        }
      }
      if (lane % 4 == 0) {
        shared_correction[r0] = correction[0];
        shared_correction[r0 + 8] = correction[1];
      }
      // P and the factors, to warpgroup 1 (waiting there already: a sync costs no more than an
      // arrive).
      ptx::named_barrier_sync(1, S::kThreads);
      ptx::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < S::kKeys / 16; ++kk) {
        unsigned a[4];
        probability_fragment<T>(s, kk, a);
        add_values(0, kk, a);
      }
    } else {
      ptx::named_barrier_sync(1, S::kThreads);
      rescale_where_moved({shared_correction[r0], shared_correction[r0 + 8]});
      ptx::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < S::kKeys / 16; ++kk) {
        unsigned a[4];
        ptx::ldmatrix_x4(a, sp + ptx::swizzled_offset<T, S::kRows>(16 * warp + lane % 16,
                                                                   kk * 16 + lane / 16 * 8));
        add_values(1, kk, a);
      }
    }
    ptx::wgmma_commit();
    ptx::wgmma_wait<0>();  // this stage and P are read before the next tile's barrier
  }
  if (warpgroup == 0) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = stats.sum[h];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      if (lane % 4 == 0) {
        shared_max[r0 + 8 * h] = stats.max[h];
        shared_sum[r0 + 8 * h] = sum;
      }
    }
  }
  __syncthreads();  // the rows' statistics, to both warpgroups; the key stages free

  // A full tile's O in T (no split) is staged row-major in the key stages (rows padded 16 bytes,
  // so that a warp's fragment stores meet distinct banks), then written a warp per row in 16-byte
  // stores: the fragments' own 4-byte stores, every block's at once at the kernel's end, took up
  // to 10 % of a call at H 128 B 64-128. Partial rows (fp32: 8-byte stores fill whole sectors)
  // and tiles of a few rows (H 20) are written from the fragments, which staging slowed by 1-5 %.
  const bool staged = work.pieces == 1 && rows - row0 >= S::kRows;
  constexpr int kStagedRow = S::kLatent * 2 + 16;  // bytes
  unsigned char* stage = reinterpret_cast<unsigned char*>(sk);
  const auto out_row = [&](int row) {  // row (token-major over the heads) of this request's O
    return static_cast<T*>(p.out) + b * p.o_batch_stride + row / p.heads * p.o_token_stride +
           row % p.heads * p.o_head_stride;
  };
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = r0 + 8 * h, row = row0 + r;
    if (row >= rows) continue;
    const float sum = shared_sum[r];
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    const float lse =
        sum > 0.f ? (shared_max[r] + log2f(sum)) * 0.6931471805599453f : negative_infinity();
    const bool writes_lse = warpgroup == 0 && lane % 4 == 0;
    const int i = row / p.heads, head = row % p.heads;
    const int col0 = warpgroup * (S::kLatent / 2) + 2 * (lane % 4);
    if (work.pieces == 1) {
      T* out = (staged ? reinterpret_cast<T*>(stage + r * kStagedRow) : out_row(row)) + col0;
#pragma unroll
      for (int slab = 0; slab < S::kOutSlabs; ++slab) {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          *reinterpret_cast<unsigned*>(out + slab * S::kSlabCols + 8 * j) =
              ptx::pack_pair<T>(o[slab][j][2 * h] * inv, o[slab][j][2 * h + 1] * inv);
        }
      }
      if (p.lse && writes_lse)
        p.lse[b * p.lse_batch_stride + i * p.lse_token_stride + head * p.lse_head_stride] = lse;
    } else {
      const long long cell = work.slot * rows + row;
      float* out = p.partial_out + cell * S::kLatent + col0;
#pragma unroll
      for (int slab = 0; slab < S::kOutSlabs; ++slab) {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          *reinterpret_cast<float2*>(out + slab * S::kSlabCols + 8 * j) =
              make_float2(o[slab][j][2 * h] * inv, o[slab][j][2 * h + 1] * inv);
        }
      }
      if (writes_lse) p.partial_lse[cell] = lse;
    }
  }
  if (staged) {       // block-uniform
    __syncthreads();  // the staged rows, to every warp
    for (int r = threadIdx.x / 32; r < S::kRows; r += S::kThreads / 32) {
      auto* out = reinterpret_cast<uint4*>(out_row(row0 + r));
      const auto* in = reinterpret_cast<const uint4*>(stage + r * kStagedRow);
      for (int c = lane; c < S::kLatent / 8; c += 32)
        out[c] = in[c];
    }
  }
}

}  // namespace kjit::attention

// Attention forward, FlashAttention-2 style, on mma.sync m16n8k16 (sm_80+): one block per
// (kBlockM query rows, head, sequence); each warp owns 16 x kMTiles query rows. K and V tiles of
// kBlockN keys stream through two shared-memory stages with cp.async while the previous tile
// computes: S = Q K^T (fp32), masking (sequence end; causal, bottom-right aligned), online softmax
// in the log2 domain, O += P V with P rounded to the input type. Rows that see no key write O = 0
// and LSE = -inf. Packed varlen sequences come through cu_seqlens; GQA maps head h to h / group.
#pragma once

#include "attention/flash_tile.cuh"
#include "attention/online_softmax.cuh"
#include "common/mma.cuh"

namespace kjit::attention {

template <class T, int kHeadDim, int kBlockM, int kBlockN, int kMTiles, bool kCausal>
struct FlashShape {
  static constexpr int kWarpRows = 16 * kMTiles;  // query rows per warp
  static constexpr int kWarps = kBlockM / kWarpRows;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRow = kHeadDim + 8;  // padded shared row, in elements: no bank conflicts
  static constexpr int kQElems = kBlockM * kRow;
  static constexpr int kKVElems = kBlockN * kRow;
  static constexpr int kKeyTiles = kBlockN / 8;
  static constexpr int kDimTiles = kHeadDim / 8;
  static_assert(kBlockM % kWarpRows == 0 && kBlockN % 16 == 0 && kHeadDim % 16 == 0, "tile shape");
};

// kMTiles m16 tiles per warp: every K and V fragment loaded from shared memory feeds kMTiles
// MMAs, which halves shared-memory traffic per FLOP at kMTiles = 2. One block per SM at least:
// the accumulators need the full register budget (sm_80's default cap spilled hd 96).
// Params: KjitFlashParams, or KjitGroupedFlashParams for a grouped launch.
template <class T, int kHeadDim, int kBlockM, int kBlockN, int kMTiles, bool kCausal,
          class Params = KjitFlashParams>
__global__ void __launch_bounds__(kBlockM / (16 * kMTiles) * 32, 1)
    flash_forward(const __grid_constant__ Params params) {
  const BlockWork work = block_work(params);
  const KjitFlashParams& p = work.p;
  using S = FlashShape<T, kHeadDim, kBlockM, kBlockN, kMTiles, kCausal>;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  T* shared_q = reinterpret_cast<T*>(shared_raw);
  T* shared_k = shared_q + S::kQElems;       // [2][kBlockN][kRow]
  T* shared_v = shared_k + 2 * S::kKVElems;  // [2][kBlockN][kRow]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const FlashTile<T> tile(work, kBlockM);
  if (!tile.has_rows()) return;
  const int seqlen_k = tile.seqlen_k, row0 = tile.row0;
  const int key_blocks = tile.key_blocks(kBlockM, kBlockN, kCausal);

  // rows x kHeadDim from global (row stride `stride`) into shared; rows past `valid` are zeros.
  auto load_tile = [&](T* dst, const T* src, long long stride, int rows, int valid) {
    constexpr int kChunks = kHeadDim / 8;
    for (int c = threadIdx.x; c < rows * kChunks; c += S::kThreads) {
      const int r = c / kChunks, col = (c % kChunks) * 8;
      const bool ok = r < valid;
      ptx::cp_async_16(dst + r * S::kRow + col, src + (ok ? r : 0) * stride + col, ok);
    }
  };
  auto load_kv = [&](int block, int stage) {
    const int first = block * kBlockN;
    load_tile(shared_k + stage * S::kKVElems, tile.k + first * p.k_row_stride, p.k_row_stride,
              kBlockN, seqlen_k - first);
    load_tile(shared_v + stage * S::kKVElems, tile.v + first * p.v_row_stride, p.v_row_stride,
              kBlockN, seqlen_k - first);
  };
  load_tile(shared_q, tile.q, p.q_row_stride, kBlockM, tile.seqlen_q - row0);
  if (key_blocks > 0) load_kv(0, 0);
  ptx::cp_async_commit();

  float acc_o[kMTiles][S::kDimTiles][4] = {};
  RowPairStats stats[kMTiles];
#pragma unroll
  for (int m = 0; m < kMTiles; ++m)
    stats[m].reset();
  const int warp_row = warp * S::kWarpRows;       // within the block
  const int my_row = row0 + warp_row + lane / 4;  // rows my_row + 16 m + 8 h

  for (int block = 0; block < key_blocks; ++block) {
    const int stage = block & 1;
    ptx::cp_async_wait<0>();
    __syncthreads();  // tile `block` landed for everyone; stage^1 is free again
    if (block + 1 < key_blocks) load_kv(block + 1, stage ^ 1);
    ptx::cp_async_commit();

    float acc_s[kMTiles][S::kKeyTiles][4] = {};
    const T* tile_k = shared_k + stage * S::kKVElems;
#pragma unroll
    for (int kk = 0; kk < kHeadDim; kk += 16) {
      unsigned a[kMTiles][4];
#pragma unroll
      for (int m = 0; m < kMTiles; ++m) {
        ptx::ldmatrix_x4(
            a[m], shared_q + (warp_row + m * 16 + lane % 16) * S::kRow + kk + (lane / 16) * 8);
      }
#pragma unroll
      for (int j = 0; j < S::kKeyTiles; j += 2) {
        unsigned t[4];
        ptx::ldmatrix_x4(
            t, tile_k + (j * 8 + lane % 8 + (lane / 16) * 8) * S::kRow + kk + ((lane / 8) % 2) * 8);
        const unsigned b0[2] = {t[0], t[1]}, b1[2] = {t[2], t[3]};
#pragma unroll
        for (int m = 0; m < kMTiles; ++m) {
          ptx::mma_m16n8k16<T>(acc_s[m][j], a[m], b0);
          ptx::mma_m16n8k16<T>(acc_s[m][j + 1], a[m], b1);
        }
      }
    }

    // Per-element masks on every block: skipping them on blocks that need none measured slower
    // for causal (2026-11-25, docs/perf.md), so the simple form stays until a profile says why.
#pragma unroll
    for (int m = 0; m < kMTiles; ++m) {
      mask_scores<kCausal>(acc_s[m], block * kBlockN, my_row + m * 16, seqlen_k, tile.diagonal);
      float correction[2];
      online_softmax(acc_s[m], stats[m], p.scale_log2, correction);
      rescale_rows(acc_o[m], correction);
    }

    const T* tile_v = shared_v + stage * S::kKVElems;
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      unsigned a[kMTiles][4];
#pragma unroll
      for (int m = 0; m < kMTiles; ++m)
        probability_fragment<T>(acc_s[m], kk, a[m]);
#pragma unroll
      for (int d = 0; d < S::kDimTiles; d += 2) {
        unsigned t[4];
        ptx::ldmatrix_x4_trans(t, tile_v + (kk * 16 + lane % 8 + ((lane / 8) % 2) * 8) * S::kRow +
                                      d * 8 + (lane / 16) * 8);
        const unsigned b0[2] = {t[0], t[1]}, b1[2] = {t[2], t[3]};
#pragma unroll
        for (int m = 0; m < kMTiles; ++m) {
          ptx::mma_m16n8k16<T>(acc_o[m][d], a[m], b0);
          ptx::mma_m16n8k16<T>(acc_o[m][d + 1], a[m], b1);
        }
      }
    }
  }

#pragma unroll
  for (int m = 0; m < kMTiles; ++m) {
    const int row = my_row + m * 16;
    store_rows<T>(acc_o[m], stats[m], tile.o + static_cast<long long>(row - row0) * p.o_row_stride,
                  p.o_row_stride, tile.lse_row(p, row), tile.seqlen_q - row);
  }
}

}  // namespace kjit::attention

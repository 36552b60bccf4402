// Attention forward on Hopper's warpgroup MMA (sm_90a): the flash_forward.cuh algorithm with a
// wgmma main loop. One block per (64 x kWarpGroups query rows, head, sequence); each warpgroup
// owns 64 rows. Q, and K/V tiles of kBlockN keys in two cp.async stages, sit in 128-byte-swizzled
// shared memory; S = Q K^T reads both from there (m64 x kBlockN x 16 steps), and O += P V takes
// P from registers (the S accumulators rounded to T) and V N-major, the whole head dim (its
// 64-column slabs) per instruction. Masking, online softmax and the epilogue are
// online_softmax.cuh's.
#pragma once

#include "attention/flash_tile.cuh"
#include "attention/online_softmax.cuh"
#include "common/wgmma.cuh"

namespace kjit::attention {

template <int kHeadDim_, int kBlockN_, int kWarpGroups>
struct FlashSm90Shape {
  static constexpr int kHeadDim = kHeadDim_, kBlockN = kBlockN_;
  static constexpr int kBlockM = 64 * kWarpGroups;
  static constexpr int kThreads = 128 * kWarpGroups;
  static constexpr int kSlabCols = 64;  // one 128-byte swizzled row of 16-bit elements
  static constexpr int kSlabs = kHeadDim / kSlabCols;
  static constexpr int kQElems = kBlockM * kHeadDim;
  static constexpr int kKVElems = kBlockN * kHeadDim;
  static constexpr int kKeyTiles = kBlockN / 8;
  // Key tiles: multiples of 16 (P V takes 16 keys a step) from 64 to 176; wgmma_ss takes the
  // widths of S the loops use (64, 80, 112, 128, 176).
  static_assert(kHeadDim % kSlabCols == 0 && kBlockN % 16 == 0 && kBlockN >= 64 && kBlockN <= 176,
                "tile shape");
};

// The steps of one key tile that both sm_90a main loops take, for the warpgroup's 64 rows (its
// first, warpgroup_row, within the tile; the caller fences, commits and waits).

// S = Q K^T: Q and the K tile in swizzled shared memory.
template <class T, class S>
__device__ __forceinline__ void issue_scores(float (&acc_s)[S::kKeyTiles][4], const T* shared_q,
                                             int warpgroup_row, const T* tile_k) {
#pragma unroll
  for (int kk = 0; kk < S::kHeadDim / 16; ++kk) {
    const int slab = kk / 4, col = kk % 4 * 16;  // 16 columns of K per step
    ptx::wgmma_ss<T, S::kBlockN>(
        acc_s,
        ptx::swizzled_descriptor(shared_q + (slab * S::kBlockM + warpgroup_row) * S::kSlabCols +
                                 col),
        ptx::swizzled_descriptor(tile_k + slab * S::kKVElems / S::kSlabs + col), kk > 0);
  }
}

// O += P V: `fragment(kk, a)` gives P's A operand for keys 16 kk .. 16 kk + 15; one wgmma over
// the whole head dim a step.
template <class T, class S, class Fragment>
__device__ __forceinline__ void issue_values(float (&acc_o)[S::kSlabs][8][4], const T* tile_v,
                                             Fragment fragment) {
  // V's slabs lie kKVElems / kSlabs apart; one slab keeps the atom stride it always had (the
  // instruction does not read the field then).
  constexpr unsigned kSlabBytes =
      S::kSlabs == 1 ? ptx::kSwizzleAtomBytes : S::kKVElems / S::kSlabs * sizeof(T);
#pragma unroll
  for (int kk = 0; kk < S::kBlockN / 16; ++kk) {
    unsigned a[4];
    fragment(kk, a);
    ptx::wgmma_rs<T, S::kHeadDim, S::kHeadDim / 8, true>(
        *reinterpret_cast<float(*)[S::kHeadDim / 8][4]>(&acc_o),  // slabs in order
        a, ptx::n_major_descriptor(tile_v + kk * 16 * S::kSlabCols, kSlabBytes), 1);
  }
}

// Masks the scores of the key tile at first_key where it needs it (only tiles that cross the
// sequence end or, when causal, the diagonal of this warp's rows) and folds them into the
// statistics as probabilities; `correction` is the factor O must be rescaled by before their P V.
// O is not touched: the overlap loops (92, 93) run this while the previous P V still writes it.
template <bool kCausal, class S, class T>
__device__ __forceinline__ void softmax_step(float (&acc_s)[S::kKeyTiles][4], RowPairStats& stats,
                                             const FlashTile<T>& tile, int first_key, int warp_row,
                                             int my_row, float scale_log2, float (&correction)[2]) {
  const bool crosses_end = first_key + S::kBlockN > tile.seqlen_k;
  const bool crosses_diagonal = kCausal && first_key + S::kBlockN - 1 > warp_row + tile.diagonal;
  if (crosses_end || crosses_diagonal)
    mask_scores<kCausal>(acc_s, first_key, my_row, tile.seqlen_k, tile.diagonal);
  online_softmax(acc_s, stats, scale_log2, correction);
}

template <class S>
__device__ __forceinline__ void rescale_output(float (&acc_o)[S::kSlabs][8][4],
                                               const float (&correction)[2]) {
#pragma unroll
  for (int slab = 0; slab < S::kSlabs; ++slab)
    rescale_rows(acc_o[slab], correction);
}

// Register-heavy (fp32 S and O tiles per thread, loop-invariant descriptors): one block per SM.
// Params: KjitFlashParams, or KjitGroupedFlashParams for a grouped launch.
template <class T, int kHeadDim, int kBlockN, int kWarpGroups, bool kCausal,
          class Params = KjitFlashParams>
__global__ void __launch_bounds__(128 * kWarpGroups, 1)
    flash_forward_sm90(const __grid_constant__ Params params) {
  const BlockWork work = block_work(params);
  const KjitFlashParams& p = work.p;
  using S = FlashSm90Shape<kHeadDim, kBlockN, kWarpGroups>;
  extern __shared__ unsigned char shared_raw[];
  T* shared_q = reinterpret_cast<T*>(ptx::swizzle_aligned(shared_raw));
  T* shared_k = shared_q + S::kQElems;       // [2 stages][swizzled kBlockN x kHeadDim]
  T* shared_v = shared_k + 2 * S::kKVElems;  // [2 stages][swizzled kBlockN x kHeadDim]

  const FlashTile<T> tile(work, S::kBlockM);
  if (!tile.has_rows()) return;
  const int key_blocks = tile.key_blocks(S::kBlockM, kBlockN, kCausal);
  const int warpgroup = threadIdx.x / 128, warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
  const int warpgroup_row = 64 * warpgroup;  // within the tile
  const int warp_row = tile.row0 + warpgroup_row + 16 * warp;
  const int my_row = warp_row + lane / 4;  // and my_row + 8

  auto load_kv = [&](int block, int stage) {
    const int first = block * kBlockN;
    ptx::load_swizzled_tile<T, kBlockN, kHeadDim, S::kThreads>(
        shared_k + stage * S::kKVElems, tile.k + first * p.k_row_stride, p.k_row_stride,
        tile.seqlen_k - first);
    ptx::load_swizzled_tile<T, kBlockN, kHeadDim, S::kThreads>(
        shared_v + stage * S::kKVElems, tile.v + first * p.v_row_stride, p.v_row_stride,
        tile.seqlen_k - first);
  };
  ptx::load_swizzled_tile<T, S::kBlockM, kHeadDim, S::kThreads>(shared_q, tile.q, p.q_row_stride,
                                                                tile.seqlen_q - tile.row0);
  if (key_blocks > 0) load_kv(0, 0);
  ptx::cp_async_commit();

  float acc_o[S::kSlabs][8][4] = {};
  RowPairStats stats;
  stats.reset();

  for (int block = 0; block < key_blocks; ++block) {
    const int stage = block & 1;
    ptx::cp_async_wait<0>();
    ptx::fence_proxy_async_shared();
    __syncthreads();  // tile `block` visible to every warpgroup's wgmma; stage^1 is free again
    if (block + 1 < key_blocks) load_kv(block + 1, stage ^ 1);
    ptx::cp_async_commit();

    float acc_s[S::kKeyTiles][4];
    ptx::wgmma_fence();
    issue_scores<T, S>(acc_s, shared_q, warpgroup_row, shared_k + stage * S::kKVElems);
    ptx::wgmma_commit();
    ptx::wgmma_wait<0>();

    float correction[2];
    softmax_step<kCausal, S>(acc_s, stats, tile, block * kBlockN, warp_row, my_row, p.scale_log2,
                             correction);
    rescale_output<S>(acc_o, correction);

    ptx::wgmma_fence();
    issue_values<T, S>(acc_o, shared_v + stage * S::kKVElems,
                       [&](int kk, unsigned(&a)[4]) { probability_fragment<T>(acc_s, kk, a); });
    ptx::wgmma_commit();
    ptx::wgmma_wait<0>();
  }

  const int row = my_row - tile.row0;
  store_rows<T>(*reinterpret_cast<const float(*)[S::kSlabs * 8][4]>(&acc_o),  // slabs in order
                stats, tile.o + static_cast<long long>(row) * p.o_row_stride, p.o_row_stride,
                tile.lse_row(p, my_row), tile.seqlen_q - my_row);
}

}  // namespace kjit::attention

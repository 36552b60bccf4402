// MoE grouped GEMM on Hopper (sm_90a) over moe align's contiguous layout: y[r] = x_sorted[r]
// w[e]^T for every row r of a block of kBlockM rows whose expert is e = block_expert[block]; a
// block with no expert (-1, past the layout's padded total) is skipped and its rows not written.
// kMasked: the masked layout instead (decode; the counts stay on the device): x [E, M, K], y
// [E, M, N], blockIdx.z the expert, whose rows past masked_m[e] are neither computed (whole
// blocks) nor written.
// 16-bit inputs, fp32 accumulation, T out, after the epilogue kEpilogue:
//  - kPlain: y[r] = the product.
//  - kSwiGLU: w's rows interleave the gate and up projections (row 2c gate c, 2c + 1 up c), so
//    that a thread's accumulator pairs are (gate, up) of one column: y[r, c] = silu(gate) up,
//    y of N / 2 columns (GLM's gate/up projection fused with its activation).
//  - kRoutingWeights: y[r] = the product times the routing weight of row r's pair, 0 for a
//    padding row (the down projection, so that the way back only sums).
// One block per tile of (kBlockN columns, kBlockM rows), or one an SM over the tiles
// (kPersistent): warp 0's first thread produces, issuing a tensor copy of the rows' and of the
// expert's weights' 64-column K slices per stage (kStages stages, a full and an empty mbarrier
// each); kBlockM / 64 consumer warpgroups each multiply their 64 rows (wgmma m64 x kBlockN x k16,
// both operands K-major from 128-byte-swizzled shared memory), keep one k-block's wgmma in flight
// while issuing the next, release a stage once its wgmma retire, and write their accumulators
// rounded to T.
#pragma once

#include "common/mbarrier.cuh"
#include "common/mma.cuh"
#include "common/numeric.cuh"
#include "common/register_budget.cuh"
#include "common/tma.cuh"
#include "common/wgmma.cuh"
#include "moe/grouped_gemm_params.h"

namespace kjit::moe {

inline constexpr int kPlain = 0, kSwiGLU = 1, kRoutingWeights = 2;

template <int kBlockM, int kBlockN, int kStages>
struct GroupedGemmShape {
  static constexpr int kBlockK = 64, kConsumers = kBlockM / 64;
  static constexpr int kThreads = 128 * (1 + kConsumers);  // the producer's warpgroup first
  static constexpr int kAElems = kBlockM * kBlockK, kBElems = kBlockN * kBlockK;
  static constexpr int kStageBytes = (kAElems + kBElems) * 2;
  static_assert(kBlockM == 64 || kBlockM == 128, "one or two consumer warpgroups");
  static_assert(kBlockN == 64 || kBlockN == 128 || kBlockN == 256, "wgmma_ss's N");
  // Two consumers of 256 columns hold 128 accumulators a thread, more than the block's even share
  // (168 of 65536 registers over 384 threads): the producer's warpgroup gives its share to them.
  static constexpr bool kRebalance = kConsumers == 2 && kBlockN == 256;
  static constexpr int kProducerRegisters = 40, kConsumerRegisters = 232;
  static_assert(128 * (kProducerRegisters + kConsumers * kConsumerRegisters) <= 65536);
};

// What the grouped GEMM kernels know of a block of rows before the roles split: its expert and
// the rows of it to write (none: skipped, the whole block returning where it is the block's only
// one, no barrier touched; the counts are device data). m_block: its row block (blockIdx.y), z:
// its expert in the masked layout (blockIdx.z).
template <int kBlockM, bool kMasked>
struct GemmBlock {
  int expert, rows_left;
  __device__ __forceinline__ GemmBlock(const KjitMoeGemmParams& p, int m_block, int z)
      : expert(kMasked ? z : p.block_expert[m_block]),
        rows_left(kMasked ? min(p.masked_m[expert], p.rows) - m_block * kBlockM : kBlockM) {}
  __device__ __forceinline__ bool empty() const { return expert < 0 || rows_left <= 0; }
};

// A tile of the product: its column block, row block and masked expert (the non-persistent grid's
// x, y and z). A persistent block walks the tiles t = blockIdx.x, + gridDim.x, ..., columns
// fastest as that grid's blocks start, so that the blocks in flight share rows of x and experts'
// weights in L2.
struct GemmTile {
  int n_block, m_block, z;
};
__device__ __forceinline__ GemmTile gemm_tile(int t, int n_blocks, int m_blocks) {
  return {t % n_blocks, t / n_blocks % m_blocks, t / (n_blocks * m_blocks)};
}

// Whether align's sorted entry `pair` is a routed pair (below the pairs), not padding.
__device__ __forceinline__ bool holds_pair(const KjitMoeGemmParams& p, int pair) {
  return static_cast<unsigned>(pair) < static_cast<unsigned>(p.pairs);
}

// The routing weight of the layout's row `row`, 0 for a padding row (kRoutingWeights).
__device__ __forceinline__ float routing_weight(const KjitMoeGemmParams& p, long long row) {
  const int pair = p.sorted[row];
  return holds_pair(p, pair) ? p.pair_weights[pair] : 0.f;
}

// kSwiGLU: silu(gate) up.
__device__ __forceinline__ float swiglu(float gate, float up) {
  return gate / (1.f + __expf(-gate)) * up;
}

// The stages' full mbarriers (one arrival: the producer's, with its copies' bytes) and empty ones
// (one arrival per consumer warp), initialised before the block's first __syncthreads.
__device__ __forceinline__ void init_stage_barriers(cuda::std::uint64_t* full,
                                                    cuda::std::uint64_t* empty, int stages,
                                                    int consumer_warps) {
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) {
      ptx::mbarrier_init(full + s, 1);
      ptx::mbarrier_init(empty + s, consumer_warps);
    }
    ptx::fence_mbarrier_init();
  }
  __syncthreads();
}

// The producer's loop (thread 0) over a tile's k-blocks: each k-block's stage, once its consumers
// released it, filled by load(stage, kb), tensor copies of `stage_bytes` in all that complete on
// full[stage]. ring: the k-blocks loaded before (a persistent block's earlier tiles), which set
// the stage and phase; advanced past this tile's.
template <class Load>
__device__ __forceinline__ void produce_stages(int k_blocks, int& ring, int stages,
                                               unsigned stage_bytes, cuda::std::uint64_t* full,
                                               cuda::std::uint64_t* empty, Load load) {
  for (int kb = 0; kb < k_blocks; ++kb, ++ring) {
    const int stage = ring % stages;
    if (ring >= stages) ptx::mbarrier_wait(empty + stage, (ring / stages - 1) & 1);
    ptx::mbarrier_arrive_expect_tx(full + stage, stage_bytes);
    load(stage, kb);
  }
}

// A consumer warpgroup's 64 rows of the tile's product, rounded to T, after the epilogue
// kEpilogue; masked rows past the expert's count not written.
template <class T, int kBlockM, int kBlockN, int kEpilogue, bool kMasked>
__device__ __forceinline__ void store_tile(const KjitMoeGemmParams& p,
                                           const float (&acc)[kBlockN / 8][4], const GemmTile& g,
                                           const GemmBlock<kBlockM, kMasked>& block, int consumer,
                                           int warp, int lane) {
  const int block_row0 = consumer * 64 + 16 * warp + lane / 4;  // within the block
  const long long row0 = static_cast<long long>(g.m_block) * kBlockM + block_row0;
  T* const y_expert = static_cast<T*>(p.y) + (kMasked ? block.expert * p.y_expert_stride : 0);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const long long row = row0 + 8 * h;
    if (kMasked && block_row0 + 8 * h >= block.rows_left) continue;
    if constexpr (kEpilogue == kSwiGLU) {
      T* y = y_expert + row * p.y_row_stride + (g.n_block * kBlockN) / 2 + lane % 4;
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j) {
        const float gate = acc[j][2 * h], up = acc[j][2 * h + 1];
        y[4 * j] = from_float<T>(swiglu(gate, up));
      }
    } else {
      const float scale = kEpilogue == kRoutingWeights ? routing_weight(p, row) : 1.f;
      T* y = y_expert + row * p.y_row_stride + g.n_block * kBlockN + 2 * (lane % 4);
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j) {
        *reinterpret_cast<unsigned*>(y + 8 * j) =
            ptx::pack_pair<T>(acc[j][2 * h] * scale, acc[j][2 * h + 1] * scale);
      }
    }
  }
}

// kPersistent: one block an SM walks the tiles (gemm_tile), its producer filling the next tile's
// stages while the consumers write the last one's product.
template <class T, int kBlockM, int kBlockN, int kStages, int kEpilogue, bool kMasked,
          bool kPersistent = false>
__global__ void __launch_bounds__(GroupedGemmShape<kBlockM, kBlockN, kStages>::kThreads, 1)
    moe_grouped_gemm(const __grid_constant__ KjitMoeGemmParams p) {
  using S = GroupedGemmShape<kBlockM, kBlockN, kStages>;
  const int n_blocks = p.n / kBlockN, m_blocks = (p.rows + kBlockM - 1) / kBlockM;
  // The block's tiles: its own (blockIdx), or every gridDim.x-th.
  const int tiles = kPersistent ? n_blocks * m_blocks * (kMasked ? p.experts : 1) : 1;
  const int first = kPersistent ? static_cast<int>(blockIdx.x) : 0;
  const int step = kPersistent ? static_cast<int>(gridDim.x) : 1;
  const auto tile = [&](int t) {
    return kPersistent ? gemm_tile(t, n_blocks, m_blocks)
                       : GemmTile{static_cast<int>(blockIdx.x), static_cast<int>(blockIdx.y),
                                  static_cast<int>(blockIdx.z)};
  };
  const auto block_of = [&](const GemmTile& g) {
    return GemmBlock<kBlockM, kMasked>(p, g.m_block, g.z);
  };
  if (!kPersistent && block_of(tile(0)).empty()) return;
  extern __shared__ unsigned char shared_raw[];
  T* sa = reinterpret_cast<T*>(ptx::swizzle_aligned(shared_raw));  // [stages][kBlockM][64]
  T* sb = sa + kStages * S::kAElems;                               // [stages][kBlockN][64]
  auto* full = reinterpret_cast<cuda::std::uint64_t*>(sb + kStages * S::kBElems);
  auto* empty = full + kStages;
  // Warp-uniform (a shuffle from lane 0), so that ptxas keeps the roles' wgmma unserialised.
  const int warpgroup = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / 128, 0);
  init_stage_barriers(full, empty, kStages, 4 * S::kConsumers);
  const int k_blocks = p.k / S::kBlockK;
  int ring = 0;  // k-blocks through the stages so far, over the block's tiles

  if (warpgroup == 0) {
    if constexpr (S::kRebalance) ptx::release_registers<S::kProducerRegisters>();
    if (threadIdx.x == 0) {
      ptx::prefetch_tensor_map(p.x_map);
      ptx::prefetch_tensor_map(p.w_map);
      for (int t = first; t < tiles; t += step) {
        const GemmTile g = tile(t);
        const GemmBlock<kBlockM, kMasked> block = block_of(g);
        if (block.empty()) continue;
        produce_stages(
            k_blocks, ring, kStages, S::kStageBytes, full, empty, [&](int stage, int kb) {
              ptx::tma_load_4d(sa + stage * S::kAElems, p.x_map, full + stage, kb * S::kBlockK,
                               g.m_block * kBlockM, kMasked ? block.expert : 0, 0);
              ptx::tma_load_4d(sb + stage * S::kBElems, p.w_map, full + stage, kb * S::kBlockK,
                               g.n_block * kBlockN, block.expert, 0);
            });
      }
    }
    return;
  }

  if constexpr (S::kRebalance) ptx::claim_registers<S::kConsumerRegisters>();
  const int consumer = warpgroup - 1, warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
  for (int t = first; t < tiles; t += step) {
    const GemmTile g = tile(t);
    const GemmBlock<kBlockM, kMasked> block = block_of(g);
    if (block.empty()) continue;
    float acc[kBlockN / 8][4] = {};
    for (int kb = 0; kb < k_blocks; ++kb, ++ring) {
      const int stage = ring % kStages;
      ptx::mbarrier_wait(full + stage, (ring / kStages) & 1);
      const T* a = sa + stage * S::kAElems + consumer * 64 * S::kBlockK;
      const T* b = sb + stage * S::kBElems;
      ptx::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < S::kBlockK / 16; ++kk) {
        ptx::wgmma_ss<T, kBlockN>(acc, ptx::swizzled_descriptor(a + kk * 16),
                                  ptx::swizzled_descriptor(b + kk * 16), kb > 0 || kk > 0);
      }
      ptx::wgmma_commit();
      // One k-block's products stay in flight behind the next one's issue: the one before
      // retired, its stage is released.
      ptx::wgmma_wait<1>();
      if (kb > 0 && lane == 0) ptx::mbarrier_arrive(empty + (ring - 1) % kStages);
    }
    ptx::wgmma_wait<0>();
    if (k_blocks > 0 && lane == 0) ptx::mbarrier_arrive(empty + (ring - 1) % kStages);
    store_tile<T, kBlockM, kBlockN, kEpilogue, kMasked>(p, acc, g, block, consumer, warp, lane);
  }
}

}  // namespace kjit::moe

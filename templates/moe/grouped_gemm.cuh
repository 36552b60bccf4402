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
// One block per (kBlockN columns, kBlockM rows): warp 0's first thread produces, issuing a tensor
// copy of the rows' and of the expert's weights' 64-column K slices per stage (kStages stages, a
// full and an empty mbarrier each); kBlockM / 64 consumer warpgroups each multiply their 64 rows
// (wgmma m64 x kBlockN x k16, both operands K-major from 128-byte-swizzled shared memory), keep one
// k-block's wgmma in flight while issuing the next, release a stage once its wgmma retire, and
// write their accumulators rounded to T.
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

// What both grouped GEMM kernels (16-bit and FP4 weights) know of their block before the roles
// split: its expert and the rows of it to write (none: the whole block returns, no barrier
// touched; the counts are device data).
template <int kBlockM, bool kMasked>
struct GemmBlock {
  int expert, rows_left;
  __device__ __forceinline__ explicit GemmBlock(const KjitMoeGemmParams& p)
      : expert(kMasked ? static_cast<int>(blockIdx.z) : p.block_expert[blockIdx.y]),
        rows_left(kMasked ? min(p.masked_m[expert], p.rows) - static_cast<int>(blockIdx.y) * kBlockM
                          : kBlockM) {}
  __device__ __forceinline__ bool empty() const { return expert < 0 || rows_left <= 0; }
};

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

// The producer's loop (thread 0): each k-block's stage, once its consumers released it, filled by
// load(stage, kb), tensor copies of `stage_bytes` in all that complete on full[stage].
template <class Load>
__device__ __forceinline__ void produce_stages(const KjitMoeGemmParams& p, int k_blocks, int stages,
                                               unsigned stage_bytes, cuda::std::uint64_t* full,
                                               cuda::std::uint64_t* empty, Load load) {
  ptx::prefetch_tensor_map(p.x_map);
  ptx::prefetch_tensor_map(p.w_map);
  for (int kb = 0; kb < k_blocks; ++kb) {
    const int stage = kb % stages;
    if (kb >= stages) ptx::mbarrier_wait(empty + stage, (kb / stages - 1) & 1);
    ptx::mbarrier_arrive_expect_tx(full + stage, stage_bytes);
    load(stage, kb);
  }
}

template <class T, int kBlockM, int kBlockN, int kStages, int kEpilogue, bool kMasked>
__global__ void __launch_bounds__(GroupedGemmShape<kBlockM, kBlockN, kStages>::kThreads, 1)
    moe_grouped_gemm(const __grid_constant__ KjitMoeGemmParams p) {
  using S = GroupedGemmShape<kBlockM, kBlockN, kStages>;
  const int n_block = blockIdx.x, m_block = blockIdx.y;
  const GemmBlock<kBlockM, kMasked> block(p);
  if (block.empty()) return;
  const int expert = block.expert, rows_left = block.rows_left;
  extern __shared__ unsigned char shared_raw[];
  T* sa = reinterpret_cast<T*>(ptx::swizzle_aligned(shared_raw));  // [stages][kBlockM][64]
  T* sb = sa + kStages * S::kAElems;                               // [stages][kBlockN][64]
  auto* full = reinterpret_cast<cuda::std::uint64_t*>(sb + kStages * S::kBElems);
  auto* empty = full + kStages;
  // Warp-uniform (a shuffle from lane 0), so that ptxas keeps the roles' wgmma unserialised.
  const int warpgroup = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / 128, 0);
  init_stage_barriers(full, empty, kStages, 4 * S::kConsumers);
  const int k_blocks = p.k / S::kBlockK;

  if (warpgroup == 0) {
    if constexpr (S::kRebalance) ptx::release_registers<S::kProducerRegisters>();
    if (threadIdx.x == 0) {
      produce_stages(p, k_blocks, kStages, S::kStageBytes, full, empty, [&](int stage, int kb) {
        ptx::tma_load_4d(sa + stage * S::kAElems, p.x_map, full + stage, kb * S::kBlockK,
                         m_block * kBlockM, kMasked ? expert : 0, 0);
        ptx::tma_load_4d(sb + stage * S::kBElems, p.w_map, full + stage, kb * S::kBlockK,
                         n_block * kBlockN, expert, 0);
      });
    }
    return;
  }

  if constexpr (S::kRebalance) ptx::claim_registers<S::kConsumerRegisters>();
  const int consumer = warpgroup - 1, warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
  float acc[kBlockN / 8][4] = {};
  for (int kb = 0; kb < k_blocks; ++kb) {
    const int stage = kb % kStages;
    ptx::mbarrier_wait(full + stage, (kb / kStages) & 1);
    const T* a = sa + stage * S::kAElems + consumer * 64 * S::kBlockK;
    const T* b = sb + stage * S::kBElems;
    ptx::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < S::kBlockK / 16; ++kk) {
      ptx::wgmma_ss<T, kBlockN>(acc, ptx::swizzled_descriptor(a + kk * 16),
                                ptx::swizzled_descriptor(b + kk * 16), kb > 0 || kk > 0);
    }
    ptx::wgmma_commit();
    // One k-block's products stay in flight behind the next one's issue: the one before retired,
    // its stage is released.
    ptx::wgmma_wait<1>();
    if (kb > 0 && lane == 0) ptx::mbarrier_arrive(empty + (kb - 1) % kStages);
  }
  ptx::wgmma_wait<0>();
  if (k_blocks > 0 && lane == 0) ptx::mbarrier_arrive(empty + (k_blocks - 1) % kStages);

  const int block_row0 = consumer * 64 + 16 * warp + lane / 4;  // within the block
  const long long row0 = static_cast<long long>(m_block) * kBlockM + block_row0;
  T* const y_expert = static_cast<T*>(p.y) + (kMasked ? expert * p.y_expert_stride : 0);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const long long row = row0 + 8 * h;
    if (kMasked && block_row0 + 8 * h >= rows_left) continue;
    if constexpr (kEpilogue == kSwiGLU) {
      T* y = y_expert + row * p.y_row_stride + (n_block * kBlockN) / 2 + lane % 4;
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j) {
        const float gate = acc[j][2 * h], up = acc[j][2 * h + 1];
        y[4 * j] = from_float<T>(swiglu(gate, up));
      }
    } else {
      const float scale = kEpilogue == kRoutingWeights ? routing_weight(p, row) : 1.f;
      T* y = y_expert + row * p.y_row_stride + n_block * kBlockN + 2 * (lane % 4);
#pragma unroll
      for (int j = 0; j < kBlockN / 8; ++j) {
        *reinterpret_cast<unsigned*>(y + 8 * j) =
            ptx::pack_pair<T>(acc[j][2 * h] * scale, acc[j][2 * h + 1] * scale);
      }
    }
  }
}

}  // namespace kjit::moe

// MoE grouped GEMM with FP4 expert weights on Hopper (sm_90a): grouped_gemm.cuh's layouts
// (contiguous, masked) and epilogues over the same parameters, w given as E2M1 codes [E, N, K / 2]
// (element 2i in the low nibble), one scale byte per block of kScaleBlock K (NVFP4: 16, E4M3;
// MXFP4: 32, E8M0) and NVFP4's fp32 tensor scale per expert; activations bf16.
// Hopper has no FP4 tensor cores, so the weights are dequantized to bf16 in registers and become
// wgmma's A operand ("swap AB": a block computes y^T, kBlockW weight rows by kBlockM token rows,
// the tokens B from 128-byte-swizzled shared memory); only the packed codes cross the memory bus.
// Dequantization is exact (e2m1 x scale has at most 6 significant bits): a code's bits placed in a
// bf16's exponent and mantissa give e2m1 x 2^-126 (subnormal for the two smallest codes, which
// bf16 arithmetic keeps), and the block scale enters as scale x 2^119, so that their product,
// e2m1 x scale x 2^-7, is a normal bf16 for every finite E4M3 scale and for E8M0 scales from
// 2^-118 to 2^8; the 2^7 and the tensor scale multiply the fp32 product. Past 2^8 an E8M0 scale
// becomes infinity (a zero code then gives NaN); below 2^-118 the products lose bits.
// Warp 0's first thread produces (a tensor copy of the tokens' 64-column K slice and of the
// weights' 32 code bytes a row per stage); warps 1-3 meanwhile copy the block's scales for the
// whole of K to shared memory once (load_block_scales), so that no k-block waits on a global load;
// kBlockW / 64 consumer warpgroups each dequantize and multiply 64 weight rows (over 128 or 256
// token rows, one k-block's products in flight while the next one's codes are dequantised; at 256
// weight rows, whose four warpgroups have 112 registers, one k-block at a time), and release
// a stage once its products retire. 256 token rows (align's blocks of 256, which FP4 weights
// take; the layer's from 1024 pairs an expert) halve the dequantisation a product: each k-block's
// fragments feed an m64n256k16 (two consumers, 128 accumulators a thread). A lane's two weight rows
// r and r + 8 of each token pair meet their neighbours' (r ^ 1) through one shuffle in the
// epilogue, so that a lane writes two adjacent columns (or one SwiGLU column) of one token.
#pragma once

#include "common/cp_async.cuh"
#include "common/mbarrier.cuh"
#include "common/mma.cuh"
#include "common/numeric.cuh"
#include "common/register_budget.cuh"
#include "common/tma.cuh"
#include "common/wgmma.cuh"
#include "moe/grouped_gemm.cuh"
#include "moe/grouped_gemm_params.h"

namespace kjit::moe {

inline constexpr int kNvFp4 = 1, kMxFp4 = 2;

template <int kBlockM, int kBlockW, int kStages>
struct Fp4GemmShape {
  static constexpr int kBlockK = 64, kConsumers = kBlockW / 64;
  static constexpr int kThreads = 128 * (1 + kConsumers);  // the producer's warpgroup first
  static constexpr int kXBytes = kBlockM * kBlockK * 2, kWBytes = kBlockW * kBlockK / 2;
  static constexpr int kStageBytes = kXBytes + kWBytes;
  // Decode's shape (64 token rows, 64 weight rows) keeps to 80 registers: three blocks an SM.
  static constexpr int kMinBlocks = kBlockM == 64 && kBlockW == 64 ? 3 : 1;
  static_assert(kBlockM == 64 || kBlockM == 128 || kBlockM == 256, "wgmma's N: align's block");
  static_assert(kBlockW == 64 || kBlockW == 128 || kBlockW == 256, "1, 2 or 4 consumer warpgroups");
  // 256 token rows are 128 accumulators a consumer thread: two consumers, registers rebalanced
  // (one, at 255 registers without setmaxnreg, spilled and serialised its wgmma).
  static_assert(kBlockM < 256 || kBlockW == 128, "256 token rows: 128 weight rows");
  // Four consumers (640 threads, 96 registers a thread at launch) take the producer's share, 32
  // for it and 112 for each of them; two over 256 token rows (384 threads at 168) 40 and 232.
  static constexpr bool kRebalance = kConsumers == 4 || kBlockM == 256;
  static constexpr int kProducerRegisters = kConsumers == 4 ? 32 : 40;
  static constexpr int kConsumerRegisters = kConsumers == 4 ? 112 : 232;
  static constexpr int kLaunchRegisters = 65536 / kThreads / 8 * 8;
  static_assert(!kRebalance || 128 * (kProducerRegisters + kConsumers * kConsumerRegisters) <=
                                   kThreads * kLaunchRegisters);
};

// Two E2M1 codes (a byte, the lower K in the low nibble) as the bf16x2 e2m1 x 2^-126.
__device__ __forceinline__ unsigned e2m1x2_scaled_bits(unsigned byte) {
  const unsigned z = byte * 0x01001000u;  // the low nibble at bits 12-15, the high one at 28-31
  return (z & 0x80008000u) | ((z >> 6) & 0x01c001c0u);
}

// A row's block scales of a k-block (NVFP4: 4 E4M3 codes in a word, one a k16 step; MXFP4: 2 E8M0
// codes, one a k32) as bf16 scale x 2^119, in both halves of scale[kk] for each k16 step kk.
// NVFP4: E4M3 -> f16 (exact, subnormals included) and the f16's exponent rebased by 119 - 15 + 127
// - 127 (its low 3 mantissa bits are zero, so the two halves shift as one word); a zero scale
// stays 0. MXFP4: 2^(code - 127) x 2^119 is the bf16 exponent field code + 119, saturating to
// infinity past 2^8. NaN scales (which no quantiser writes) are not kept.
template <int kFormat>
__device__ __forceinline__ void block_scales_bits(unsigned codes, unsigned (&scale)[4]) {
  if constexpr (kFormat == kNvFp4) {
#pragma unroll
    for (int pair = 0; pair < 2; ++pair) {
      unsigned f16x2;
      asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n"
          : "=r"(f16x2)
          : "h"(static_cast<unsigned short>(codes >> (16 * pair))));
      const unsigned magnitude = f16x2 & 0x7fff7fffu;
      const unsigned bf16x2 =
          (((magnitude >> 3) + 0x73807380u) | (f16x2 & 0x80008000u)) & __vcmpne2(magnitude, 0u);
      scale[2 * pair] = __byte_perm(bf16x2, 0, 0x1010);
      scale[2 * pair + 1] = __byte_perm(bf16x2, 0, 0x3232);
    }
  } else {
    const unsigned exponents = __vminu2(__byte_perm(codes, 0, 0x4140) + 0x00770077u, 0x00ff00ffu);
    const unsigned bf16x2 = exponents << 7;
    scale[0] = scale[1] = __byte_perm(bf16x2, 0, 0x1010);
    scale[2] = scale[3] = __byte_perm(bf16x2, 0, 0x3232);
  }
}

// The scale bytes of the block's kBlockW weight rows (`rows`, row_bytes each) into shared memory
// [kBlockW][p.scale_pitch], by `threads` threads, which return once their copies landed: 4-byte
// copies (the row's tail zero-filled) where the rows are 4-byte aligned, else (MXFP4 rows of an odd
// number of 2-byte k-blocks) 2-byte loads, 8 in flight a thread. No expert: zeros, stored (a
// cp.async needs an aligned source even when it reads nothing).
template <int kBlockW>
__device__ __forceinline__ void load_block_scales(const KjitMoeGemmParams& p,
                                                  const unsigned char* rows, bool have_expert,
                                                  int row_bytes, unsigned char* dst, int thread,
                                                  int threads) {
  if (!have_expert) {
    for (int i = thread; i < kBlockW * p.scale_pitch / 4; i += threads)
      reinterpret_cast<unsigned*>(dst)[i] = 0u;
    return;
  }
  if (((reinterpret_cast<unsigned long long>(rows) | p.scale_row_stride) & 3) == 0) {
    const int row_words = (row_bytes + 3) / 4;
    for (int i = thread; i < kBlockW * row_words; i += threads) {
      const int r = i / row_words, b = 4 * (i % row_words);
      ptx::cp_async_4(dst + r * p.scale_pitch + b, rows + r * p.scale_row_stride + b,
                      min(4, row_bytes - b));
    }
    ptx::cp_async_commit();
    ptx::cp_async_wait<0>();
    return;
  }
  const int row_halves = row_bytes / 2, total = kBlockW * row_halves;
  for (int base = thread; base < total; base += 8 * threads) {
    unsigned short v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int i = base + j * threads;
      if (i < total) {
        v[j] = *reinterpret_cast<const unsigned short*>(rows + i / row_halves * p.scale_row_stride +
                                                        2 * (i % row_halves));
      }
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int i = base + j * threads;
      if (i < total) {
        *reinterpret_cast<unsigned short*>(dst + i / row_halves * p.scale_pitch +
                                           2 * (i % row_halves)) = v[j];
      }
    }
  }
}

__device__ __forceinline__ unsigned mul_bf16x2(unsigned a, unsigned b) {
  unsigned d;
  asm("mul.rn.bf16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

// The block's token rows up to its last one that holds a pair (the masked layout's count, or,
// given align's sorted, the rows whose pair is in [0, pairs): an expert's padding ends its run),
// the same in every thread (each warp reads the block's sorted entries).
template <int kBlockM, bool kMasked>
__device__ __forceinline__ int held_rows(const KjitMoeGemmParams& p,
                                         const GemmBlock<kBlockM, kMasked>& block, int m_block) {
  if (kMasked || p.sorted == nullptr) return kMasked ? min(block.rows_left, kBlockM) : kBlockM;
  int held = 0;
#pragma unroll
  for (int base = 0; base < kBlockM; base += 32) {
    const int pair = p.sorted[m_block * kBlockM + base + static_cast<int>(threadIdx.x) % 32];
    const unsigned holds = __ballot_sync(0xffffffffu, holds_pair(p, pair));
    if (holds != 0) held = base + 32 - __clz(holds);
  }
  return held;
}

// What multiplies the products of dequantised codes: the 2^7 the scales' rebasing took
// (block_scales_bits) and NVFP4's tensor scale of the expert (0 for an expert past w's).
template <int kFormat>
__device__ __forceinline__ float fp4_alpha(const KjitMoeGemmParams& p, int expert) {
  if (kFormat != kNvFp4) return 128.f;
  return expert < p.experts ? 128.f * p.tensor_scale[expert * p.tensor_scale_stride] : 0.f;
}

// A swapped product (weight rows by token columns, the m16n8 accumulator layout) through the
// epilogue, to y of T: acc[j][e] x alpha is weight row n + (lane / 4) % 2 + 8 (e / 2) by token 8 j
// + 2 (lane % 4) + e % 2, the token's row first_row + token of y, written below rows_left only. A
// lane's rows r and r + 8 meet their neighbours' (r ^ 1) through one shuffle, so that a lane writes
// two adjacent columns (or one SwiGLU column) of one token. The routing weights of kChunk tiles'
// tokens are loaded before those tiles are stored, one load a token for the four lanes that write
// it (which take it through a shuffle): a load may not pass an earlier store (they could alias), so
// loaded at each token, its two dependent loads waited out their latency in turn, 64 times over 256
// token rows. kChunk: half the tiles (all at once spill over 256 token rows, and cost blocks of 64
// their second block an SM).
template <class T, int kEpilogue, bool kMasked, int kChunk, int kTiles>
__device__ __forceinline__ void store_swapped(const KjitMoeGemmParams& p,
                                              const float (&acc)[kTiles][4], float alpha,
                                              int expert, long long first_row, int rows_left,
                                              long long n) {
  // A chunk's first tile a multiple of 4: tile j's weight is in lane (lane % 8) + 8 (j % 4).
  static_assert(kChunk > 0 && (kChunk % 4 == 0 || kChunk >= kTiles), "whole loads a chunk");
  const int lane = threadIdx.x % 32, quad = lane % 4;
  const bool second_row = (lane / 4) % 2;  // this lane's rows are the odd ones of their pairs
  T* const y_expert = static_cast<T*>(p.y) + (kMasked ? expert * p.y_expert_stride : 0);
  constexpr int kLoads = (kChunk + 3) / 4;
#pragma unroll
  for (int j0 = 0; j0 < kTiles; j0 += kChunk) {
    // Of token 8 j + 2 quad + second_row, j = j0 + 4 i + lane / 8.
    [[maybe_unused]] float weight[kLoads];
    if constexpr (kEpilogue == kRoutingWeights) {
#pragma unroll
      for (int i = 0; i < kLoads; ++i) {
        const int j = j0 + 4 * i + lane / 8, token = 8 * j + 2 * quad + second_row;
        weight[i] = j < kTiles && token < rows_left ? routing_weight(p, first_row + token) : 0.f;
      }
    }
#pragma unroll
    for (int j = j0; j < j0 + kChunk && j < kTiles; ++j) {
      float scale = alpha;
      if constexpr (kEpilogue == kRoutingWeights)
        scale *= __shfl_sync(0xffffffffu, weight[(j - j0) / 4], lane % 8 + 8 * (j % 4));
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        // The even row's lane keeps its first token and takes the odd row's value of it; the odd
        // row's lane the second token.
        const float v0 = acc[j][2 * h], v1 = acc[j][2 * h + 1];
        const float theirs = __shfl_xor_sync(0xffffffffu, second_row ? v0 : v1, 4);
        const float even = second_row ? theirs : v0, odd = second_row ? v1 : theirs;
        const int token = 8 * j + 2 * quad + second_row;
        if (token >= rows_left) continue;
        const long long row = first_row + token, column = n + 8 * h;
        if constexpr (kEpilogue == kSwiGLU) {
          y_expert[row * p.y_row_stride + column / 2] =
              from_float<T>(swiglu(even * scale, odd * scale));
        } else {
          *reinterpret_cast<unsigned*>(y_expert + row * p.y_row_stride + column) =
              ptx::pack_pair<T>(even * scale, odd * scale);
        }
      }
    }
  }
}

template <int kFormat, int kBlockM, int kBlockW, int kStages, int kEpilogue, bool kMasked>
__global__ void __launch_bounds__(Fp4GemmShape<kBlockM, kBlockW, kStages>::kThreads,
                                  Fp4GemmShape<kBlockM, kBlockW, kStages>::kMinBlocks)
    moe_grouped_gemm_fp4(const __grid_constant__ KjitMoeGemmParams p) {
  using S = Fp4GemmShape<kBlockM, kBlockW, kStages>;
  using T = __nv_bfloat16;
  constexpr int kScalesPerK = S::kBlockK / (kFormat == kNvFp4 ? 16 : 32);  // a row's, a k-block
  const int w_block = blockIdx.x, m_block = blockIdx.y;
  const GemmBlock<kBlockM, kMasked> block(p, m_block, blockIdx.z);
  if (block.empty()) return;
  const int expert = block.expert, rows_left = block.rows_left;
  // An expert past w's: its codes read as zeros (the tensor copy's bounds), its scales not read.
  const bool have_expert = expert < p.experts;
  extern __shared__ unsigned char shared_raw[];
  T* sx = reinterpret_cast<T*>(ptx::swizzle_aligned(shared_raw));  // [stages][kBlockM][64]
  unsigned char* sw = reinterpret_cast<unsigned char*>(sx + kStages * kBlockM * S::kBlockK);
  unsigned char* sscales = sw + kStages * S::kWBytes;  // [kBlockW][p.scale_pitch]
  auto* full = reinterpret_cast<cuda::std::uint64_t*>(sscales + kBlockW * p.scale_pitch);
  auto* empty = full + kStages;
  auto* scales_ready = empty + kStages;  // one arrival a loading thread
  if (threadIdx.x == 0) ptx::mbarrier_init(scales_ready, 96);
  // Warp-uniform (a shuffle from lane 0), so that ptxas keeps the roles' wgmma unserialised.
  const int warpgroup = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / 128, 0);
  init_stage_barriers(full, empty, kStages, 4 * S::kConsumers);
  const int k_blocks = p.k / S::kBlockK;
  // Only the first 8, 16 or 32 columns of the product (over 256 token rows also 128) are computed
  // when they cover the block's held rows (decode: a few tokens an expert; an expert's last
  // block); the rest stay 0.
  const int held = held_rows<kBlockM, kMasked>(p, block, m_block);
  // Warp-uniform for ptxas too (a shuffle from lane 0): a branch on it keeps wgmma unserialised.
  const int columns = __shfl_sync(0xffffffffu,
                                  held <= 8                       ? 8
                                  : held <= 16                    ? 16
                                  : held <= 32                    ? 32
                                  : kBlockM == 256 && held <= 128 ? 128
                                                                  : kBlockM,
                                  0);

  if (warpgroup == 0) {
    if constexpr (S::kRebalance) ptx::release_registers<S::kProducerRegisters>();
    if (threadIdx.x == 0) {
      ptx::prefetch_tensor_map(p.x_map);
      ptx::prefetch_tensor_map(p.w_map);
      int ring = 0;
      produce_stages(k_blocks, ring, kStages, S::kStageBytes, full, empty, [&](int stage, int kb) {
        ptx::tma_load_4d(sx + stage * kBlockM * S::kBlockK, p.x_map, full + stage, kb * S::kBlockK,
                         m_block * kBlockM, kMasked ? expert : 0, 0);
        ptx::tma_load_4d(sw + stage * S::kWBytes, p.w_map, full + stage, kb * S::kBlockK / 2,
                         w_block * kBlockW, expert, 0);
      });
    } else if (threadIdx.x >= 32) {
      const unsigned char* rows =
          have_expert ? p.w_scales + expert * p.scale_expert_stride +
                            static_cast<long long>(w_block) * kBlockW * p.scale_row_stride
                      : p.w_scales;
      load_block_scales<kBlockW>(p, rows, have_expert, k_blocks * kScalesPerK, sscales,
                                 threadIdx.x - 32, 96);
      ptx::mbarrier_arrive(scales_ready);
    }
    return;
  }

  if constexpr (S::kRebalance) ptx::claim_registers<S::kConsumerRegisters>();
  const int consumer = warpgroup - 1, warp = threadIdx.x / 32 % 4, lane = threadIdx.x % 32;
  const int quad = lane % 4, w_row0 = consumer * 64 + 16 * warp + lane / 4;  // and w_row0 + 8
  // This lane's two rows' scale codes of a k-block (kScalesPerK bytes each) in shared memory.
  const unsigned char* scale_row = sscales + w_row0 * p.scale_pitch;
  const auto block_scales = [&](int kb, int h) -> unsigned {
    const unsigned char* s = scale_row + 8 * h * p.scale_pitch + kb * kScalesPerK;
    return kScalesPerK == 4 ? *reinterpret_cast<const unsigned*>(s)
                            : *reinterpret_cast<const unsigned short*>(s);
  };
  float acc[kBlockM / 8][4] = {};
  // The main loop for products kN token columns wide, chosen once a block.
  // The stages' tiles as shared-memory addresses, computed once: this lane's first code row and
  // the tokens' descriptor (a stage further on: kXBytes / 16 in the descriptor's address field).
  const unsigned w_codes = ptx::shared_address(sw + w_row0 * (S::kBlockK / 2));
  const cuda::std::uint64_t x_desc0 = ptx::swizzled_descriptor(sx);
  const auto main_loop = [&](auto width) {
    constexpr int kN = decltype(width)::value;
    // The A fragments of two k-blocks: one k-block's products stay in flight while the next one's
    // codes are dequantised into the other set (a wgmma reads its register operand until it
    // retires), so the tensor cores do not drain at every k-block. Only 128 and 256 token rows
    // gain: at 64 (the layer's blocks up to 64 pairs an expert) the stage that goes back a k-block
    // later cost the NVFP4 layer at T 256 25 % on the H100 (perf.md), decode's 64 x 64 keeps to
    // 80 registers, and 256 weight rows have 112 a consumer thread.
    constexpr int kSets = kBlockM >= 128 && S::kConsumers < 4 ? 2 : 1;
    // The m16n8k16 A layout: (r, k), (r + 8, k), (r, k + 8), (r + 8, k + 8).
    unsigned a[kSets][S::kBlockK / 16][4];
    int stage = 0;
    [[maybe_unused]] int in_flight = -1;  // two sets: the stage whose products have not retired
    unsigned phase = 0;
    const auto k_block = [&](int kb, unsigned(&frag)[S::kBlockK / 16][4]) {
      const unsigned scales[2] = {block_scales(kb, 0), block_scales(kb, 1)};
      ptx::mbarrier_wait(full + stage, phase);
      // Row r's 32 code bytes as two 16-byte halves (K 0-31, 32-63); 32-bit word i holds K
      // 8i..8i+7, and this lane's K (2 quad, + 1) and (+ 8, + 9) of a k16 step are byte `quad` of
      // two words.
      unsigned codes[2][2][4];  // [h][half]
#pragma unroll
      for (int h = 0; h < 2; ++h) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          ptx::ld_shared_v4(codes[h][half],
                            w_codes + stage * S::kWBytes + 8 * h * (S::kBlockK / 2) + 16 * half);
        }
      }
      unsigned scale[2][4];  // [h][kk]
      block_scales_bits<kFormat>(scales[0], scale[0]);
      block_scales_bits<kFormat>(scales[1], scale[1]);
      // The tokens' k16 steps are 32 bytes apart in the swizzled tile: 2 in the descriptor.
      const cuda::std::uint64_t x_desc = x_desc0 + stage * (S::kXBytes / 16);
      // Each k16 step's fragment dequantised, then multiplied while the next one is.
#pragma unroll
      for (int kk = 0; kk < S::kBlockK / 16; ++kk) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const unsigned* q = codes[h][kk / 2];
          const unsigned low_k = q[2 * (kk % 2)], high_k = q[2 * (kk % 2) + 1];
          frag[kk][h] =
              mul_bf16x2(e2m1x2_scaled_bits(__byte_perm(low_k, 0, 0x4440 | quad)), scale[h][kk]);
          frag[kk][2 + h] =
              mul_bf16x2(e2m1x2_scaled_bits(__byte_perm(high_k, 0, 0x4440 | quad)), scale[h][kk]);
        }
        ptx::wgmma_fence();
        ptx::wgmma_rs<T, kN>(acc, frag[kk], x_desc + 2 * kk, kb > 0 || kk > 0);
      }
      ptx::wgmma_commit();
      // Two sets: the k-block before this one has retired, its stage goes back and its fragments
      // are free. One set: this k-block has, and its stage goes back at once.
      ptx::wgmma_wait<kSets - 1>();
      if constexpr (kSets == 1) {
        if (lane == 0) ptx::mbarrier_arrive(empty + stage);
      } else {
        if (in_flight >= 0 && lane == 0) ptx::mbarrier_arrive(empty + in_flight);
        in_flight = stage;
      }
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1;
      }
    };
    if constexpr (kSets == 1) {
      for (int kb = 0; kb < k_blocks; ++kb)
        k_block(kb, a[0]);
    } else {
      // The sets alternate on every path (an odd count's first k-block takes the second set), so
      // that ptxas sees no fragment rewritten while its products may be in flight.
      int kb = 0;
      if (k_blocks % 2 == 1) k_block(kb++, a[1]);
      for (; kb < k_blocks; kb += 2) {
        k_block(kb, a[0]);
        k_block(kb + 1, a[1]);
      }
      ptx::wgmma_wait<0>();
      if (in_flight >= 0 && lane == 0) ptx::mbarrier_arrive(empty + in_flight);
    }
  };
  ptx::mbarrier_wait(scales_ready, 0);
  switch (columns) {
    case 8:
      main_loop(cuda::std::integral_constant<int, 8>{});
      break;
    case 16:
      main_loop(cuda::std::integral_constant<int, 16>{});
      break;
    case 32:
      main_loop(cuda::std::integral_constant<int, 32>{});
      break;
    default:
      // 256 token rows: an expert's last block of 128 or fewer in half the products.
      if (kBlockM == 256 && columns == 128) {
        main_loop(cuda::std::integral_constant<int, kBlockM / 2>{});
      } else {
        main_loop(cuda::std::integral_constant<int, kBlockM>{});
      }
  }

  // acc[j][e]: weight row w_row0 + 8 (e / 2), token 8 j + 2 quad + e % 2 of the block.
  // Half the tiles' routing weights at a time: all at once spill over 256 token rows and take
  // blocks of 64 token rows from 78 registers to 94, one block an SM instead of two (20 % slower).
  store_swapped<T, kEpilogue, kMasked, kBlockM / 16>(
      p, acc, fp4_alpha<kFormat>(p, expert), expert, static_cast<long long>(m_block) * kBlockM,
      rows_left, static_cast<long long>(w_block) * kBlockW + (w_row0 & ~1));
}

}  // namespace kjit::moe

// MoE grouped GEMM for decode (a few tokens an expert), with 16-bit or FP4 expert weights: the
// parameters, layouts, formats and epilogues of grouped_gemm.cuh and grouped_gemm_fp4.cuh, the
// weights streamed by each thread through its own ring instead of a block's tensor-copy pipeline.
// There, with one or two tokens an expert, an FP4 consumer warp spends ~200 instructions on 1024
// weights between barrier handshakes and the weights crawl at a fifth of the copy speed, and 16-bit
// weights fill only N / 128 x experts blocks; here each warp walks its own 16 weight rows, each
// thread copying its 16-byte chunks kLoads steps ahead into its own ring in shared memory
// (cp.async: the bytes in flight take no registers, so that a warp keeps several steps in flight at
// three blocks an SM), no barrier in the main loop, and multiplies with mma.sync m16n8k16 (the
// weights as A, the tokens as B: the product transposed, as in the FP4 pipeline). mma.sync is
// sm_80's, but FP4's bf16x2 multiply (sm_90) and E4M3 scale conversion (sm_89) are not: sm_90a
// only, as the pipelines (the 16-bit path alone would run on sm_80; not offered yet).
// A block: 64 weight rows (4 warps of 16) of one block of align's rows (or of the masked
// layout's), K's steps alternating between two sets of 4 warps, whose sums meet in shared
// memory (or walked by one set, kGroups 1); the block's tokens 8 at a time (one m16n8 tile), a pass
// over the weights each (decode: one pass; a second re-reads the block's weights, from L2). The K
// order inside a step is the lane's own, and the tokens are staged in shared memory in the same
// order (rows 2K + 32 bytes apart, 16-byte chunks swizzled so that a quarter warp's 16-byte loads
// fall in 8 distinct bank groups); each weight format says how (Fp4Steps, HalfSteps).
#pragma once

#include "common/cp_async.cuh"
#include "common/mma.cuh"
#include "moe/grouped_gemm_fp4.cuh"

namespace kjit::moe {

// kGroups: the sets of 4 warps that split K's steps (2), or one set that walks them all (1: a
// block of 128 threads lives twice as long over the same bytes, its start and end a smaller
// share of it).
template <int kGroups_>
struct DecodeShape {
  static constexpr int kRows = 64;  // weight rows a block: 4 warps of 16
  static constexpr int kGroups = kGroups_;
  static constexpr int kThreads = 128 * kGroups;
  static constexpr int kTokens = KJIT_MOE_DECODE_TOKENS;   // a pass: one m16n8 tile
  static constexpr int kRowPad = KJIT_MOE_DECODE_ROW_PAD;  // bytes past a staged row's 2K
  // The staged tokens [kTokens][2K + kRowPad], the second set's sums [4][4][32] fp32, then the
  // threads' rings: a warp's kLoads slots, each [chunk][lane] 16 bytes (a warp's copies and reads
  // of one chunk are 512 contiguous bytes, free of bank conflicts).
  static constexpr int kSumBytes = KJIT_MOE_DECODE_SUM_BYTES;
  static_assert(kTokens == 8, "a pass is one m16n8 tile of tokens");
  static_assert(kSumBytes == 4 * 4 * 32 * 4, "4 warps of the second set, 4 sums a lane");
  static_assert(kThreads * 2 / kGroups == KJIT_MOE_DECODE_THREADS,
                "the host launches and sizes the rings so");
  static_assert(kRowPad == 32, "the swizzles below assume rows 2 chunks apart in the banks");
  static_assert(kGroups == 1 || kGroups == 2, "one or two sets of 4 warps");
};

__device__ __forceinline__ uint4 ld_shared_uint4(unsigned address) {
  unsigned r[4];
  ptx::ld_shared_v4(r, address);
  return make_uint4(r[0], r[1], r[2], r[3]);
}

// A word's eight E2M1 codes (K 0..7 from the low nibble) as four bf16x2 of e2m1 x 2^-126 (the bits
// of e2m1x2_scaled_bits): codes (0, 4), (1, 5), (2, 6), (3, 7). The two codes of a pair are 16
// bits apart, so that one multiply moves both magnitudes to bits 6-8 (the exponent's low two,
// the mantissa's top one) and both signs to bit 15 at once, into bits that do not overlap.
__device__ __forceinline__ void e2m1x8_scaled_bits(unsigned word, unsigned (&pairs)[4]) {
  constexpr unsigned kKept = 0x81c081c0u;  // each half's sign and magnitude
  const unsigned high = word >> 8;
  pairs[0] = ((word & 0x000f000fu) * 0x1040u) & kKept;  // nibble at 0: x 2^6 and x 2^12
  pairs[1] = ((word & 0x00f000f0u) * 0x0104u) & kKept;  // nibble at 4: x 2^2 and x 2^8
  pairs[2] = ((high & 0x000f000fu) * 0x1040u) & kKept;
  pairs[3] = ((high & 0x00f000f0u) * 0x0104u) & kKept;
}

// FP4 weights, 128 K a step. Lane (g, t) reads bytes [16t, 16t + 16) of its rows g and g + 8 (K
// 32t .. 32t + 31 of the step, one or two block scales), and the k slots of its mma fragments hold
// word w's K {0, 4}, {1, 5} (one mma) and {2, 6}, {3, 7} (the next): a code word's nibbles n and
// n + 4 sit 16 bits apart (e2m1x8_scaled_bits). The tokens are staged in that order (each 16
// bytes of a token's K as the pairs (0, 4), (1, 5), (2, 6), (3, 7)), so that a word's B fragments
// are one 16-byte load; chunk c of a row at c ^ (bit 3 of c).
template <int kFormat, int kGroups>
struct Fp4Steps {
  static constexpr int kStepK = 128, kStepBytes = 2 * kStepK;  // of a staged token row
  static constexpr int kChunks = 2;  // a lane's ring slot: its 16 bytes of rows g and g + 8
  static_assert(16 * kChunks == KJIT_MOE_DECODE_FP4_SLOT_BYTES, "the host sizes the rings");
  // [h]: row g + 8 h's scale bytes (NVFP4 two, MXFP4 one), loaded to registers with the step's
  // copies and kept apart until the multiply: joining them at the load would wait for them.
  struct Scales {
    unsigned raw[2];
  };
  struct Step {
    uint4 codes[2];  // [h]: the lane's 16 bytes of row g + 8 h
    Scales scales;
  };
  // The lane's next step of rows g (and g + 8, apart): a cursor that each step issued moves
  // kGroups steps on, which keeps it in registers (from the block's coordinates, ptxas recomputed
  // it at every load, 50 instructions).
  static constexpr int kScaleStep = kFormat == kNvFp4 ? 8 : 4;  // a row's scale bytes a step
  const unsigned char *codes, *scales;
  long long codes_apart, scales_apart;

  __device__ __forceinline__ Fp4Steps(const KjitMoeGemmParams& p, int expert, long long row, int t,
                                      int first_step)
      : codes(static_cast<const unsigned char*>(p.w) + expert * p.w_expert_stride +
              row * p.w_row_stride + 16 * t + first_step * kStepK / 2),
        scales(p.w_scales + expert * p.scale_expert_stride + row * p.scale_row_stride +
               (kFormat == kNvFp4 ? 2 * t : t) + first_step * kScaleStep),
        codes_apart(8 * p.w_row_stride),
        scales_apart(8 * p.scale_row_stride) {}

  // The next step: its codes copied to the ring slot at `slot` (chunk h at slot + 512 h), its
  // scale bytes loaded to `s`.
  __device__ __forceinline__ void issue(unsigned slot, Scales& s) {
    ptx::cp_async_16_stream(slot, codes);
    ptx::cp_async_16_stream(slot + 512, codes + codes_apart);
    if constexpr (kFormat == kNvFp4) {
      s.raw[0] = __ldg(reinterpret_cast<const unsigned short*>(scales));
      s.raw[1] = __ldg(reinterpret_cast<const unsigned short*>(scales + scales_apart));
    } else {
      s.raw[0] = __ldg(scales);
      s.raw[1] = __ldg(scales + scales_apart);
    }
    codes += kGroups * kStepK / 2;
    scales += kGroups * kScaleStep;
  }
  static __device__ __forceinline__ Step fetch(unsigned slot, const Scales& s) {
    return {{ld_shared_uint4(slot), ld_shared_uint4(slot + 512)}, s};
  }

  static __device__ __forceinline__ int staged_chunk(int, int c) { return c ^ ((c >> 3) & 1); }
  static __device__ __forceinline__ uint4 staged(uint4 v) {
    return make_uint4(__byte_perm(v.x, v.z, 0x5410), __byte_perm(v.x, v.z, 0x7632),
                      __byte_perm(v.y, v.w, 0x5410), __byte_perm(v.y, v.w, 0x7632));
  }
  // Word w's 16 bytes of token g (tile 0, step 0) at x0 + 16 w for an even w, x1 + 16 w for an odd
  // one: chunk 4t + w, swizzled (w ^ (t >> 1)); `row` the lane's token row g.
  static __device__ __forceinline__ void lane_chunks(unsigned row, int, int t, unsigned& x0,
                                                     unsigned& x1) {
    x0 = row + 64 * t + 16 * (t >> 1);
    x1 = row + 64 * t - 16 * (t >> 1);
  }

  // The step's rows g and g + 8 times the 8 staged tokens.
  template <class T>
  static __device__ __forceinline__ void multiply(const Step& s, unsigned x0, unsigned x1,
                                                  float (&acc)[4]) {
    // NVFP4 (g, K 0-15), (g, 16-31), (g + 8, 0-15), (g + 8, 16-31) a byte each from the low one;
    // MXFP4 g's and g + 8's.
    const unsigned scale_codes = s.scales.raw[0] | s.scales.raw[1] << (kFormat == kNvFp4 ? 16 : 8);
    unsigned scale[4];  // bf16x2 scale x 2^119: [2 h + K half] (MXFP4: [2 h] and [2 h + 1] alike)
    block_scales_bits<kFormat>(scale_codes, scale);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      unsigned a[2][4];  // [h][pair]
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint4& c = s.codes[h];
        e2m1x8_scaled_bits(w == 0 ? c.x : w == 1 ? c.y : w == 2 ? c.z : c.w, a[h]);
#pragma unroll
        for (int q = 0; q < 4; ++q)
          a[h][q] = mul_bf16x2(a[h][q], scale[2 * h + w / 2]);
      }
      const unsigned first[4] = {a[0][0], a[1][0], a[0][1], a[1][1]};
      const unsigned second[4] = {a[0][2], a[1][2], a[0][3], a[1][3]};
      unsigned b[4];
      ptx::ld_shared_v4(b, (w % 2 == 0 ? x0 : x1) + 16 * w);
      ptx::mma_m16n8k16<T>(acc, first, {b[0], b[1]});
      ptx::mma_m16n8k16<T>(acc, second, {b[2], b[3]});
    }
  }
};

// 16-bit weights (of x's type), 64 K a step (8 chunks of 16 bytes). Lane (g, t) reads chunks t and
// 4 + t of the step of its rows g and g + 8 (so that a warp's load takes 64 whole bytes of each
// row, full sectors), and mma (c, m)'s k slots hold chunk 4c + t's K 4m, 4m + 1 and 4m + 2, 4m + 3:
// register pairs as loaded, and the tokens staged unpermuted. An odd token row's chunks rotate by
// 2 within their 8 (rows are 2 chunks apart in the banks), so that a quarter warp's 16-byte loads
// of rows g and g + 1 fall in 8 distinct bank groups.
template <int kGroups>
struct HalfSteps {
  static constexpr int kStepK = 64, kStepBytes = 2 * kStepK;  // of a weight row and a token row
  static constexpr int kChunks = 4;  // a lane's ring slot: Step's chunks in its order
  static_assert(16 * kChunks == KJIT_MOE_DECODE_16BIT_SLOT_BYTES, "the host sizes the rings");
  struct Scales {};
  struct Step {
    uint4 w[2][2];  // [h][c]: the lane's chunk 4c + t of row g + 8 h
  };
  const unsigned char* row;  // the lane's next step of row g (a cursor, as Fp4Steps's)
  long long apart;           // bytes to row g + 8

  __device__ __forceinline__ HalfSteps(const KjitMoeGemmParams& p, int expert, long long n, int t,
                                       int first_step)
      : row(static_cast<const unsigned char*>(p.w) +
            2 * (expert * p.w_expert_stride + n * p.w_row_stride + 8 * t) +
            first_step * kStepBytes),
        apart(16 * p.w_row_stride) {}

  __device__ __forceinline__ void issue(unsigned slot, Scales&) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int c = 0; c < 2; ++c)
        ptx::cp_async_16_stream(slot + 512 * (2 * h + c), row + h * apart + 64 * c);
    }
    row += kGroups * kStepBytes;
  }
  static __device__ __forceinline__ Step fetch(unsigned slot, const Scales&) {
    Step s;
#pragma unroll
    for (int i = 0; i < 4; ++i)
      s.w[i / 2][i % 2] = ld_shared_uint4(slot + 512 * i);
    return s;
  }

  static __device__ __forceinline__ int staged_chunk(int r, int c) {
    return (c & ~7) | ((c + 2 * (r & 1)) & 7);
  }
  static __device__ __forceinline__ uint4 staged(uint4 v) {
    return v;
  }
  // Chunks t (x0) and 4 + t (x1) of token g's step 0, rotated by g's parity.
  static __device__ __forceinline__ void lane_chunks(unsigned row, int g, int t, unsigned& x0,
                                                     unsigned& x1) {
    x0 = row + 16 * ((t + 2 * (g & 1)) & 7);
    x1 = row + 16 * ((t + 4 + 2 * (g & 1)) & 7);
  }

  template <class T>
  static __device__ __forceinline__ void multiply(const Step& s, unsigned x0, unsigned x1,
                                                  float (&acc)[4]) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const uint4 &g0 = s.w[0][c], &g8 = s.w[1][c];
      const unsigned first[4] = {g0.x, g8.x, g0.y, g8.y}, second[4] = {g0.z, g8.z, g0.w, g8.w};
      unsigned b[4];
      ptx::ld_shared_v4(b, c == 0 ? x0 : x1);
      ptx::mma_m16n8k16<T>(acc, first, {b[0], b[1]});
      ptx::mma_m16n8k16<T>(acc, second, {b[2], b[3]});
    }
  }
};

// Tokens [token0, token0 + count) of the block (first_row: its first row of x's, x the
// expert's rows in the masked layout) staged as Steps multiply them, by the block's threads, two
// rows' loads in flight a thread. The staged rows past count are left as they are: they multiply
// into accumulator columns (tokens) that are never stored, and staging zeros there cost a
// decode block as many shared-memory stores as its weights have bytes.
template <class Steps, int kThreads, class T>
__device__ __forceinline__ void stage_tokens(const KjitMoeGemmParams& p, const T* x,
                                             long long first_row, int count, unsigned char* sx,
                                             int pitch) {
  constexpr int kRowsInFlight = 2;  // four spilled at 80 registers (NVFP4 SwiGLU, depth 2)
  const int chunks = p.k / 8;       // 16 bytes each
  for (int c = threadIdx.x; c < chunks; c += kThreads) {
    for (int r0 = 0; r0 < count; r0 += kRowsInFlight) {
      uint4 v[kRowsInFlight];
#pragma unroll
      for (int i = 0; i < kRowsInFlight; ++i) {
        if (r0 + i < count)
          v[i] = *reinterpret_cast<const uint4*>(x + (first_row + r0 + i) * p.x_row_stride + 8 * c);
      }
#pragma unroll
      for (int i = 0; i < kRowsInFlight; ++i) {
        const int r = r0 + i;
        if (r < count)
          *reinterpret_cast<uint4*>(sx + r * pitch + 16 * Steps::staged_chunk(r, c)) =
              Steps::staged(v[i]);
      }
    }
  }
}

// kFormat: grouped_gemm_fp4.cuh's kNvFp4 or kMxFp4, or 0 for 16-bit weights of type T; kLoads
// the ring's slots (the steps in flight a thread). FP4 over the contiguous layout up to 4 slots
// within 80 registers: three blocks an SM (at K 2048, 66 KB of shared memory each), for the warps
// its conversion needs; else two (6 slots' scale registers or the masked layout's pass state
// spill at 80; 6 slots take 84 KB at K 2048). One set of warps (kGroups 1): twice the blocks of
// half the threads, within the same registers.
template <class T, int kFormat, int kBlockM, int kLoads, int kEpilogue, bool kMasked, int kGroups>
__global__ void __launch_bounds__(DecodeShape<kGroups>::kThreads,
                                  (kFormat != 0 && kLoads <= 4 && !kMasked ? 3 : 2) * 2 / kGroups)
    moe_grouped_gemm_decode(const __grid_constant__ KjitMoeGemmParams p) {
  using S = DecodeShape<kGroups>;
  using Steps =
      cuda::std::conditional_t<kFormat == 0, HalfSteps<kGroups>, Fp4Steps<kFormat, kGroups>>;
  static_assert(kFormat == 0 || cuda::std::is_same_v<T, __nv_bfloat16>, "FP4 takes bf16 tokens");
  const int w_block = blockIdx.x, m_block = blockIdx.y;
  const GemmBlock<kBlockM, kMasked> block(p, m_block, blockIdx.z);
  if (block.empty()) return;
  const int expert = block.expert;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int group = warp / 4, w_row0 = 16 * (warp % 4) + g;  // and w_row0 + 8

  // This lane's weights; this set's steps group, group + kGroups, ... (none for an expert past
  // w's: zeros).
  const long long n0 = static_cast<long long>(w_block) * S::kRows + w_row0;
  const int steps = expert < p.experts ? p.k / Steps::kStepK : 0;
  const int my_steps = (steps - group + S::kGroups - 1) / S::kGroups;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const int pitch = 2 * p.k + S::kRowPad;
  // Ring slot i of this thread at ring + i * kSlotBytes: one commit group a step, so that waiting
  // for all but the newest kLoads - 1 groups waits for the oldest step alone.
  constexpr unsigned kSlotBytes = Steps::kChunks * 32 * 16;
  const unsigned ring = ptx::shared_address(shared_raw + S::kTokens * pitch + S::kSumBytes) +
                        warp * kLoads * kSlotBytes + 16 * lane;
  typename Steps::Scales scales[kLoads];
  const auto start_pass = [&] {  // a pass's first kLoads steps in flight
    Steps weights(p, expert, n0, t, group);
#pragma unroll
    for (int i = 0; i < kLoads; ++i) {
      if (i < my_steps) weights.issue(ring + i * kSlotBytes, scales[i]);
      ptx::cp_async_commit();
    }
    return weights;
  };
  // The first pass's weights go out before the block's other reads (its held rows, alpha, the
  // tokens), whose latency they then share: the first pass always runs, as every block align
  // gives an expert holds a pair (one that holds none only loads in vain).
  Steps weights = start_pass();
  const int held = held_rows<kBlockM, kMasked>(p, block, m_block);

  unsigned char* sx = shared_raw;
  float* sums = reinterpret_cast<float*>(shared_raw + S::kTokens * pitch);
  unsigned x0, x1;  // the lane's token chunks at this set's first step (Steps::lane_chunks)
  Steps::lane_chunks(ptx::shared_address(sx + g * pitch + Steps::kStepBytes * group), g, t, x0, x1);
  const T* x_rows = static_cast<const T*>(p.x) + (kMasked ? expert * p.x_expert_stride : 0ll);
  const long long first_row = static_cast<long long>(m_block) * kBlockM;
  float alpha = 1.f;
  if constexpr (kFormat != 0) alpha = fp4_alpha<kFormat>(p, expert);

  for (int token0 = 0; token0 < held; token0 += S::kTokens) {
    if (token0 > 0) weights = start_pass();
    const int count = min(S::kTokens, held - token0);
    stage_tokens<Steps, S::kThreads>(p, x_rows, first_row + token0, count, sx, pitch);
    __syncthreads();
    float acc[1][4] = {};
    unsigned xa = x0, xb = x1;  // cursors, as the weights' (kept in registers)
    for (int j0 = 0; j0 < my_steps; j0 += kLoads) {
#pragma unroll
      for (int i = 0; i < kLoads; ++i) {
        const int j = j0 + i;
        if (j < my_steps) {
          ptx::cp_async_wait<kLoads - 1>();  // step j's copies, the thread's own: no barrier
          Steps::template multiply<T>(Steps::fetch(ring + i * kSlotBytes, scales[i]), xa, xb,
                                      acc[0]);
          xa += Steps::kStepBytes * S::kGroups;
          xb += Steps::kStepBytes * S::kGroups;
          // Into slot i once the multiply has read it.
          if (j + kLoads < my_steps) weights.issue(ring + i * kSlotBytes, scales[i]);
          ptx::cp_async_commit();
        }
      }
    }
    // The second set's sums to the first's, which writes.
    float* mine = sums + (warp % 4) * 4 * 32 + lane;
    if (S::kGroups == 2 && group == 1) {
#pragma unroll
      for (int e = 0; e < 4; ++e)
        mine[32 * e] = acc[0][e];
    }
    __syncthreads();  // (one set: the next pass restages the tokens after every read of them)
    if (group == 0) {
      if constexpr (S::kGroups == 2) {
#pragma unroll
        for (int e = 0; e < 4; ++e)
          acc[0][e] += mine[32 * e];
      }
      store_swapped<T, kEpilogue, kMasked, 4>(p, acc, alpha, expert, first_row + token0, count,
                                              n0 & ~1ll);
    }
    // No third barrier: the next pass restages the tokens after every read of them (before the
    // one above), and the second set writes its sums again only after the next pass's first,
    // which the first set reaches once it has read these.
  }
  ptx::cp_async_wait<0>();  // a block that held no rows: its first pass's copies
  // The contiguous layout's rows past the held ones: padding, written as zeros (what the other
  // kernels' products of permute's zero padding rows of x_sorted give) unless the caller reads
  // the pairs' rows only.
  if (!kMasked && p.zero_padding) {
    const int words = (kEpilogue == kSwiGLU ? S::kRows / 2 : S::kRows) / 2;  // pairs a row
    T* y = static_cast<T*>(p.y) + static_cast<long long>(w_block) * words * 2;
    for (int i = threadIdx.x; i < (kBlockM - held) * words; i += S::kThreads) {
      const long long row = first_row + held + i / words;
      reinterpret_cast<unsigned*>(y + row * p.y_row_stride)[i % words] = 0u;
    }
  }
}

}  // namespace kjit::moe

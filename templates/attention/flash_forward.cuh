// Attention forward, FlashAttention-2 style, on mma.sync m16n8k16 (sm_80+): one block per
// (kBlockM query rows, head, sequence); each warp owns 16 x kMTiles query rows. K and V tiles of
// kBlockN keys stream through two shared-memory stages with cp.async while the previous tile
// computes: S = Q K^T (fp32), masking (sequence end; causal, bottom-right aligned), online softmax
// in the log2 domain, O += P V with P rounded to the input type. Rows that see no key write O = 0
// and LSE = -inf. Packed varlen sequences come through cu_seqlens; GQA maps head h to h / group.
#pragma once

#include "attention/flash_params.h"
#include "common/mma.cuh"
#include "common/numeric.cuh"

namespace kjit::attention {

template <class T, int kHeadDim, int kBlockM, int kBlockN, int kMTiles, bool kCausal>
struct FlashShape {
  static constexpr int kWarpRows = 16 * kMTiles;  // query rows per warp
  static constexpr int kWarps = kBlockM / kWarpRows;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRow = kHeadDim + 8;  // padded shared row, in elements: no bank conflicts
  static constexpr int kQElems = kBlockM * kRow;
  static constexpr int kKVElems = kBlockN * kRow;
  static constexpr int kSharedBytes = (kQElems + 4 * kKVElems) * static_cast<int>(sizeof(T));
  static constexpr int kKeyTiles = kBlockN / 8;
  static constexpr int kDimTiles = kHeadDim / 8;
  static_assert(kBlockM % kWarpRows == 0 && kBlockN % 16 == 0 && kHeadDim % 16 == 0, "tile shape");
};

// kMTiles m16 tiles per warp: every K and V fragment loaded from shared memory feeds kMTiles
// MMAs, which halves shared-memory traffic per FLOP at kMTiles = 2. One block per SM at least:
// the accumulators need the full register budget (sm_80's default cap spilled hd 96).
template <class T, int kHeadDim, int kBlockM, int kBlockN, int kMTiles, bool kCausal>
__global__ void __launch_bounds__(kBlockM / (16 * kMTiles) * 32, 1)
    flash_forward(const KjitFlashParams p) {
  using S = FlashShape<T, kHeadDim, kBlockM, kBlockN, kMTiles, kCausal>;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  T* shared_q = reinterpret_cast<T*>(shared_raw);
  T* shared_k = shared_q + S::kQElems;       // [2][kBlockN][kRow]
  T* shared_v = shared_k + 2 * S::kKVElems;  // [2][kBlockN][kRow]

  const int m_block = blockIdx.x, head = blockIdx.y, batch = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int q_start = 0, k_start = 0, seqlen_q = p.seqlen_q, seqlen_k = p.seqlen_k;
  if (p.cu_seqlens_q) {
    q_start = p.cu_seqlens_q[batch];
    seqlen_q = p.cu_seqlens_q[batch + 1] - q_start;
    k_start = p.cu_seqlens_k[batch];
    seqlen_k = p.cu_seqlens_k[batch + 1] - k_start;
  }
  const int row0 = m_block * kBlockM;
  if (row0 >= seqlen_q) return;
  const int kv_head = head / p.group;
  const T* q = static_cast<const T*>(p.q) + batch * p.q_batch_stride +
               (static_cast<long long>(q_start) + row0) * p.q_row_stride + head * p.q_head_stride;
  const T* k = static_cast<const T*>(p.k) + batch * p.k_batch_stride +
               static_cast<long long>(k_start) * p.k_row_stride + kv_head * p.k_head_stride;
  const T* v = static_cast<const T*>(p.v) + batch * p.v_batch_stride +
               static_cast<long long>(k_start) * p.v_row_stride + kv_head * p.v_head_stride;
  T* o = static_cast<T*>(p.out) + batch * p.o_batch_stride +
         (static_cast<long long>(q_start) + row0) * p.o_row_stride + head * p.o_head_stride;

  const int diagonal =
      seqlen_k - seqlen_q;  // bottom-right alignment: row r sees keys <= r + diagonal
  // Key blocks this query block needs: all, or up to the last key its last row may see.
  int key_blocks = (seqlen_k + kBlockN - 1) / kBlockN;
  if (kCausal) {
    const int visible = min(seqlen_k, row0 + kBlockM + diagonal);
    key_blocks = visible <= 0 ? 0 : min(key_blocks, (visible + kBlockN - 1) / kBlockN);
  }

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
    load_tile(shared_k + stage * S::kKVElems, k + first * p.k_row_stride, p.k_row_stride, kBlockN,
              seqlen_k - first);
    load_tile(shared_v + stage * S::kKVElems, v + first * p.v_row_stride, p.v_row_stride, kBlockN,
              seqlen_k - first);
  };
  load_tile(shared_q, q, p.q_row_stride, kBlockM, seqlen_q - row0);
  if (key_blocks > 0) load_kv(0, 0);
  ptx::cp_async_commit();

  float acc_o[kMTiles][S::kDimTiles][4] = {};
  float row_max[kMTiles][2];  // scaled, log2 domain
  float row_sum[kMTiles][2];  // this thread's share; the row's 4 threads add up at the end
#pragma unroll
  for (int m = 0; m < kMTiles; ++m) {
    row_max[m][0] = row_max[m][1] = negative_infinity();
    row_sum[m][0] = row_sum[m][1] = 0.f;
  }
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
    const int first_key = block * kBlockN;
#pragma unroll
    for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
      for (int j = 0; j < S::kKeyTiles; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = first_key + j * 8 + (lane % 4) * 2 + (e & 1);
          const int row = my_row + m * 16 + (e >= 2 ? 8 : 0);
          const bool visible = key < seqlen_k && (!kCausal || key <= row + diagonal);
          acc_s[m][j][e] = visible ? acc_s[m][j][e] * p.scale_log2 : negative_infinity();
        }
      }
    }

#pragma unroll
    for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float mx = row_max[m][h];
#pragma unroll
        for (int j = 0; j < S::kKeyTiles; ++j) {
          mx = fmaxf(mx, fmaxf(acc_s[m][j][2 * h], acc_s[m][j][2 * h + 1]));
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        // A row with no visible key yet keeps max -inf: exponentiate against 0 so that every
        // probability is exp2(-inf) = 0 rather than NaN.
        const float base = mx == negative_infinity() ? 0.f : mx;
        const float correction = exp2f(row_max[m][h] - base);
        row_max[m][h] = mx;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < S::kKeyTiles; ++j) {
          acc_s[m][j][2 * h] = exp2f(acc_s[m][j][2 * h] - base);
          acc_s[m][j][2 * h + 1] = exp2f(acc_s[m][j][2 * h + 1] - base);
          sum += acc_s[m][j][2 * h] + acc_s[m][j][2 * h + 1];
        }
        row_sum[m][h] = row_sum[m][h] * correction + sum;
#pragma unroll
        for (int d = 0; d < S::kDimTiles; ++d) {
          acc_o[m][d][2 * h] *= correction;
          acc_o[m][d][2 * h + 1] *= correction;
        }
      }
    }

    const T* tile_v = shared_v + stage * S::kKVElems;
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      // The S accumulators of key tiles 2kk and 2kk+1 are exactly P's A fragment for k = 16.
      unsigned a[kMTiles][4];
#pragma unroll
      for (int m = 0; m < kMTiles; ++m) {
        a[m][0] = ptx::pack_pair<T>(acc_s[m][2 * kk][0], acc_s[m][2 * kk][1]);
        a[m][1] = ptx::pack_pair<T>(acc_s[m][2 * kk][2], acc_s[m][2 * kk][3]);
        a[m][2] = ptx::pack_pair<T>(acc_s[m][2 * kk + 1][0], acc_s[m][2 * kk + 1][1]);
        a[m][3] = ptx::pack_pair<T>(acc_s[m][2 * kk + 1][2], acc_s[m][2 * kk + 1][3]);
      }
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
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = row_sum[m][h];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const int row = my_row + m * 16 + 8 * h;
      if (row >= seqlen_q) continue;
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      T* out_row = o + static_cast<long long>(row - row0) * p.o_row_stride;
#pragma unroll
      for (int d = 0; d < S::kDimTiles; ++d) {
        *reinterpret_cast<unsigned*>(out_row + d * 8 + (lane % 4) * 2) =
            ptx::pack_pair<T>(acc_o[m][d][2 * h] * inv, acc_o[m][d][2 * h + 1] * inv);
      }
      if (p.lse && lane % 4 == 0) {
        p.lse[batch * p.lse_batch_stride + head * p.lse_head_stride + q_start + row] =
            sum > 0.f ? (row_max[m][h] + log2f(sum)) * 0.69314718055994530942f
                      : negative_infinity();
      }
    }
  }
}

}  // namespace kjit::attention

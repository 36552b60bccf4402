// The pieces of a flash-attention forward that do not depend on the main loop: score masking,
// the online softmax, the P fragment for the P V product and the epilogue (O / rowsum, LSE).
// They work on what one thread holds of an m16 tile of query rows in the mma C layout, shared by
// mma.sync m16n8k16 and wgmma m64nNk16: s[j][e] is row lane/4 + 8 (e / 2) of the tile and column
// 8j + 2 (lane % 4) + e % 2; the four threads of a row (lanes 4r..4r+3) share its statistics.
#pragma once

#include "common/mma.cuh"
#include "common/numeric.cuh"

namespace kjit::attention {

// Running statistics of the thread's two rows (h = 0: row lane/4, h = 1: row lane/4 + 8).
struct RowPairStats {
  float max[2];  // max of the scaled scores seen so far, log2 domain; -inf before any key
  float sum[2];  // this thread's share of sum exp2(score - max)

  __device__ __forceinline__ void reset() {
    max[0] = max[1] = negative_infinity();
    sum[0] = sum[1] = 0.f;
  }
};

// Sets to -inf the scores of keys past the sequence end and, when causal, of keys after
// row + diagonal (bottom-right alignment: diagonal = seqlen_k - seqlen_q). `row` is the thread's
// first row and `first_key` the tile's first key, both within the sequence.
template <bool kCausal, int kKeyTiles>
__device__ __forceinline__ void mask_scores(float (&s)[kKeyTiles][4], int first_key, int row,
                                            int seqlen_k, int diagonal) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < kKeyTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = first_key + j * 8 + (lane % 4) * 2 + (e & 1);
      const int r = row + (e >= 2 ? 8 : 0);
      const bool visible = key < seqlen_k && (!kCausal || key <= r + diagonal);
      if (!visible) s[j][e] = negative_infinity();
    }
  }
}

// Folds a tile of raw scores into the running statistics and turns the scores into the
// unnormalised probabilities exp2(score * scale_log2 - max). correction[h] is the factor the
// output accumulated so far must be multiplied by: exactly 1 where the row's max stays. With
// kMaxSlack > 0 the running max moves only when a row's scores pass it by more than kMaxSlack
// (log2 units): probabilities then reach up to 2^kMaxSlack, still exact in fp32 sums and 16-bit
// P, and a loop may skip O's rescale wherever every correction is 1 (FlashAttention-4's
// conditional rescale).
template <int kKeyTiles, int kMaxSlack = 0>
__device__ __forceinline__ void online_softmax(float (&s)[kKeyTiles][4], RowPairStats& stats,
                                               float scale_log2, float (&correction)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float mx = negative_infinity();
#pragma unroll
    for (int j = 0; j < kKeyTiles; ++j)
      mx = fmaxf(mx, fmaxf(s[j][2 * h], s[j][2 * h + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float seen = mx * scale_log2;
    const float new_max = kMaxSlack == 0                    ? fmaxf(stats.max[h], seen)
                          : seen > stats.max[h] + kMaxSlack ? seen
                                                            : stats.max[h];
    // A row with no visible key yet keeps max -inf: exponentiate against 0 so that every
    // probability is exp2(-inf) = 0 rather than NaN.
    const float base = new_max == negative_infinity() ? 0.f : new_max;
    correction[h] = exp2_flush(stats.max[h] - base);
    stats.max[h] = new_max;
    float sum = 0.f;
#pragma unroll
    for (int j = 0; j < kKeyTiles; ++j) {
      s[j][2 * h] = exp2_flush(fmaf(s[j][2 * h], scale_log2, -base));
      s[j][2 * h + 1] = exp2_flush(fmaf(s[j][2 * h + 1], scale_log2, -base));
      sum += s[j][2 * h] + s[j][2 * h + 1];
    }
    stats.sum[h] = stats.sum[h] * correction[h] + sum;
  }
}

template <int kDimTiles>
__device__ __forceinline__ void rescale_rows(float (&o)[kDimTiles][4], const float (&c)[2]) {
#pragma unroll
  for (int d = 0; d < kDimTiles; ++d) {
    o[d][0] *= c[0];
    o[d][1] *= c[0];
    o[d][2] *= c[1];
    o[d][3] *= c[1];
  }
}

// The probabilities of key tiles 2kk and 2kk + 1 rounded to T: exactly the A fragment
// (16 rows x 16 keys) of the P V product.
template <class T, int kKeyTiles>
__device__ __forceinline__ void probability_fragment(const float (&p)[kKeyTiles][4], int kk,
                                                     unsigned (&a)[4]) {
  a[0] = ptx::pack_pair<T>(p[2 * kk][0], p[2 * kk][1]);
  a[1] = ptx::pack_pair<T>(p[2 * kk][2], p[2 * kk][3]);
  a[2] = ptx::pack_pair<T>(p[2 * kk + 1][0], p[2 * kk + 1][1]);
  a[3] = ptx::pack_pair<T>(p[2 * kk + 1][2], p[2 * kk + 1][3]);
}

// Writes the thread's two rows of O / rowsum (0 for a row that saw no key) and, when `lse` is
// set, their natural-log LSE (-inf for such a row). `out` and `lse` point at the thread's first
// row; rows at or past `rows_left` are not written.
template <class T, int kDimTiles>
__device__ __forceinline__ void store_rows(const float (&o)[kDimTiles][4], const RowPairStats& st,
                                           T* out, long long row_stride, float* lse,
                                           int rows_left) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float sum = st.sum[h];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    if (8 * h >= rows_left) continue;
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    T* row = out + 8 * h * row_stride;
#pragma unroll
    for (int d = 0; d < kDimTiles; ++d) {
      *reinterpret_cast<unsigned*>(row + d * 8 + (lane % 4) * 2) =
          ptx::pack_pair<T>(o[d][2 * h] * inv, o[d][2 * h + 1] * inv);
    }
    if (lse && lane % 4 == 0) {
      lse[8 * h] =
          sum > 0.f ? (st.max[h] + log2f(sum)) * 0.69314718055994530942f : negative_infinity();
    }
  }
}

}  // namespace kjit::attention

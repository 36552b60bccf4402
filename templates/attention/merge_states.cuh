// Merges N partial attention results into one, exactly: with m = max_i lse_i and
// w_i = exp(lse_i - m), out = sum_i w_i o_i / sum_i w_i and lse = m + log(sum_i w_i).
// A row whose parts are all -inf (no key seen anywhere) gives out = 0 and lse = -inf.
// One group of kThreadsPerRow threads per (token, head) row, kRowsPerBlock rows per block, each
// thread moving kVec elements per access and reading all N parts before accumulating in fp32.
#pragma once

#include "attention/merge_states_params.h"
#include "common/numeric.cuh"

namespace kjit::attention {

template <class T, int kDim, int kParts, int kVec, int kThreadsPerRow, int kRowsPerBlock>
__global__ void __launch_bounds__(kThreadsPerRow* kRowsPerBlock)
    merge_states(const KjitMergeStatesParams p) {
  static_assert(kDim % kVec == 0, "the head dim must be a multiple of the vector width");
  const long long row =
      static_cast<long long>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kThreadsPerRow;
  const int lane = threadIdx.x % kThreadsPerRow;
  if (row >= p.rows) return;
  const long long token = row / p.heads;
  const long long head = row % p.heads;

  float weight[kParts];
  float max_lse = negative_infinity();
#pragma unroll
  for (int i = 0; i < kParts; ++i) {
    weight[i] =
        p.parts_lse[i * p.lse_part_stride + token * p.lse_token_stride + head * p.lse_head_stride];
    max_lse = fmaxf(max_lse, weight[i]);
  }
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kParts; ++i) {
    // exp(-inf - m) = 0 for a part that saw nothing; all -inf leaves every weight 0.
    weight[i] = max_lse == negative_infinity() ? 0.f : expf(weight[i] - max_lse);
    sum += weight[i];
  }
  const float scale = sum > 0.f ? 1.f / sum : 0.f;

  const T* parts = static_cast<const T*>(p.parts) + token * p.token_stride + head * p.head_stride;
  T* out = static_cast<T*>(p.out) + token * p.out_token_stride + head * p.out_head_stride;
  for (int col = lane * kVec; col < kDim; col += kThreadsPerRow * kVec) {
    Pack<T, kVec> in[kParts];
#pragma unroll
    for (int i = 0; i < kParts; ++i) {
      in[i].access =
          *reinterpret_cast<const decltype(in[i].access)*>(parts + i * p.part_stride + col);
    }
    float acc[kVec] = {};
#pragma unroll
    for (int i = 0; i < kParts; ++i) {
#pragma unroll
      for (int v = 0; v < kVec; ++v)
        acc[v] += weight[i] * to_float(in[i].values[v]);
    }
    Pack<T, kVec> result;
#pragma unroll
    for (int v = 0; v < kVec; ++v)
      result.values[v] = from_float<T>(acc[v] * scale);
    *reinterpret_cast<decltype(result.access)*>(out + col) = result.access;
  }
  if (p.out_lse && lane == 0) {
    p.out_lse[token * p.out_lse_token_stride + head * p.out_lse_head_stride] =
        sum > 0.f ? max_lse + logf(sum) : negative_infinity();
  }
}

}  // namespace kjit::attention

// The MoE router: per token, scores from the logits (softmax over the experts, or a sigmoid
// each), a choice score = score + bias (the bias only chooses), DeepSeek's grouped restriction
// (a group's score is the sum of its two best choice scores; only the kTopkGroups best groups
// compete), the kTopK best choice scores, their unbiased scores as weights (renormalised to sum
// to one when kRenormalize), times the scaling factor. One warp per token; lane l holds experts
// l, l + 32, ...; every ranking breaks ties to the lower expert (or group) id, as the reference
// does (tests/reference/moe_reference).
#pragma once

#include "common/numeric.cuh"
#include "moe/router_topk_params.h"

namespace kjit::moe {

// The better of two (value, id) candidates: higher value, then lower id.
__device__ __forceinline__ void keep_better(float& value, int& id, float other_value,
                                            int other_id) {
  if (other_value > value || (other_value == value && other_id < id)) {
    value = other_value;
    id = other_id;
  }
}

// The warp's best candidate, on every lane (higher value, then lower id; a NaN value counts as
// -inf, though the router's choices never hold one): two warp reductions (redux.sync) instead of
// a shuffle tree, the first over an integer key that orders as the values do (-0 taken as +0),
// the second over the ids holding the best key.
__device__ __forceinline__ void warp_best(float& value, int& id) {
  const float v = isnan(value) ? negative_infinity() : value == 0.f ? 0.f : value;
  const unsigned bits = __float_as_uint(v);
  const unsigned key = bits & 0x80000000u ? ~bits : bits | 0x80000000u;
  const unsigned best = __reduce_max_sync(0xffffffffu, key);
  id = static_cast<int>(
      __reduce_min_sync(0xffffffffu, key == best ? static_cast<unsigned>(id) : 0xffffffffu));
  value = __uint_as_float(best & 0x80000000u ? best & 0x7fffffffu : ~best);
}

template <class T, int kExperts, int kTopK, bool kSigmoid, int kGroups, int kTopkGroups,
          bool kRenormalize>
__global__ void __launch_bounds__(256) router_topk(const KjitRouterParams p) {
  constexpr int kPer = (kExperts + 31) / 32, kPerGroup = kExperts / kGroups;
  static_assert(kExperts % kGroups == 0 && kTopK <= 32 && kTopkGroups <= kGroups, "router shape");
  const int lane = threadIdx.x % 32;
  const long long token = static_cast<long long>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (token >= p.tokens) return;
  const T* logits = static_cast<const T*>(p.logits) + token * p.logits_stride;

  float score[kPer], choice[kPer];
  float max = negative_infinity();
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int e = lane + 32 * i;
    score[i] = e < kExperts ? to_float(logits[e]) : negative_infinity();
    max = fmaxf(max, score[i]);
  }
  if constexpr (kSigmoid) {
#pragma unroll
    for (int i = 0; i < kPer; ++i)
      score[i] = lane + 32 * i < kExperts ? 1.f / (1.f + __expf(-score[i])) : 0.f;
  } else {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2)
      max = fmaxf(max, __shfl_xor_sync(0xffffffffu, max, offset));
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      score[i] = lane + 32 * i < kExperts ? __expf(score[i] - max) : 0.f;
      sum += score[i];
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2)
      sum += __shfl_xor_sync(0xffffffffu, sum, offset);
#pragma unroll
    for (int i = 0; i < kPer; ++i)
      score[i] /= sum;
  }
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int e = lane + 32 * i;
    const float c = score[i] + (e < kExperts && p.bias ? p.bias[e] : 0.f);
    choice[i] = e < kExperts && !isnan(c) ? c : negative_infinity();  // NaN never wins
  }

  if constexpr (kGroups > 1) {
    // Each group's two best choice scores, summed; then the kTopkGroups best groups.
    float group_score[kGroups];
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      float total = 0.f;
      int taken = -1;
#pragma unroll
      for (int round = 0; round < (kPerGroup >= 2 ? 2 : 1); ++round) {
        float best = negative_infinity();
        int id = 1 << 30;
#pragma unroll
        for (int i = 0; i < kPer; ++i) {
          const int e = lane + 32 * i;
          if (e / kPerGroup == g && e != taken) keep_better(best, id, choice[i], e);
        }
        warp_best(best, id);
        total += best;
        taken = id;
      }
      group_score[g] = total;
    }
    bool kept[kGroups] = {};
#pragma unroll
    for (int round = 0; round < kTopkGroups; ++round) {
      float best = negative_infinity();
      int id = 1 << 30;
#pragma unroll
      for (int g = 0; g < kGroups; ++g) {
        if (!kept[g]) keep_better(best, id, group_score[g], g);
      }
#pragma unroll
      for (int g = 0; g < kGroups; ++g)
        kept[g] = kept[g] || g == id;
    }
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int e = lane + 32 * i;
      bool allowed = false;
#pragma unroll
      for (int g = 0; g < kGroups; ++g)
        allowed = allowed || (kept[g] && e / kPerGroup == g);
      if (!allowed) choice[i] = negative_infinity();
    }
  }

  // kTopK rounds of the warp's best remaining choice; lane j keeps round j's expert. Taken
  // experts and the padding past kExperts never compete, so the k ids are distinct experts even
  // where fewer than k choices are finite.
  int my_id = 0;
  float my_weight = 0.f, total = 0.f;
  unsigned taken = 0;  // bit i: expert lane + 32 i
#pragma unroll 1
  for (int j = 0; j < kTopK; ++j) {
    float best = negative_infinity();
    int id = 1 << 30;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      if (lane + 32 * i < kExperts && !(taken >> i & 1u))
        keep_better(best, id, choice[i], lane + 32 * i);
    }
    warp_best(best, id);
    float weight = 0.f;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      if (lane + 32 * i == id) {
        weight = score[i];
        taken |= 1u << i;
      }
    }
    weight = __shfl_sync(0xffffffffu, weight, id % 32);
    total += weight;
    if (lane == j) {
      my_id = id;
      my_weight = weight;
    }
  }
  if (lane < kTopK) {
    if constexpr (kRenormalize) my_weight /= total + 1e-20f;
    p.ids[token * p.ids_stride + lane] = my_id;
    p.weights[token * p.weights_stride + lane] = my_weight * p.scaling;
  }
}

}  // namespace kjit::moe

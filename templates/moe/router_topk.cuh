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

// An integer key that orders as the floats do (a NaN as -inf, -0 as +0); 0 is below every key.
__device__ __forceinline__ unsigned order_key(float value) {
  const float v = isnan(value) ? negative_infinity() : value == 0.f ? 0.f : value;
  const unsigned bits = __float_as_uint(v);
  return bits & 0x80000000u ? ~bits : bits | 0x80000000u;
}

__device__ __forceinline__ float key_value(unsigned key) {
  return __uint_as_float(key & 0x80000000u ? key & 0x7fffffffu : ~key);
}

// The warp's best candidate, on every lane (higher value, then lower id; a NaN value counts as
// -inf, though the router's choices never hold one): two warp reductions (redux.sync) instead of
// a shuffle tree, the first over the values' keys, the second over the ids holding the best key.
__device__ __forceinline__ void warp_best(float& value, int& id) {
  const unsigned key = order_key(value);
  const unsigned best = __reduce_max_sync(0xffffffffu, key);
  id = static_cast<int>(
      __reduce_min_sync(0xffffffffu, key == best ? static_cast<unsigned>(id) : 0xffffffffu));
  value = key_value(best);
}

template <class T, int kExperts, int kTopK, bool kSigmoid, int kGroups, int kTopkGroups,
          bool kRenormalize>
__global__ void __launch_bounds__(256) router_topk(const KjitRouterParams p) {
  constexpr int kPer = (kExperts + 31) / 32, kPerGroup = kExperts / kGroups;
  static_assert(
      kExperts % kGroups == 0 && kExperts <= 1024 && kTopK <= 32 && kTopkGroups <= kGroups,
      "router shape (a lane's taken experts are bits of one word: E <= 1024)");
  const int lane = threadIdx.x % 32;
  const long long token = static_cast<long long>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (token >= p.tokens) return;
  const T* logits = static_cast<const T*>(p.logits) + token * p.logits_stride;

  float score[kPer], choice[kPer];
  float max = negative_infinity(), inverse_sum = 1.f;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int e = lane + 32 * i;
    score[i] = e < kExperts ? to_float(logits[e]) : negative_infinity();
    max = fmaxf(max, score[i]);
  }
  // A score from its logit; the same arithmetic gives the chosen experts' weights below.
  auto score_of = [&](float logit) {
    if constexpr (kSigmoid) {
      return 1.f / (1.f + __expf(-logit));
    } else {
      return __expf(logit - max) * inverse_sum;
    }
  };
  if constexpr (!kSigmoid) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2)
      max = fmaxf(max, __shfl_xor_sync(0xffffffffu, max, offset));
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < kPer; ++i)
      sum += lane + 32 * i < kExperts ? __expf(score[i] - max) : 0.f;
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2)
      sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    inverse_sum = 1.f / sum;
  }
#pragma unroll
  for (int i = 0; i < kPer; ++i)
    score[i] = lane + 32 * i < kExperts ? score_of(score[i]) : 0.f;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    const int e = lane + 32 * i;
    const float c = score[i] + (e < kExperts && p.bias ? p.bias[e] : 0.f);
    choice[i] = e < kExperts && !isnan(c) ? c : negative_infinity();  // NaN never wins
  }

  if constexpr (kGroups > 1) {
    // Each group's score, vLLM's grouped_topk: with a correction bias its two best choice scores
    // summed (DeepSeek-V3), without one its best (DeepSeek-V2); then the kTopkGroups best groups.
    const int group_rounds = kPerGroup >= 2 && p.bias != nullptr ? 2 : 1;
    float group_score[kGroups];
#pragma unroll
    for (int g = 0; g < kGroups; ++g) {
      float total = 0.f;
      int taken = -1;
#pragma unroll
      for (int round = 0; round < 2; ++round) {
        if (round >= group_rounds) break;
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

  // kTopK rounds of the warp's best remaining choice, ties to the lower id; lane j keeps round
  // j's expert. A round is two warp reductions over the lanes' best remaining candidates: each
  // lane caches its best two (by key, then slot) and scans its candidates again only when a round
  // takes the second (rare: k rounds spread over 32 lanes). Taken experts and the padding past
  // kExperts (key 0) never compete, so the k ids are distinct experts even where fewer than k
  // choices are finite.
  unsigned key[kPer];
#pragma unroll
  for (int i = 0; i < kPer; ++i)
    key[i] = lane + 32 * i < kExperts ? order_key(choice[i]) : 0u;
  unsigned taken = 0;  // bit i: expert lane + 32 i
  unsigned first_key, second_key;
  int first_slot, second_slot, popped;
  auto fill_cache = [&] {
    first_key = second_key = 0u;
    first_slot = second_slot = popped = 0;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const unsigned k = taken >> i & 1u ? 0u : key[i];
      const bool first = k > first_key, second = !first && k > second_key;
      second_key = first ? first_key : second ? k : second_key;
      second_slot = first ? first_slot : second ? i : second_slot;
      first_key = first ? k : first_key;
      first_slot = first ? i : first_slot;
    }
  };
  fill_cache();
  int my_id = 0;
#pragma unroll 1
  for (int j = 0; j < kTopK; ++j) {
    const unsigned best = __reduce_max_sync(0xffffffffu, first_key);
    const int mine = lane + 32 * first_slot;
    const int winner = static_cast<int>(__reduce_min_sync(
        0xffffffffu, first_key == best ? static_cast<unsigned>(mine) : 0xffffffffu));
    if (mine == winner) {
      taken |= 1u << first_slot;
      first_key = second_key;
      first_slot = second_slot;
      second_key = 0u;
      ++popped;
    }
    if (lane == j) my_id = winner;
    if (__any_sync(0xffffffffu, popped == 2) && popped == 2) fill_cache();
  }
  // The chosen experts' unbiased scores, from their logits again (lane j: round j's).
  float my_weight = lane < kTopK ? score_of(to_float(logits[my_id])) : 0.f;
  if constexpr (kRenormalize) {
    float total = my_weight;
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2)
      total += __shfl_xor_sync(0xffffffffu, total, offset);
    my_weight /= total + 1e-20f;
  }
  if (lane < kTopK) {
    p.ids[token * p.ids_stride + lane] = my_id;
    p.weights[token * p.weights_stride + lane] = my_weight * p.scaling;
  }
}

}  // namespace kjit::moe

// MoE load statistics and balancing losses, deterministic (every sum in a fixed order):
//  - moe_balance_partials: one block per (chunk of chunk_tokens tokens, sequence); thread e..
//    counts the chunk's pairs routed to expert e and sums its probabilities in token order; each
//    warp then takes tokens w, w + 8, .. and adds logsumexp(logits)^2 in order (the z-loss).
//  - moe_balance_finish: one block, a thread an expert, folds the partials in (sequence, chunk)
//    order into counts, f_i = counts_i / (k T) and P_i = mean probability, the Switch/GShard aux
//    loss a E sum_i f_i P_i, its per-sequence mean (DeepSeek's sequence-wise variant, over
//    non-empty sequences), the router z-loss c mean_t lse_t^2, MaxVio = (max_i counts_i - mean) /
//    mean with mean = k T / E, and, when asked, DeepSeek's bias update b_i += rate sign(mean -
//    counts_i).
#pragma once

#include "common/numeric.cuh"
#include "moe/balance_params.h"

namespace kjit::moe {

// Sequence s's tokens [begin, end), clamped to [0, T) (cu_seqlens are device data).
__device__ __forceinline__ void sequence_range(const KjitMoeBalanceParams& p, int s, int& begin,
                                               int& end) {
  begin = p.cu_seqlens ? min(max(p.cu_seqlens[s], 0), p.tokens) : 0;
  end = p.cu_seqlens ? min(max(p.cu_seqlens[s + 1], begin), p.tokens) : p.tokens;
}

template <class TLogits>
__global__ void __launch_bounds__(256) moe_balance_partials(const KjitMoeBalanceParams p) {
  const int chunk = blockIdx.x, seq = blockIdx.y;
  int seq_begin, seq_end;
  sequence_range(p, seq, seq_begin, seq_end);
  const int begin = seq_begin + chunk * p.chunk_tokens;
  const int end = min(seq_end, begin + p.chunk_tokens);
  const long long part = static_cast<long long>(seq) * p.chunks + chunk;
  for (int e = threadIdx.x; e < p.experts; e += blockDim.x) {
    int count = 0;
    float sum = 0.f;
    for (int t = begin; t < end; ++t) {
      const int* ids = p.ids + static_cast<long long>(t) * p.top_k;
      for (int j = 0; j < p.top_k; ++j)
        count += ids[j] == e;
      sum += p.probs[t * p.probs_stride + e];
    }
    p.part_counts[part * p.experts + e] = count;
    p.part_probs[part * p.experts + e] = sum;
  }
  if (!p.logits) return;
  __shared__ float warp_z[8];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float z = 0.f;
  for (int t = begin + warp; t < end; t += 8) {
    const TLogits* row = static_cast<const TLogits*>(p.logits) + t * p.logits_stride;
    float max = negative_infinity();
    for (int e = lane; e < p.experts; e += 32)
      max = fmaxf(max, to_float(row[e]));
    for (int d = 16; d > 0; d /= 2)
      max = fmaxf(max, __shfl_xor_sync(0xffffffffu, max, d));
    float sum = 0.f;
    for (int e = lane; e < p.experts; e += 32)
      sum += __expf(to_float(row[e]) - max);
    for (int d = 16; d > 0; d /= 2)
      sum += __shfl_xor_sync(0xffffffffu, sum, d);
    const float lse = max + __logf(sum);
    z += lse * lse;
  }
  if (lane == 0) warp_z[warp] = z;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.f;
    for (int w = 0; w < blockDim.x / 32; ++w)
      total += warp_z[w];
    p.part_z[part] = total;
  }
}

// The block's sum (or max) of one value a thread, in a fixed order; every thread gets it.
template <bool kMax>
__device__ __forceinline__ float block_reduce(float v, float* scratch) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int d = 16; d > 0; d /= 2) {
    const float o = __shfl_xor_sync(0xffffffffu, v, d);
    v = kMax ? fmaxf(v, o) : v + o;
  }
  __syncthreads();  // scratch is free (an earlier reduction read it)
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = scratch[0];
  for (int w = 1; w < warps; ++w)
    total = kMax ? fmaxf(total, scratch[w]) : total + scratch[w];
  return total;
}

__global__ void __launch_bounds__(1024) moe_balance_finish(const KjitMoeBalanceParams p) {
  __shared__ float scratch[32];
  const int e = threadIdx.x;
  const bool mine = e < p.experts;
  int count = 0;
  float prob = 0.f, seq_aux = 0.f;
  int non_empty = 0;
  bool truncated = false;
  for (int s = 0; s < p.sequences; ++s) {
    int begin, end;
    sequence_range(p, s, begin, end);
    const int length = end - begin;
    // A sequence longer than the caller's max_seqlen had tokens no chunk read: the statistics
    // are not the batch's, and the losses say so with NaN rather than a plausible value.
    truncated |= length > p.chunks * p.chunk_tokens;
    int seq_count = 0;
    float seq_prob = 0.f;
    for (int c = 0; c < p.chunks && mine; ++c) {
      const long long part = (static_cast<long long>(s) * p.chunks + c) * p.experts + e;
      seq_count += p.part_counts[part];
      seq_prob += p.part_probs[part];
    }
    count += seq_count;
    prob += seq_prob;
    if (length <= 0) continue;  // uniform: every thread skips the same sequences
    const float fp = mine ? static_cast<float>(seq_count) / (static_cast<float>(p.top_k) * length) *
                                (seq_prob / length)
                          : 0.f;
    seq_aux += block_reduce<false>(fp, scratch);
    ++non_empty;
  }
  const float pairs = static_cast<float>(p.top_k) * p.tokens;
  const float f = p.tokens > 0 ? count / pairs : 0.f;
  const float mean_prob = p.tokens > 0 ? prob / p.tokens : 0.f;
  if (mine) {
    p.counts[e] = count;
    p.f[e] = f;
    p.p[e] = mean_prob;
  }
  const float aux = block_reduce<false>(mine ? f * mean_prob : 0.f, scratch);
  const float max_count = block_reduce<true>(mine ? static_cast<float>(count) : 0.f, scratch);
  const float mean_load = pairs / p.experts;
  if (mine && p.bias) {
    const float gap = mean_load - static_cast<float>(count);
    p.bias[e] += p.bias_rate * static_cast<float>((gap > 0.f) - (gap < 0.f));
  }
  if (threadIdx.x == 0 && truncated) {
    for (int i = 0; i < 4; ++i)
      p.losses[i] = __int_as_float(0x7fffffff);
  } else if (threadIdx.x == 0) {
    float z = 0.f;
    for (long long part = 0; part < static_cast<long long>(p.sequences) * p.chunks; ++part)
      z += p.logits ? p.part_z[part] : 0.f;
    p.losses[0] = p.aux_coeff * p.experts * aux;
    p.losses[1] = non_empty > 0 ? p.aux_coeff * p.experts * seq_aux / non_empty : 0.f;
    p.losses[2] = p.tokens > 0 ? p.z_coeff * z / p.tokens : 0.f;
    p.losses[3] = p.tokens > 0 ? (max_count - mean_load) / mean_load : 0.f;
  }
}

}  // namespace kjit::moe

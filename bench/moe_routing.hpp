// The MoE benchmarks' routing: router logits in [-1, 1) from a multiplicative hash of their index,
// bit for bit the same in bench/moe_layer_torch.py (the routing decides how many experts' weights a
// call reads, and how full each expert's last block is); no two of a token's logits tie (1048573 is
// prime, a token's indices consecutive). And the experts that GLM-4.7-Flash's router picks from
// them with a zero bias (sigmoid is monotonic: the k largest logits), on the host.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace kjit::bench {

inline std::vector<float> hashed_router_logits(long long tokens, int experts) {
  std::vector<float> logits(static_cast<std::size_t>(tokens) * experts);
  for (std::size_t i = 0; i < logits.size(); ++i)
    logits[i] = static_cast<float>((i * 2654435761u) % 1048573) / 524286.5f - 1.f;
  return logits;
}

// [tokens * k]: token t's k experts, largest logit first.
inline std::vector<std::int32_t> top_k_experts(const std::vector<float>& logits, int experts,
                                               int k) {
  const std::size_t tokens = logits.size() / experts;
  std::vector<std::int32_t> ids(tokens * k), order(experts);
  for (std::size_t t = 0; t < tokens; ++t) {
    const float* row = logits.data() + t * experts;
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [row](int a, int b) {
      return row[a] > row[b] || (row[a] == row[b] && a < b);
    });
    std::copy(order.begin(), order.begin() + k, ids.begin() + t * k);
  }
  return ids;
}

}  // namespace kjit::bench

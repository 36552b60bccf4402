#include "ops/attention/grouped_inputs.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "ops/attention/attention_inputs.hpp"

namespace kjit::ops {
namespace {

// windows: int32 [B, 2] contiguous; per sequence 0 <= begin <= end <= its keys. Returns the
// longest window.
std::int64_t check_windows(const attention::AttentionGroup& g, const std::int32_t* cu_k,
                           std::int64_t batch, const TensorChecks& checks) {
  const TensorView& w = g.windows;
  if (w.dtype != DType::Int32 || w.ndim != 2 || w.size(0) != batch || w.size(1) != 2 ||
      w.stride(1) != 1 || w.stride(0) != 2) {
    checks.fail(
        fmt::format("windows must be contiguous int32 [{}, 2] (begin, end per sequence), "
                    "got {}",
                    batch, w.describe()));
  }
  checks.data(w, "windows");
  if (!g.host_windows)
    checks.fail("the host copy of windows is a null pointer (kjit validates it on the host)");
  std::int64_t longest = 0;
  for (std::int64_t b = 0; b < batch; ++b) {
    const std::int32_t begin = g.host_windows[2 * b], end = g.host_windows[2 * b + 1];
    const std::int32_t keys = cu_k[b + 1] - cu_k[b];
    if (begin < 0 || begin > end || end > keys) {
      checks.fail(fmt::format("sequence {}: window [{}, {}) is not a range inside its {} keys", b,
                              begin, end, keys));
    }
    longest = std::max<std::int64_t>(longest, end - begin);
  }
  return longest;
}

}  // namespace

TensorView group_slice(const TensorView& whole, std::int64_t g) {
  const std::vector<std::int64_t> shape(whole.shape.begin() + 1, whole.shape.begin() + whole.ndim);
  auto* data = static_cast<char*>(whole.data) +
               g * whole.stride(0) * static_cast<std::int64_t>(dtype_size(whole.dtype));
  return TensorView(data, whole.dtype, shape);
}

attention::Varlen varlen_of(const attention::AttentionGroup& group,
                            const attention::SharedKeys& keys) {
  return {group.cu_seqlens_q, keys.cu_seqlens_k, group.host_cu_seqlens_q, keys.host_cu_seqlens_k};
}

GroupedShape check_groups(const attention::AttentionGroup* groups, int group_count,
                          const attention::SharedKeys& keys, bool backward) {
  if (group_count < 1 || group_count > attention::kMaxGroups) {
    kAttentionCheck.fail(fmt::format("grouped attention takes 1 to {} groups, got {}",
                                     attention::kMaxGroups, group_count));
  }
  if (!groups) kAttentionCheck.fail("groups is a null pointer");
  GroupedShape shape;
  for (int g = 0; g < group_count; ++g) {
    const std::string label = fmt::format("attention group {}", g);
    const TensorChecks checks(label.c_str());
    const attention::AttentionGroup& group = groups[g];
    check_attention_tensors(group.q, keys.k, keys.v, group.out, 3, checks);
    if (keys.v.size(0) != keys.k.size(0)) {
      kAttentionCheck.fail(
          fmt::format("v must have k's {} tokens, got {}", keys.k.size(0), keys.v.size(0)));
    }
    const LongestSequences longest =
        check_varlen(varlen_of(group, keys), group.q.size(0), keys.k.size(0), checks);
    const std::int64_t batch = group.cu_seqlens_q.size(0) - 1;
    if (g == 0) {
      shape.batch = batch;
      shape.heads_q = group.q.size(1);
      shape.heads_k = keys.k.size(1);
      shape.head_dim = group.q.size(2);
    } else if (group.q.dtype != groups[0].q.dtype || group.q.size(1) != shape.heads_q ||
               group.q.size(2) != shape.head_dim) {
      checks.fail(fmt::format("q {} must have group 0's dtype, heads and head dim ({})",
                              group.q.describe(), groups[0].q.describe()));
    }
    shape.longest_q = std::max(shape.longest_q, longest.q);
    shape.longest_k = longest.k;
    shape.longest_window =
        std::max(shape.longest_window, check_windows(group, keys.host_cu_seqlens_k, batch, checks));
    const std::int64_t tokens = group.q.size(0);
    if (backward) {
      check_like(group.dout, "dout", group.q, "q", 3, checks);
      check_like(group.dq, "dq", group.q, "q", 3, checks);
    }
    if ((backward && tokens > 0) || group.lse.data) {
      check_lse(group.lse, 1, shape.heads_q, tokens, false, backward ? "the forward's " : "",
                checks);
      if (backward) checks.data(group.lse, "lse");
    }
  }
  return shape;
}

}  // namespace kjit::ops

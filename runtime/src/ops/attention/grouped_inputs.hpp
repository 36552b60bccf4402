// The input rules of grouped attention (kjit::attention::forward_grouped / backward_grouped):
// one to kMaxGroups groups of one dtype, head count and head dim over the shared keys, each
// group's cu_seqlens_q over the keys' B sequences and its windows inside them, all checked on
// the caller's host copies. Errors name the group ("attention group 2: ...") and, for
// windows, the sequence.
#pragma once

#include <cstdint>

#include "kjit/attention.hpp"

namespace kjit::ops {

struct GroupedShape {
  std::int64_t batch = 0, heads_q = 0, heads_k = 0, head_dim = 0;
  std::int64_t longest_q = 0;       // the longest query segment of any group and sequence
  std::int64_t longest_window = 0;  // the longest window
  std::int64_t longest_k = 0;       // the longest key sequence
};

// The forward's tensors (q, out, lse when given), or with `backward` also dout, dq and the
// required lse.
GroupedShape check_groups(const attention::AttentionGroup* groups, int group_count,
                          const attention::SharedKeys& keys, bool backward);

// Group g's slice of a contiguous tensor whose first dim is the group (the tuner's workloads).
TensorView group_slice(const TensorView& whole, std::int64_t g);

// The group's packed sequences over the shared keys, as a plain varlen call sees them.
attention::Varlen varlen_of(const attention::AttentionGroup& group,
                            const attention::SharedKeys& keys);

}  // namespace kjit::ops

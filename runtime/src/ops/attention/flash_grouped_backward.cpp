#include "ops/attention/flash_grouped_backward.hpp"

#include <algorithm>
#include <optional>

#include <fmt/format.h>

#include "driver/stream_allocation.hpp"
#include "ops/attention/attention_inputs.hpp"
#include "ops/attention/flash_grouped_forward.hpp"
#include "ops/attention/grouped_inputs.hpp"
#include "ops/dispatch.hpp"

namespace kjit::ops {

std::vector<GroupedBackward::Config> GroupedBackward::space(const Problem& p, const Arch& arch) {
  std::vector<Config> out;
  for (const Config& c : FlashBackward::space(per_group(p), arch)) {
    if (c.dq_atomic) out.push_back(c);
  }
  return out;
}

bool GroupedBackward::valid(const Config& c, const Problem& p, const Arch& arch) {
  // The wgmma main loop keeps its table of the groups' query tiles in static shared memory
  // (flash_backward_sm90.cuh's BlockSteps<16>: 720 bytes as compiled) beside the dynamic part.
  constexpr unsigned kStepTableBytes = 720;
  const FlashBackward::Problem plain = per_group(p);
  return c.dq_atomic == 1 && FlashBackward::valid(c, plain, arch) &&
         (!c.wgmma() ||
          FlashBackward::shared_bytes(c, plain) + kStepTableBytes <= arch.max_shared_bytes());
}

GroupedBackward::Config GroupedBackward::default_config(const Problem& p, const Arch& arch) {
  Config c = FlashBackward::default_config(per_group(p), arch);
  c.dq_atomic = 1;  // the dq pass walks one group's keys: the atomics serve every group at once
  return c;
}

void GroupedBackward::launch(const Program& program, const Config& c, const Problem& p,
                             const Args& call_args, StreamHandle stream) {
  const FlashBackward::Problem plain = per_group(p);
  if (plain.empty()) return;
  Args args = call_args;
  // A group without queries has an empty workspace part (its pointers are the next group's, or
  // the end): its prep would write the stats slack there. It has nothing to prepare or store.
  for (int g = 0; g < args.groups; ++g) {
    FlashBackward::encode_maps(args.group[g], c, plain);
    if (args.group[g].tokens_q > 0)
      FlashBackward::launch_prep(program, plain, args.group[g], stream);
  }
  if (p.seqlen_k > 0) {
    const LaunchConfig grid = FlashBackward::main_grid(c, plain, stream);
    program.kernel_at(FlashBackward::main_kernel(grid)).launch(grid, args);
  }
  for (int g = 0; g < args.groups; ++g) {
    if (args.group[g].tokens_q > 0)
      FlashBackward::launch_dq(program, c, plain, args.group[g], stream);
  }
}

std::vector<GroupedBackward::Problem> GroupedBackward::shipped(const Arch& arch) {
  std::vector<Problem> out;
  for (const FlashBackward::Problem& f : FlashBackward::shipped(arch)) {
    if (!f.deterministic) {
      out.push_back({f.dtype, 2, f.batch, f.heads_q, f.heads_k, f.head_dim, f.seqlen_q, f.seqlen_k,
                     f.causal});
    }
  }
  return out;
}

std::vector<TensorSpec> GroupedBackward::tensors(const Problem& p) {
  using Role = TensorSpec::Role;
  std::vector<TensorSpec> t = FlashBackward::tensors(per_group(p));
  // q, out, dout, lse and dq gain the group dim in front; the workspace is one per group.
  for (const char* name : {"q", "out", "dout", "lse", "dq"}) {
    auto it = std::find_if(t.begin(), t.end(),
                           [&](const TensorSpec& s) { return std::string(s.name) == name; });
    it->shape.insert(it->shape.begin(), p.groups);
  }
  t.back() = {"workspace",
              DType::UInt8,
              {p.groups * static_cast<std::int64_t>(FlashBackward::workspace_bytes(
                              p.batch * p.seqlen_q, p.heads_q, p.head_dim, false))},
              Role::Scratch};
  return t;
}

GroupedBackward::Args GroupedBackward::args(const Problem& p, const std::vector<TensorView>& t) {
  attention::BackwardOptions o;
  o.causal = p.causal;

  const std::size_t per_group_bytes =
      FlashBackward::workspace_bytes(p.batch * p.seqlen_q, p.heads_q, p.head_dim, false);
  Args a{};
  a.groups = static_cast<int>(p.groups);
  for (std::int64_t g = 0; g < p.groups; ++g) {
    a.group[g] =
        FlashBackward::validate(group_slice(t.at(0), g), t.at(1), t.at(2), group_slice(t.at(3), g),
                                group_slice(t.at(4), g), group_slice(t.at(5), g),
                                group_slice(t.at(6), g), t.at(7), t.at(8), o)
            .args;
    FlashBackward::attach_workspace(a.group[g],
                                    static_cast<char*>(t.at(9).data) + g * per_group_bytes,
                                    p.batch * p.seqlen_q, p.head_dim, false);
  }
  return a;
}

std::vector<Preset<GroupedBackward::Problem>> GroupedBackward::presets() {
  // The forward's zigzag problems: there the longest window, here the longest key sequence, the
  // same number for prefixes of one sequence.
  return GroupedForward::presets();
}

std::size_t GroupedBackward::workspace_bytes(const attention::AttentionGroup* groups,
                                             int group_count) {
  std::size_t bytes = 0;
  for (int g = 0; g < group_count; ++g) {
    const TensorView& q = groups[g].q;
    if (q.ndim != 3)
      kAttentionCheck.fail(fmt::format("group {}: q must be [T, H, D], got {}", g, q.describe()));
    bytes += FlashBackward::workspace_bytes(q.size(0), q.size(1), q.size(2), false);
  }
  return bytes;
}

void GroupedBackward::attach_workspace(Args& args, const attention::AttentionGroup* groups,
                                       std::int64_t head_dim, void* workspace) {
  auto* at = static_cast<char*>(workspace);
  for (int g = 0; g < args.groups; ++g) {
    const std::int64_t rows = groups[g].q.size(0);
    FlashBackward::attach_workspace(args.group[g], at, rows, head_dim, false);
    at += FlashBackward::workspace_bytes(rows, groups[g].q.size(1), head_dim, false);
  }
}

Call<GroupedBackward> GroupedBackward::validate(const attention::AttentionGroup* groups,
                                                int group_count, const attention::SharedKeys& keys,
                                                const TensorView& dk, const TensorView& dv,
                                                const attention::BackwardOptions& o) {
  if (o.deterministic) {
    kAttentionCheck.fail(
        "the grouped backward has no deterministic mode (dQ is summed with fp32 atomics)");
  }
  const GroupedShape shape = check_groups(groups, group_count, keys, true);
  Call<GroupedBackward> call{};
  call.problem = {groups[0].q.dtype, group_count,     shape.batch,     shape.heads_q, shape.heads_k,
                  shape.head_dim,    shape.longest_q, shape.longest_k, o.causal};
  check(call.problem);
  call.args.groups = group_count;
  for (int g = 0; g < group_count; ++g) {
    const attention::AttentionGroup& group = groups[g];
    KjitFlashBackwardParams& args = call.args.group[g] =
        FlashBackward::validate_varlen(group.q, keys.k, keys.v, group.out, group.dout, group.lse,
                                       group.dq, dk, dv, varlen_of(group, keys), o)
            .args;
    args.windows_k = static_cast<const int*>(group.windows.data);
  }
  return call;
}

}  // namespace kjit::ops

namespace kjit::attention {

std::size_t backward_grouped_workspace_bytes(const AttentionGroup* groups, int group_count) {
  if (!groups || group_count < 1 || group_count > kMaxGroups) {
    ops::kAttentionCheck.fail(
        fmt::format("grouped attention takes 1 to {} groups, got {}", kMaxGroups, group_count));
  }
  return ops::GroupedBackward::workspace_bytes(groups, group_count);
}

void backward_grouped(const AttentionGroup* groups, int group_count, const SharedKeys& keys,
                      const TensorView& dk, const TensorView& dv, const BackwardOptions& options,
                      StreamHandle stream) {
  ops::Call<ops::GroupedBackward> call =
      ops::GroupedBackward::validate(groups, group_count, keys, dk, dv, options);
  if (ops::GroupedBackward::per_group(call.problem).empty()) return;
  const std::size_t bytes = ops::GroupedBackward::workspace_bytes(groups, group_count);
  std::optional<driver::StreamAllocation> owned;  // when the caller passes none
  void* workspace = options.workspace ? ops::FlashBackward::callers_workspace(options, bytes)
                                      : owned.emplace(bytes, stream).data();
  ops::GroupedBackward::attach_workspace(call.args, groups, call.problem.head_dim, workspace);
  ops::run(call, stream);
}

}  // namespace kjit::attention

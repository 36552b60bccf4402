// The grouped attention backward family: FlashBackward's kernels, the main loop over
// KjitGroupedBackwardParams (a block of keys walks the query tiles of every group whose windows
// see it, so dK and dV sum over the groups in registers and each K/V tile is read once), the
// prep and dq store once per group. dQ goes through fp32 atomics (configs with dq_atomic only).
// kjit::attention::backward_grouped runs through it.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/flash_backward_params.h"
#include "kjit/attention.hpp"
#include "ops/attention/flash_backward.hpp"
#include "ops/attention/flash_grouped_forward.hpp"
#include "ops/kernel_family.hpp"

namespace kjit::ops {

struct GroupedBackward {
  static constexpr const char* kName = "attention_grouped_backward";
  static std::vector<Source> sources() { return FlashBackward::sources(); }

  // GroupedForward's problem, with Sk the longest key sequence: the main loop covers every key,
  // writing 0 where no window sees it.
  using Problem = GroupedForward::Problem;
  static FlashBackward::Problem per_group(const Problem& p) {
    return {p.dtype,    p.batch,    p.heads_q, p.heads_k, p.head_dim,
            p.seqlen_q, p.seqlen_k, p.causal,  false};
  }
  using Config = FlashBackward::Config;
  using Args = KjitGroupedBackwardParams;

  static constexpr const auto& kShape = GroupedForward::kShape;
  static constexpr const auto& kConfig = FlashBackward::kConfig;
  static constexpr const auto& kDTypes = FlashBackward::kDTypes;

  // The plain backward's grid over the longest key sequence: the forward's limits hold for it.
  static void check(const Problem& p) { GroupedForward::check(p); }
  static std::vector<Config> space(const Problem& p, const Arch& arch);
  static bool valid(const Config& c, const Problem& p, const Arch& arch);
  static Config default_config(const Problem& p, const Arch& arch);
  static KernelSpec spec(const Config& c, const Problem& p, const Arch& arch) {
    return FlashBackward::spec_for(c, per_group(p), arch, "KjitGroupedBackwardParams");
  }
  static void launch(const Program& program, const Config& c, const Problem& p, const Args& args,
                     StreamHandle stream);
  static std::vector<Problem> shipped(const Arch& arch);

  // The tuner's workload: G groups of batched queries [B, Sq] over the whole of every sequence.
  static std::vector<TensorSpec> tensors(const Problem& p);
  static Args args(const Problem& p, const std::vector<TensorView>& t);
  static double tolerance(const Problem&) { return 2e-2; }
  static std::vector<Preset<Problem>> presets();

  // The groups' workspaces, one FlashBackward workspace each, back to back.
  static std::size_t workspace_bytes(const attention::AttentionGroup* groups, int group_count);
  static void attach_workspace(Args& args, const attention::AttentionGroup* groups,
                               std::int64_t head_dim, void* workspace);

  // The op's validation (host only). The workspace is attached afterwards.
  static Call<GroupedBackward> validate(const attention::AttentionGroup* groups, int group_count,
                                        const attention::SharedKeys& keys, const TensorView& dk,
                                        const TensorView& dv, const attention::BackwardOptions& o);
};

}  // namespace kjit::ops

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
#include "ops/kernel_family.hpp"

namespace kjit::ops {

struct GroupedBackward {
  static constexpr const char* kName = "attention_grouped_backward";
  static std::vector<Source> sources() { return FlashBackward::sources(); }

  // Sq: the longest query segment of any group and sequence; Sk: the longest key sequence (the
  // main loop covers every key, writing 0 where no window sees it).
  struct Problem {
    DType dtype = DType::BFloat16;
    std::int64_t groups = 0, batch = 0, heads_q = 0, heads_k = 0, head_dim = 0;
    std::int64_t seqlen_q = 0, seqlen_k = 0;
    bool causal = false;
    bool empty() const { return batch == 0 || (seqlen_q == 0 && seqlen_k == 0); }
    FlashBackward::Problem per_group() const {
      return {dtype, batch, heads_q, heads_k, head_dim, seqlen_q, seqlen_k, causal, false};
    }
  };
  using Config = FlashBackward::Config;
  using Args = KjitGroupedBackwardParams;

  static constexpr Field<Problem> kShape[] = {field<&Problem::groups>("G"),
                                              field<&Problem::batch>("B", tuning::Bucket::Pow2),
                                              field<&Problem::heads_q>("Hq"),
                                              field<&Problem::heads_k>("Hk"),
                                              field<&Problem::head_dim>("D"),
                                              field<&Problem::seqlen_q>("Sq", tuning::Bucket::Pow2),
                                              field<&Problem::seqlen_k>("Sk", tuning::Bucket::Pow2),
                                              field<&Problem::causal>("causal")};
  static constexpr const auto& kConfig = FlashBackward::kConfig;
  static constexpr const auto& kDTypes = FlashBackward::kDTypes;

  static void check(const Problem& p);
  static std::vector<Config> space(const Problem& p, const Arch& arch);
  static bool valid(const Config& c, const Problem& p, const Arch& arch);
  static Config default_config(const Problem& p, const Arch& arch);
  static KernelSpec spec(const Config& c, const Problem& p, const Arch& arch) {
    return FlashBackward::spec_for(c, p.per_group(), arch, "KjitGroupedBackwardParams");
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

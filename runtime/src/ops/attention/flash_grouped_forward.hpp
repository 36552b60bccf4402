// The grouped attention forward family: FlashForward's kernels over KjitGroupedFlashParams (up
// to 16 varlen forwards over one shared K/V, each group with its own queries and key windows)
// in one launch, whose grid interleaves the groups' query tiles so that tiles reading the same
// keys run side by side and share them through L2. Configs, their space and the defaults are
// FlashForward's, chosen for the groups' longest query segment and window.
// kjit::attention::forward_grouped runs through it.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/flash_params.h"
#include "kjit/attention.hpp"
#include "ops/attention/flash_forward.hpp"
#include "ops/kernel_family.hpp"

namespace kjit::ops {

struct GroupedForward {
  static constexpr const char* kName = "attention_grouped";
  static std::vector<Source> sources() { return FlashForward::sources(); }

  // Sq: the longest query segment of any group and sequence; Sk: the longest window (the
  // backward's, GroupedBackward, which shares this type: the longest key sequence).
  struct Problem {
    DType dtype = DType::BFloat16;
    std::int64_t groups = 0, batch = 0, heads_q = 0, heads_k = 0, head_dim = 0;
    std::int64_t seqlen_q = 0, seqlen_k = 0;
    bool causal = false;
    bool empty() const { return seqlen_q == 0 || batch == 0; }
    FlashForward::Problem per_group() const {
      return {dtype, batch, heads_q, heads_k, head_dim, seqlen_q, seqlen_k, causal};
    }
  };
  using Config = FlashForward::Config;
  using Args = KjitGroupedFlashParams;

  static constexpr Field<Problem> kShape[] = {field<&Problem::groups>("G"),
                                              field<&Problem::batch>("B", tuning::Bucket::Pow2),
                                              field<&Problem::heads_q>("Hq"),
                                              field<&Problem::heads_k>("Hk"),
                                              field<&Problem::head_dim>("D"),
                                              field<&Problem::seqlen_q>("Sq", tuning::Bucket::Pow2),
                                              field<&Problem::seqlen_k>("Sk", tuning::Bucket::Pow2),
                                              field<&Problem::causal>("causal")};
  static constexpr const auto& kConfig = FlashForward::kConfig;
  static constexpr const auto& kDTypes = FlashForward::kDTypes;

  static void check(const Problem& p);
  static std::vector<Config> space(const Problem& p, const Arch& arch) {
    return FlashForward::space(p.per_group(), arch);
  }
  // The warp-specialised loops up to hd 192 (at hd 256 the group lookup spills), not the
  // persistent one (its blocks take plain tiles).
  static bool valid(const Config& c, const Problem& p, const Arch& arch) {
    return FlashForward::valid(c, p.per_group(), arch) &&
           !(c.warp_specialized() && p.head_dim > 192) &&
           c.mainloop != FlashForward::kMainloopWgmmaWsPersistent;
  }
  static Config default_config(const Problem& p, const Arch& arch);
  static KernelSpec spec(const Config& c, const Problem& p, const Arch& arch) {
    return FlashForward::spec_for(c, p.per_group(), arch, "KjitGroupedFlashParams",
                                  "KjitGroupedFlashTmaParams");
  }
  static void launch(const Program& program, const Config& c, const Problem& p, const Args& args,
                     StreamHandle stream);
  static std::vector<Problem> shipped(const Arch& arch);
  // Key/value heads a section of the grid covers: as many as keep their K/V windows
  // (bytes_per_head each) within a quarter of the L2 together, a divisor of heads_k, grown toward
  // a wave: the section's blocks (blocks_per_head a head) one an SM of sms, at most every head.
  static std::int64_t section_kv_heads(std::int64_t heads_k, std::int64_t bytes_per_head,
                                       std::int64_t blocks_per_head, std::int64_t sms);

  // The tuner's workload: G groups of batched queries [B, Sq] over the whole of every sequence
  // [B, Sk] (the case of groups that share one window).
  static std::vector<TensorSpec> tensors(const Problem& p);
  static Args args(const Problem& p, const std::vector<TensorView>& t);
  static double tolerance(const Problem&) { return 2e-2; }
  // Zigzag context parallelism on one rank: the two chunks' groups of every rank of W = 2, 4, 8.
  static std::vector<Preset<Problem>> presets();

  static Call<GroupedForward> validate(const attention::AttentionGroup* groups, int group_count,
                                       const attention::SharedKeys& keys,
                                       const attention::ForwardOptions& o);
};

}  // namespace kjit::ops

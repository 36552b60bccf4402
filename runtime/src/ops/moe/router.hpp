// The MoE router family: templates/moe/router_topk.cuh specialised per expert count, top-k,
// scoring, groups and renormalisation; one warp a token, warps_per_block tunable.
// kjit::moe::router_topk runs through it.
#pragma once

#include <cstdint>
#include <vector>

#include "kjit/moe.hpp"
#include "moe/router_topk_params.h"
#include "ops/kernel_family.hpp"

namespace kjit::ops {

struct MoeRouter {
  static constexpr const char* kName = "moe_router";
  static std::vector<Source> sources() { return {Source::embedded("moe/router_topk.cuh")}; }

  struct Problem {
    DType dtype = DType::Float32;  // the logits'
    std::int64_t tokens = 0, experts = 0, top_k = 0, groups = 1, topk_groups = 1;
    bool sigmoid = false, renormalize = false;
  };
  struct Config {
    std::int64_t warps_per_block = 4;
  };
  using Args = KjitRouterParams;

  static constexpr Field<Problem> kShape[] = {field<&Problem::tokens>("T", tuning::Bucket::Pow2),
                                              field<&Problem::experts>("E"),
                                              field<&Problem::top_k>("k"),
                                              field<&Problem::groups>("groups"),
                                              field<&Problem::topk_groups>("topk_groups"),
                                              field<&Problem::sigmoid>("sigmoid"),
                                              field<&Problem::renormalize>("renormalize")};
  static constexpr Field<Config> kConfig[] = {field<&Config::warps_per_block>("warps_per_block")};
  static constexpr DType kDTypes[] = {DType::Float32, DType::BFloat16, DType::Float16};

  static void check(const Problem& p);
  static std::vector<Config> space(const Problem&, const Arch&) { return {{1}, {2}, {4}, {8}}; }
  static bool valid(const Config& c, const Problem&, const Arch&) {
    return c.warps_per_block >= 1 && c.warps_per_block <= 8;
  }
  static Config default_config(const Problem&, const Arch&) { return {4}; }
  static KernelSpec spec(const Config& c, const Problem& p, const Arch& arch);
  static void launch(const Program& program, const Config& c, const Problem& p, const Args& args,
                     StreamHandle stream);
  static std::vector<Problem> shipped(const Arch& arch);

  static std::vector<TensorSpec> tensors(const Problem& p);
  static Args args(const Problem& p, const std::vector<TensorView>& t);
  static double tolerance(const Problem&) { return 1e-5; }
  // GLM-4.7-Flash's and DeepSeek-V3's routers from decode to prefill batches.
  static std::vector<Preset<Problem>> presets();

  static Call<MoeRouter> validate(const TensorView& logits, const TensorView& bias,
                                  const TensorView& ids, const TensorView& weights,
                                  const moe::RouterOptions& o);
};

}  // namespace kjit::ops

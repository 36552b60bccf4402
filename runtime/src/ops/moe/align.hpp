// The MoE dispatch layout family: templates/moe/align.cuh specialised per expert count, one
// cluster of 1 to 8 blocks of 1024 threads (one block below sm_90). kjit::moe::align runs through
// it.
#pragma once

#include <cstdint>
#include <vector>

#include "kjit/moe.hpp"
#include "moe/align_params.h"
#include "ops/kernel_family.hpp"

namespace kjit::ops {

struct MoeAlign {
  static constexpr const char* kName = "moe_align";
  static std::vector<Source> sources() { return {Source::embedded("moe/align.cuh")}; }

  struct Problem {
    DType dtype = DType::Int32;  // the ids'
    std::int64_t pairs = 0, experts = 0, block = 0;
  };
  struct Config {
    std::int64_t cluster = 1;  // blocks of the one cluster (each scans all experts itself)
  };
  using Args = KjitMoeAlignParams;

  static constexpr Field<Problem> kShape[] = {field<&Problem::pairs>("pairs", tuning::Bucket::Pow2),
                                              field<&Problem::experts>("E"),
                                              field<&Problem::block>("block")};
  static constexpr Field<Config> kConfig[] = {field<&Config::cluster>("cluster")};
  static constexpr DType kDTypes[] = {DType::Int32};

  static void check(const Problem& p);
  static std::vector<Config> space(const Problem& p, const Arch& arch);
  static bool valid(const Config& c, const Problem& p, const Arch& arch);
  static Config default_config(const Problem& p, const Arch& arch);
  static KernelSpec spec(const Config& c, const Problem& p, const Arch& arch);
  static void launch(const Program& program, const Config& c, const Problem& p, const Args& args,
                     StreamHandle stream);
  static std::vector<Problem> shipped(const Arch& arch);

  // The tuner's workload: random expert ids in [0, E).
  static std::vector<TensorSpec> tensors(const Problem& p);
  static Args args(const Problem& p, const std::vector<TensorView>& t);
  static double tolerance(const Problem&) { return 0; }
  static std::vector<Preset<Problem>> presets();

  static Call<MoeAlign> validate(const TensorView& ids, int experts, int block,
                                 const moe::Alignment& out);
};

}  // namespace kjit::ops

// The MoE dispatch families around the grouped GEMM: templates/moe/permute.cuh per dtype, a warp
// a row. MoePermute gathers the tokens into moe align's layout (and records each pair's row);
// MoeUnpermute sums the experts' rows back into token order. kjit::moe::permute and unpermute run
// through them.
#pragma once

#include <cstdint>
#include <vector>

#include "kjit/moe.hpp"
#include "moe/permute_params.h"
#include "ops/kernel_family.hpp"

namespace kjit::ops {

// What the two families share: the problem (rows: the dispatch layout's, moe::align_capacity),
// the config and its space, the checks, the shipped dtypes and the presets' shapes.
struct MoeDispatchShape {
  static std::vector<Source> sources() { return {Source::embedded("moe/permute.cuh")}; }

  struct Problem {
    DType dtype = DType::BFloat16;
    std::int64_t tokens = 0, hidden = 0, top_k = 0, rows = 0;
  };
  struct Config {
    std::int64_t warps_per_block = 8;
  };
  static constexpr Field<Problem> kShape[] = {
      field<&Problem::tokens>("T", tuning::Bucket::Pow2), field<&Problem::hidden>("D"),
      field<&Problem::top_k>("k"), field<&Problem::rows>("rows", tuning::Bucket::Pow2)};
  static constexpr Field<Config> kConfig[] = {field<&Config::warps_per_block>("warps_per_block")};
  static constexpr DType kDTypes[] = {DType::BFloat16, DType::Float16};

  static void check(const Problem& p);
  static std::vector<Config> space(const Problem&, const Arch&) { return {{2}, {4}, {8}}; }
  static bool valid(const Config& c, const Problem&, const Arch&) {
    return c.warps_per_block >= 1 && c.warps_per_block <= 8;
  }
  static Config default_config(const Problem&, const Arch&) { return {8}; }
  static std::vector<Problem> shipped(const Arch& arch);
  static double tolerance(const Problem&) { return 0; }
  // GLM-4.7-Flash (hidden 2048, top 4 of 64) and DeepSeek-V3 (7168, top 8 of 256), decode to
  // prefill, rows as moe align pads them for 64-row GEMM blocks.
  static std::vector<Problem> preset_problems(std::int64_t hidden, std::int64_t top_k,
                                              std::int64_t experts);
};

struct MoePermute : MoeDispatchShape {
  static constexpr const char* kName = "moe_permute";
  using Args = KjitMoePermuteParams;

  static KernelSpec spec(const Config& c, const Problem& p, const Arch& arch);
  static void launch(const Program& program, const Config& c, const Problem& p, const Args& args,
                     StreamHandle stream);
  // The tuner's workload: random pair indices (padding among them) as the layout.
  static std::vector<TensorSpec> tensors(const Problem& p);
  static Args args(const Problem& p, const std::vector<TensorView>& t);
  static std::vector<Preset<Problem>> presets();

  // zero_padding false: padding rows of x_sorted left unwritten (kjit::moe::permute).
  static Call<MoePermute> validate(const TensorView& x, const TensorView& sorted, int top_k,
                                   const TensorView& x_sorted, const TensorView& positions,
                                   bool zero_padding);
};

struct MoeUnpermute : MoeDispatchShape {
  static constexpr const char* kName = "moe_unpermute";
  using Args = KjitMoeUnpermuteParams;

  static KernelSpec spec(const Config& c, const Problem& p, const Arch& arch);
  static void launch(const Program& program, const Config& c, const Problem& p, const Args& args,
                     StreamHandle stream);
  // The tuner's workload: every pair at a random row, routing weights, no shared expert.
  static std::vector<TensorSpec> tensors(const Problem& p);
  static Args args(const Problem& p, const std::vector<TensorView>& t);
  static std::vector<Preset<Problem>> presets();

  static Call<MoeUnpermute> validate(const TensorView& y_sorted, const TensorView& positions,
                                     int top_k, const TensorView& weights, const TensorView& shared,
                                     const TensorView& out);
};

}  // namespace kjit::ops

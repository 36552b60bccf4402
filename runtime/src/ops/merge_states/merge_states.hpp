// The merge_states family: templates/attention/merge_states.cuh, its vector width / threads per
// row / rows per block configs, the validation of its inputs and the launch.
// kjit::attention::merge_states runs through it.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/merge_states_params.h"
#include "ops/kernel_family.hpp"

namespace kjit::ops {

struct MergeStates {
  static constexpr const char* kName = "merge_states";
  static std::vector<Source> sources() { return {Source::embedded("attention/merge_states.cuh")}; }

  static constexpr std::int64_t kMinDim = 64, kMaxDim = 1024, kMaxParts = 64;

  struct Problem {
    DType dtype = DType::Float32;
    std::int64_t dim = 0, parts = 0, rows = 0;  // rows = tokens x heads
    std::int64_t alignment = 16;  // bytes every row start is aligned to (power of two, <= 16)
  };
  // vec elements per access, threads_per_row threads per (token, head) row, rows_per_block.
  struct Config {
    std::int64_t vec = 0, threads_per_row = 0, rows_per_block = 0;
  };
  using Args = KjitMergeStatesParams;

  static constexpr Field<Problem> kShape[] = {
      field<&Problem::dim>("D"), field<&Problem::parts>("N"),
      field<&Problem::rows>("rows", tuning::Bucket::Pow2),
      field<&Problem::alignment>("alignment", tuning::Bucket::Local)};
  static constexpr Field<Config> kConfig[] = {field<&Config::vec>("vec"),
                                              field<&Config::threads_per_row>("threads_per_row"),
                                              field<&Config::rows_per_block>("rows_per_block")};
  static constexpr DType kDTypes[] = {DType::Float16, DType::BFloat16, DType::Float32};

  static void check(const Problem& p);
  static std::vector<Config> space(const Problem& p, const Arch& arch);
  static bool valid(const Config& c, const Problem& p, const Arch& arch);
  static Config default_config(const Problem& p, const Arch& arch);
  static KernelSpec spec(const Config& c, const Problem& p, const Arch& arch);
  static void launch(const Program& program, const Config& c, const Problem& p, const Args& args,
                     StreamHandle stream);
  static std::vector<Problem> shipped(const Arch& arch);

  static std::vector<TensorSpec> tensors(const Problem& p);
  static Args args(const Problem& p, const std::vector<TensorView>& t);
  // Configs differ only in how rows are split over threads: each output element is the same
  // fp32 sum, so they agree to a few fp32 ulps before rounding to the output dtype.
  static double tolerance(const Problem& p) { return p.dtype == DType::Float32 ? 1e-6 : 1e-2; }
  static std::vector<Preset<Problem>> presets();

  // The op's validation: parts [N, T, H, D], parts_lse [N, T, H], out [T, H, D], out_lse [T, H]
  // (null data: skipped).
  static Call<MergeStates> validate(const TensorView& parts, const TensorView& parts_lse,
                                    const TensorView& out, const TensorView& out_lse);
  // Bytes read and written by one merge (for bandwidth figures).
  static std::uint64_t bytes_moved(const Problem& p, bool with_lse);
};

}  // namespace kjit::ops

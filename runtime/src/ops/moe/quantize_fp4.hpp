// The FP4 weight quantizer family: templates/moe/quantize_fp4.cuh per dtype and block (NVFP4's
// 16 elements with E4M3 scales and a tensor scale, MXFP4's 32 with E8M0 scales), bit for bit as
// the CPU reference. kjit::moe::quantize_fp4 runs through it.
#pragma once

#include <cstdint>
#include <vector>

#include "kjit/moe.hpp"
#include "moe/quantize_fp4_params.h"
#include "ops/kernel_family.hpp"

namespace kjit::ops {

struct MoeQuantizeFp4 {
  static constexpr const char* kName = "moe_quantize_fp4";
  static std::vector<Source> sources() { return {Source::embedded("moe/quantize_fp4.cuh")}; }

  // block: 16 (NVFP4) or 32 (MXFP4).
  struct Problem {
    DType dtype = DType::BFloat16;
    std::int64_t rows = 0, cols = 0, block = 16;
  };
  struct Config {
    std::int64_t threads = 256;
  };
  using Args = KjitFp4QuantizeParams;

  static constexpr Field<Problem> kShape[] = {field<&Problem::rows>("rows", tuning::Bucket::Pow2),
                                              field<&Problem::cols>("cols", tuning::Bucket::Pow2),
                                              field<&Problem::block>("block")};
  static constexpr Field<Config> kConfig[] = {field<&Config::threads>("threads")};
  static constexpr DType kDTypes[] = {DType::BFloat16, DType::Float16};

  static void check(const Problem& p);
  static std::vector<Config> space(const Problem&, const Arch&) { return {{64}, {128}, {256}}; }
  static bool valid(const Config& c, const Problem&, const Arch&) {
    return c.threads == 64 || c.threads == 128 || c.threads == 256;
  }
  static Config default_config(const Problem&, const Arch&) { return {256}; }
  static KernelSpec spec(const Config& c, const Problem& p, const Arch& arch);
  static void launch(const Program& program, const Config& c, const Problem& p, const Args& args,
                     StreamHandle stream);
  static std::vector<Problem> shipped(const Arch& arch);

  static std::vector<TensorSpec> tensors(const Problem& p);
  static Args args(const Problem& p, const std::vector<TensorView>& t);
  static double tolerance(const Problem&) { return 0; }
  // GLM-4.7-Flash's expert weights (64 experts: gate/up 3072 x 2048, down 2048 x 1536).
  static std::vector<Preset<Problem>> presets();

  static Call<MoeQuantizeFp4> validate(const TensorView& w, moe::Fp4Format format,
                                       const TensorView& codes, const TensorView& scales,
                                       const TensorView& tensor_scale);
};

}  // namespace kjit::ops

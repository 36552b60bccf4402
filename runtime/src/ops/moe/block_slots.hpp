// The family that maps moe align's blocks of rows to expert-cache slots for the offloaded MoE
// layer: templates/moe/block_slots.cuh, a thread a block of rows. kjit::moe::map_block_experts
// runs through it.
#pragma once

#include <cstdint>
#include <vector>

#include "kjit/moe.hpp"
#include "moe/block_slots_params.h"
#include "ops/kernel_family.hpp"

namespace kjit::ops {

struct MoeBlockSlots {
  static constexpr const char* kName = "moe_block_slots";
  static std::vector<Source> sources() { return {Source::embedded("moe/block_slots.cuh")}; }

  struct Problem {
    DType dtype = DType::Int32;
    std::int64_t blocks = 0, experts = 0;
  };
  struct Config {
    std::int64_t threads = 128;
  };
  using Args = KjitMoeBlockSlotsParams;

  static constexpr Field<Problem> kShape[] = {
      field<&Problem::blocks>("blocks", tuning::Bucket::Pow2), field<&Problem::experts>("E")};
  static constexpr Field<Config> kConfig[] = {field<&Config::threads>("threads")};
  static constexpr DType kDTypes[] = {DType::Int32};

  static void check(const Problem& p);
  static std::vector<Config> space(const Problem&, const Arch&) { return {{64}, {128}, {256}}; }
  static bool valid(const Config& c, const Problem&, const Arch&) {
    return c.threads >= 32 && c.threads <= 1024 && c.threads % 32 == 0;
  }
  static Config default_config(const Problem&, const Arch&) { return {128}; }
  static KernelSpec spec(const Config& c, const Problem& p, const Arch& arch);
  static void launch(const Program& program, const Config& c, const Problem& p, const Args& args,
                     StreamHandle stream);
  static std::vector<Problem> shipped(const Arch& arch);

  // The tuner's workload: blocks of random experts (-1 among them), a random table.
  static std::vector<TensorSpec> tensors(const Problem& p);
  static Args args(const Problem& p, const std::vector<TensorView>& t);
  static double tolerance(const Problem&) { return 0; }
  // GLM-4.7-Flash (64 experts) and DeepSeek-V3 (256) in decode: the offloaded stack's shapes.
  static std::vector<Preset<Problem>> presets();

  static Call<MoeBlockSlots> validate(const TensorView& block_expert,
                                      const TensorView& slot_of_expert,
                                      const TensorView& block_slot);
};

}  // namespace kjit::ops

// The MoE balance family: templates/moe/balance.cuh (load statistics, the aux, sequence-wise aux
// and z losses, MaxVio, the aux-loss-free bias update), specialised per logits dtype; the chunk
// of tokens a block sums is tunable. kjit::moe::balance runs through it.
#pragma once

#include <cstdint>
#include <vector>

#include "kjit/moe.hpp"
#include "moe/balance_params.h"
#include "ops/kernel_family.hpp"

namespace kjit::ops {

struct MoeBalance {
  static constexpr const char* kName = "moe_balance";
  static std::vector<Source> sources() { return {Source::embedded("moe/balance.cuh")}; }

  // dtype: the logits' (fp32 when there are none); longest: the longest sequence (max_seqlen).
  struct Problem {
    DType dtype = DType::Float32;
    std::int64_t tokens = 0, experts = 0, top_k = 0, sequences = 1, longest = 0;
  };
  struct Config {
    std::int64_t chunk_tokens = 256;
  };
  using Args = KjitMoeBalanceParams;

  static constexpr Field<Problem> kShape[] = {
      field<&Problem::tokens>("T", tuning::Bucket::Pow2), field<&Problem::experts>("E"),
      field<&Problem::top_k>("k"), field<&Problem::sequences>("S", tuning::Bucket::Pow2),
      field<&Problem::longest>("L", tuning::Bucket::Pow2)};
  static constexpr Field<Config> kConfig[] = {field<&Config::chunk_tokens>("chunk_tokens")};
  static constexpr DType kDTypes[] = {DType::Float32, DType::BFloat16, DType::Float16};

  static void check(const Problem& p);
  static std::vector<Config> space(const Problem&, const Arch&) {
    return {{64}, {128}, {256}, {512}, {1024}};
  }
  static bool valid(const Config& c, const Problem&, const Arch&) {
    return c.chunk_tokens >= 32 && c.chunk_tokens <= 4096;
  }
  static Config default_config(const Problem&, const Arch&) { return {256}; }
  static KernelSpec spec(const Config& c, const Problem& p, const Arch& arch);
  static void launch(const Program& program, const Config& c, const Problem& p, const Args& args,
                     StreamHandle stream);
  static std::vector<Problem> shipped(const Arch& arch);

  // The tuner's workload: random ids in [0, E), probabilities and logits, one sequence.
  static std::vector<TensorSpec> tensors(const Problem& p);
  static Args args(const Problem& p, const std::vector<TensorView>& t);
  static double tolerance(const Problem&) { return 1e-4; }
  // GLM-4.7-Flash's (64 experts, top 4) and DeepSeek-V3's (256, top 8) routers.
  static std::vector<Preset<Problem>> presets();

  static Call<MoeBalance> validate(const TensorView& ids, const TensorView& probs,
                                   const TensorView& logits, const TensorView& cu_seqlens,
                                   int max_seqlen, const TensorView& bias,
                                   const moe::BalanceOptions& options,
                                   const moe::BalanceStats& stats);
};

}  // namespace kjit::ops

// The MLA decode family: templates/attention/mla_decode.cuh (mma.sync, sm_80+) and
// mla_decode_sm90.cuh (wgmma, sm_90a), each with mla_decode_combine.cuh's split-KV combine; the
// main loop and split count, the launch (partials in stream-ordered scratch when a request's keys
// are split). kjit::mla::decode runs through it.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/mla_decode_params.h"
#include "kjit/mla.hpp"
#include "ops/kernel_family.hpp"

namespace kjit::ops {

struct MlaDecode {
  static constexpr const char* kName = "mla_decode";
  static std::vector<Source> sources() {
    return {Source::embedded("attention/mla_decode.cuh"),
            Source::embedded("attention/mla_decode_sm90.cuh")};
  }

  static constexpr std::int64_t kMainloopMma = 80, kMainloopWgmma = 90;

  // `longest`: the longest cached sequence of the call; `keys`: its sequences' tokens (0:
  // unknown, as the tuner's problems), which pick the split plan (balanced()) and are no shape
  // field (the config is chosen for B and the longest).
  struct Problem {
    DType dtype = DType::BFloat16;
    std::int64_t batch = 0, s_q = 0, heads = 0, block_size = 0, longest = 0, keys = 0;
    bool empty() const { return batch == 0; }
    std::int64_t row_tiles() const { return (s_q * heads + 63) / 64; }
  };
  // mainloop 80: mma.sync, 32-key tiles; 90: wgmma, 64-key tiles (sm_90a). splits: how many
  // blocks share a request's keys (their partials merged by the combine); in the balanced plan,
  // the batch's pieces a request.
  struct Config {
    std::int64_t mainloop = kMainloopMma, splits = 1;
    bool wgmma() const { return mainloop == kMainloopWgmma; }
    std::int64_t key_tile() const { return wgmma() ? 64 : 32; }
  };
  using Args = KjitMlaDecodeParams;

  // A split count tuned at one batch and length is no guide at another (at H 64, B 1 L 64k given
  // B 8 L 4k's 16 splits ran 2.2x slower than its default on the H100): no neighbour's result.
  static constexpr Field<Problem> kShape[] = {
      field<&Problem::batch>("B", tuning::Bucket::Pow2Only), field<&Problem::s_q>("s_q"),
      field<&Problem::heads>("H"), field<&Problem::block_size>("block_size"),
      field<&Problem::longest>("L", tuning::Bucket::Pow2Only)};
  static constexpr Field<Config> kConfig[] = {field<&Config::mainloop>("mainloop"),
                                              field<&Config::splits>("splits")};
  static constexpr DType kDTypes[] = {DType::Float16, DType::BFloat16};
  // kMaxSplits: the combine's limit (mla_decode_combine.cuh); kMinSplitTokens: mma.sync's.
  static constexpr std::int64_t kMaxSplits = 128, kMinSplitTokens = 512;

  // The balanced split plan (mla_decode_plan.cuh) for a call of uneven lengths: its keys under
  // four fifths of B x the longest.
  static bool balanced(const Problem& p);

  static void check(const Problem& p);
  static std::vector<Config> space(const Problem& p, const Arch& arch);
  static bool valid(const Config& c, const Problem& p, const Arch& arch);
  static Config default_config(const Problem& p, const Arch& arch);
  static unsigned shared_bytes(const Config& c);
  static KernelSpec spec(const Config& c, const Problem& p, const Arch& arch);
  static void launch(const Program& program, const Config& c, const Problem& p, const Args& args,
                     StreamHandle stream);
  static std::vector<Problem> shipped(const Arch& arch);

  // The tuner's workload: B sequences of L tokens each, their blocks in a random order.
  static std::vector<TensorSpec> tensors(const Problem& p);
  static Args args(const Problem& p, const std::vector<TensorView>& t);
  static double tolerance(const Problem&) { return 2e-2; }
  // GLM-4.7-Flash (20 heads) and DeepSeek-V3 (128) decode, s_q 1.
  static std::vector<Preset<Problem>> presets();

  static Call<MlaDecode> validate(const TensorView& q, const mla::PagedCache& cache,
                                  const TensorView& out, const TensorView& lse,
                                  const mla::DecodeOptions& o);
};

}  // namespace kjit::ops

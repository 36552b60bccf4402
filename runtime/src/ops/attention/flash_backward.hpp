// The attention backward family: templates/attention/flash_backward.cuh (mma.sync, sm_80+) and
// flash_backward_sm90.cuh (wgmma and the copy engine, sm_90a; head dims 64, 128, 256), its
// tile configs, the validation of batched and packed inputs and gradients, the workspace, and
// the launch of its kernels (prep, main loop, dq). kjit::attention::backward / backward_varlen
// run through it.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/flash_backward_params.h"
#include "kjit/attention.hpp"
#include "ops/kernel_family.hpp"

namespace kjit::ops {

struct FlashBackward {
  static constexpr const char* kName = "attention_backward";
  static std::vector<Source> sources();

  static constexpr std::int64_t kMainloopMma = 80, kMainloopWgmma = 90;

  // A packed call is the batched problem of B sequences of its longest lengths.
  struct Problem {
    DType dtype = DType::BFloat16;
    std::int64_t batch = 0, heads_q = 0, heads_k = 0, head_dim = 0;
    std::int64_t seqlen_q = 0, seqlen_k = 0;
    bool causal = false, deterministic = false;
    bool empty() const { return batch == 0 || (seqlen_q == 0 && seqlen_k == 0); }
  };
  // block_m queries and block_n keys per tile. mainloop 80: eight warps of mma.sync (stages 1);
  // 90: two warpgroups of wgmma with `stages` query tiles in flight, block_n 128 keys up to head
  // dim 128 and 64 above. dq_atomic 1: the main loop adds dQ into an fp32 accumulator with
  // atomics; 0: a second pass over the keys (mma.sync) computes dQ (the only choice in
  // deterministic mode).
  struct Config {
    std::int64_t mainloop = kMainloopMma, block_m = 0, block_n = 0, dq_atomic = 0, stages = 1;
    bool wgmma() const { return mainloop == kMainloopWgmma; }
  };
  using Args = KjitFlashBackwardParams;

  static constexpr Field<Problem> kShape[] = {field<&Problem::batch>("B", tuning::Bucket::Pow2),
                                              field<&Problem::heads_q>("Hq"),
                                              field<&Problem::heads_k>("Hk"),
                                              field<&Problem::head_dim>("D"),
                                              field<&Problem::seqlen_q>("Sq", tuning::Bucket::Pow2),
                                              field<&Problem::seqlen_k>("Sk", tuning::Bucket::Pow2),
                                              field<&Problem::causal>("causal"),
                                              field<&Problem::deterministic>("deterministic")};
  static constexpr Field<Config> kConfig[] = {
      field<&Config::mainloop>("mainloop"), field<&Config::block_m>("block_m"),
      field<&Config::block_n>("block_n"), field<&Config::dq_atomic>("dq_atomic"),
      field<&Config::stages>("stages")};
  static constexpr DType kDTypes[] = {DType::Float16, DType::BFloat16};

  static void check(const Problem& p);
  static std::vector<Config> space(const Problem& p, const Arch& arch);
  static bool valid(const Config& c, const Problem& p, const Arch& arch);
  static Config default_config(const Problem& p, const Arch& arch);
  static unsigned shared_bytes(const Config& c, const Problem& p);
  static KernelSpec spec(const Config& c, const Problem& p, const Arch& arch);
  static void launch(const Program& program, const Config& c, const Problem& p,
                     const Args& call_args, StreamHandle stream);
  // The main loop over a parameter block type (KjitFlashBackwardParams, or
  // KjitGroupedBackwardParams); the prep and dq kernels are always per call (per group).
  static KernelSpec spec_for(const Config& c, const Problem& p, const Arch& arch,
                             const char* params);
  // launch()'s steps, which a grouped call runs per group (maps, prep, dq) or once (main loop).
  static void encode_maps(Args& args, const Config& c, const Problem& p);
  static void launch_prep(const Program& program, const Problem& p, const Args& args,
                          StreamHandle stream);
  static LaunchConfig main_grid(const Config& c, const Problem& p, StreamHandle stream);
  // The program's main-loop instance for that grid: 1 (key tiles fastest) or 3 (kHeadsFirst).
  static unsigned main_kernel(const LaunchConfig& grid);
  static void launch_dq(const Program& program, const Config& c, const Problem& p, const Args& args,
                        StreamHandle stream);
  static std::vector<Problem> shipped(const Arch& arch);

  static std::vector<TensorSpec> tensors(const Problem& p);
  static Args args(const Problem& p, const std::vector<TensorView>& t);
  static double tolerance(const Problem&) { return 2e-2; }
  static std::vector<Preset<Problem>> presets();

  // Workspace: fp32 lse2 and dsum [rows x Hq] (each followed by KJIT_BACKWARD_STATS_SLACK
  // floats) then, unless deterministic, the fp32 dq accumulator [rows x Hq x D] (rows = B x Sq,
  // or Tq when packed), each part 256-byte aligned.
  static std::size_t workspace_bytes(std::int64_t rows, std::int64_t heads_q, std::int64_t head_dim,
                                     bool deterministic);
  static void attach_workspace(Args& args, void* workspace, std::int64_t rows,
                               std::int64_t head_dim, bool deterministic);
  // The caller's workspace (options.workspace), checked against the `bytes` the call needs.
  static void* callers_workspace(const attention::BackwardOptions& o, std::size_t bytes);

  // The op's validation (host only). The workspace is attached afterwards.
  static Call<FlashBackward> validate(const TensorView& q, const TensorView& k, const TensorView& v,
                                      const TensorView& out, const TensorView& dout,
                                      const TensorView& lse, const TensorView& dq,
                                      const TensorView& dk, const TensorView& dv,
                                      const attention::BackwardOptions& o);
  static Call<FlashBackward> validate_varlen(const TensorView& q, const TensorView& k,
                                             const TensorView& v, const TensorView& out,
                                             const TensorView& dout, const TensorView& lse,
                                             const TensorView& dq, const TensorView& dk,
                                             const TensorView& dv, const attention::Varlen& seqlens,
                                             const attention::BackwardOptions& o);
};

}  // namespace kjit::ops

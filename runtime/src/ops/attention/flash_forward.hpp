// The attention forward family: templates/attention/flash_forward.cuh (mma.sync, sm_80+),
// flash_forward_sm90.cuh (wgmma, sm_90a) and flash_forward_sm90_ws.cuh (wgmma with a producer
// warpgroup, sm_90a), their tile configs, the validation of batched and packed inputs, and the
// launch. kjit::attention::forward / forward_varlen run through it.
#pragma once

#include <cstdint>
#include <vector>

#include "attention/flash_params.h"
#include "kjit/attention.hpp"
#include "ops/kernel_family.hpp"

namespace kjit::ops {

struct FlashForward {
  static constexpr const char* kName = "attention";
  static std::vector<Source> sources();  // every main loop: any may win a tuning run

  static constexpr std::int64_t kMainloopMma = 80, kMainloopWgmma = 90, kMainloopWgmmaWs = 91,
                                kMainloopWgmmaWsOverlap = 92, kMainloopWgmmaWsPersistent = 93;
  // K and V tiles in flight for the loops whose compute warps copy (the producer warp's loop:
  // ws_stages).
  static constexpr std::int64_t kStages = 2;
  static constexpr std::int64_t kHeadDims[] = {64, 96, 128, 192, 256};

  // A packed (varlen) call is the batched problem of B sequences of its longest lengths.
  struct Problem {
    DType dtype = DType::BFloat16;
    std::int64_t batch = 0, heads_q = 0, heads_k = 0, head_dim = 0;
    std::int64_t seqlen_q = 0, seqlen_k = 0;
    bool causal = false;
    bool empty() const { return seqlen_q == 0 || batch == 0; }
  };
  // mainloop 80: mma.sync, each warp owns 16 x m_tiles query rows (block_m / (16 m_tiles) warps);
  // mainloop 90: wgmma, a warpgroup per 64 rows (m_tiles 1); mainloop 91: the same consumer
  // warpgroups (block_m 128, or 192 at hd 64) beside a producer warp that loads through the copy
  // engine (TMA); 92: 91 with FA3's intra-warpgroup overlap (a warpgroup's softmax under its own
  // P V); 93: 92 over persistent blocks, one an SM, claiming tiles at run time (plain calls,
  // causal or not). block_n keys per tile.
  struct Config {
    std::int64_t mainloop = kMainloopMma, block_m = 0, block_n = 0, m_tiles = 1;
    bool wgmma() const { return mainloop == kMainloopWgmma || warp_specialized(); }
    bool warp_specialized() const {
      return mainloop == kMainloopWgmmaWs || mainloop == kMainloopWgmmaWsOverlap ||
             mainloop == kMainloopWgmmaWsPersistent;
    }
    unsigned threads() const;
  };
  using Args = KjitFlashParams;

  static constexpr Field<Problem> kShape[] = {field<&Problem::batch>("B", tuning::Bucket::Pow2),
                                              field<&Problem::heads_q>("Hq"),
                                              field<&Problem::heads_k>("Hk"),
                                              field<&Problem::head_dim>("D"),
                                              field<&Problem::seqlen_q>("Sq", tuning::Bucket::Pow2),
                                              field<&Problem::seqlen_k>("Sk", tuning::Bucket::Pow2),
                                              field<&Problem::causal>("causal")};
  static constexpr Field<Config> kConfig[] = {
      field<&Config::mainloop>("mainloop"), field<&Config::block_m>("block_m"),
      field<&Config::block_n>("block_n"), field<&Config::m_tiles>("m_tiles")};
  static constexpr DType kDTypes[] = {DType::Float16, DType::BFloat16};

  static void check(const Problem& p);
  static std::vector<Config> space(const Problem& p, const Arch& arch);
  static bool valid(const Config& c, const Problem& p, const Arch& arch);
  static Config default_config(const Problem& p, const Arch& arch);
  // The wgmma loop's tile for the problem's head dim: three warpgroups pay off at hd 64 (the
  // tuner's pick on 5 of 6 fa-bench rows); 128-key tiles up to hd 128, 64 above (shared memory).
  static Config wgmma_config(const Problem& p) {
    return {kMainloopWgmma, p.head_dim <= 64 ? 192 : 128, p.head_dim <= 128 ? 128 : 64, 1};
  }
  // The warp-specialised loops' default (H100 sweep, 2026-12-05, docs/perf.md): the overlap loop,
  // over persistent blocks where causal (their longest-first claims: +1-5 % causal, 0-3 % slower
  // full); three consumer warpgroups at hd 64, as FA3; FA3's key tiles (112 keys at hd 192, 80 at
  // hd 256: +6-10 % over 64).
  static Config warp_specialized_config(const Problem& p) {
    Config c = wgmma_config(p);
    c.mainloop = p.causal ? kMainloopWgmmaWsPersistent : kMainloopWgmmaWsOverlap;
    if (p.head_dim == 192) c.block_n = 112;
    if (p.head_dim == 256) c.block_n = 80;
    return c;
  }
  // The warp-specialised loop's K and V stages: three, a turn of slack for each consumer
  // warpgroup, where they fit sm_90's 227 KiB (hd 128 with 128-key tiles fills 225 KiB); else
  // two (hd 256, and FA3's longer key tiles).
  static std::int64_t ws_stages(const Config& c, const Problem& p);
  // The key tiles the warp-specialised loops take: wgmma's S widths (FA3's 176 at hd 128, 112 at
  // hd 192 and 80 at hd 256 beside 64 and 128) where S, P and O fit the consumers' registers.
  static constexpr std::int64_t kWsBlockNs[] = {64, 80, 112, 128, 176};
  static unsigned shared_bytes(const Config& c, const Problem& p);
  static KernelSpec spec(const Config& c, const Problem& p, const Arch& arch);
  // The kernel over a parameter block type: `params` (KjitFlashParams, or
  // KjitGroupedFlashParams), or for the warp-specialised loop `tma_params` (KjitFlashTmaParams,
  // or KjitGroupedFlashTmaParams).
  static KernelSpec spec_for(const Config& c, const Problem& p, const Arch& arch,
                             const char* params, const char* tma_params);
  static void launch(const Program& program, const Config& c, const Problem& p, const Args& args,
                     StreamHandle stream);
  // The warp-specialised kernel's parameters: the call's, the copy engine's maps of its Q
  // (block_m rows a box), K and V (block_n), and the persistent loop's tiles and items
  // (next_item is the launch's to set). They carry the call's pointers (encoded per call, on the
  // host); tma_q is Q's alone.
  static KjitFlashTmaParams tma_params(const Config& c, const Problem& p, const Args& args);
  static KjitTensorMap tma_q(const Config& c, const Problem& p, const Args& args);
  static std::vector<Problem> shipped(const Arch& arch);

  static std::vector<TensorSpec> tensors(const Problem& p);
  static Args args(const Problem& p, const std::vector<TensorView>& t);
  static double tolerance(const Problem&) { return 2e-2; }
  static std::vector<Preset<Problem>> presets();

  // The op's validation of its tensors (host only; no device work).
  static Call<FlashForward> validate(const TensorView& q, const TensorView& k, const TensorView& v,
                                     const TensorView& out, const TensorView& lse,
                                     const attention::ForwardOptions& o);
  static Call<FlashForward> validate_varlen(const TensorView& q, const TensorView& k,
                                            const TensorView& v, const TensorView& out,
                                            const TensorView& lse, const attention::Varlen& seqlens,
                                            const attention::ForwardOptions& o);
};

}  // namespace kjit::ops

// The MoE grouped GEMM family over moe align's contiguous layout and the masked one (wgmma and
// tensor copies, sm_90a): templates/moe/grouped_gemm.cuh for 16-bit weights and
// grouped_gemm_fp4.cuh for FP4 ones (NVFP4, MXFP4), specialised per dtype, weight format, block of
// rows (align's block), block of columns (FP4: of weight rows) and pipeline depth; in decode (a
// few tokens an expert) also through grouped_gemm_decode.cuh (either weights: mma.sync, the
// weights streamed through registers), which the config chooses.
// kjit::moe::grouped_gemm and grouped_gemm_masked run through it.
#pragma once

#include <cstdint>
#include <vector>

#include "kjit/moe.hpp"
#include "moe/grouped_gemm_params.h"
#include "ops/kernel_family.hpp"

namespace kjit::ops {

struct MoeGemm {
  static constexpr const char* kName = "moe_grouped_gemm";
  static std::vector<Source> sources() {
    return {Source::embedded("moe/grouped_gemm.cuh"), Source::embedded("moe/grouped_gemm_fp4.cuh"),
            Source::embedded("moe/grouped_gemm_decode.cuh")};
  }

  // weights: 16-bit as x, or grouped_gemm_fp4.cuh's format.
  enum WeightFormat : std::int64_t { kSameAsX = 0, kNvFp4 = 1, kMxFp4 = 2 };
  // rows: the contiguous layout's (a multiple of block_m, align's block), or the masked layout's
  // rows per expert (masked 1: x [experts, rows, k]); w [experts, n, k] (FP4: codes
  // [experts, n, k / 2] and scales); epilogue:
  // moe::GemmEpilogue::Kind (grouped_gemm.cuh's kPlain, kSwiGLU, kRoutingWeights). decode 1:
  // the layout holds a quarter of a block of pairs an expert or less (classify(), from the exact
  // rows: a power-of-two bucket of rows holds decode and prefill layouts alike).
  struct Problem {
    DType dtype = DType::BFloat16;
    std::int64_t rows = 0, n = 0, k = 0, experts = 0, block_m = 128, epilogue = 0, masked = 0,
                 weights = kSameAsX, decode = 0;
  };
  // block_n: columns of y a block computes (the FP4 kernel's weight rows). decode 1: through
  // grouped_gemm_decode.cuh (block_n 64; stages: the K steps of weights a thread has in flight,
  // 2 to 6, its ring's slots in shared memory), two sets of 4 warps over K's steps; decode 2: the
  // same with one set. persistent 1 (16-bit weights): one block an SM walks the tiles.
  struct Config {
    std::int64_t block_n = 128, stages = 4, decode = 0, persistent = 0;
  };
  using Args = KjitMoeGemmParams;

  static constexpr Field<Problem> kShape[] = {field<&Problem::rows>("rows", tuning::Bucket::Pow2),
                                              field<&Problem::n>("N"),
                                              field<&Problem::k>("K"),
                                              field<&Problem::experts>("E"),
                                              field<&Problem::block_m>("block_m"),
                                              field<&Problem::epilogue>("epilogue"),
                                              field<&Problem::masked>("masked"),
                                              field<&Problem::weights>("weights"),
                                              field<&Problem::decode>("decode")};
  static constexpr Field<Config> kConfig[] = {
      field<&Config::block_n>("block_n"), field<&Config::stages>("stages"),
      field<&Config::decode>("decode"), field<&Config::persistent>("persistent")};
  static constexpr DType kDTypes[] = {DType::BFloat16, DType::Float16};

  static void check(const Problem& p);
  // Sets p.decode from p's exact rows, block, experts and layout; the validations call it, and
  // whoever changes those fields of a problem after them.
  static void classify(Problem& p);
  static std::vector<Config> space(const Problem& p, const Arch& arch);
  static bool valid(const Config& c, const Problem& p, const Arch& arch);
  static Config default_config(const Problem& p, const Arch& arch);
  static unsigned shared_bytes(const Config& c, const Problem& p);
  static KernelSpec spec(const Config& c, const Problem& p, const Arch& arch);
  static void launch(const Program& program, const Config& c, const Problem& p, const Args& args,
                     StreamHandle stream);
  static std::vector<Problem> shipped(const Arch& arch);

  // The tuner's workload: every block of rows on a random expert.
  static std::vector<TensorSpec> tensors(const Problem& p);
  static Args args(const Problem& p, const std::vector<TensorView>& t);
  static double tolerance(const Problem&) { return 1e-2; }
  // GLM-4.7-Flash's gate/up (N 3072, K 2048, SwiGLU) and down (N 2048, K 1536, routing
  // weights) projections over 64 experts, top 4, T 256 to 16384 tokens.
  static std::vector<Preset<Problem>> presets();

  // The experts' weights as the ops take them: 16-bit w [E, N, K], or FP4 (moe::Fp4Weights).
  struct Weights {
    // Implicit, so that either form passes where weights are taken.
    Weights(const TensorView& w) : codes(w) {}
    Weights(const moe::Fp4Weights& w)
        : codes(w.codes),
          scales(w.scales),
          tensor_scale(w.tensor_scale),
          format(w.format == moe::Fp4Format::kNvFp4 ? kNvFp4 : kMxFp4) {}
    TensorView codes, scales, tensor_scale;  // codes: the 16-bit w, or the FP4 codes
    std::int64_t format = kSameAsX;
  };
  // The weights' shape into p (experts, n, weights) and every check of them against p's dtype
  // and K: a 16-bit w [E, N, K] of x's dtype, or FP4 codes [E, N, K / 2], scales
  // [E, N, K / block] and NVFP4's tensor scale [E] or [1]; then check(p). `experts`: the experts
  // the layout holds (0: any). Host only (the layer's check before any device work).
  static void check_weights(Problem& p, const Weights& weights, std::int64_t experts);
  // The layer's block of rows (align's) for `pairs` routed pairs over `experts`, hidden size
  // `hidden` and intermediate `inter`, the projections' weights in formats `gate_up` and `down`:
  // 64 while the experts average at most 64 pairs (an expert's run is one block, and 128 rows
  // would multiply twice the padding); 256 from 1024 pairs an expert on where both GEMMs take it
  // (takes_256_rows), as each dequantised k-block of weights then feeds twice the tokens and an
  // expert's last, partly held block, which costs a full one's dequantisation, is one in five or
  // fewer; else 128.
  static int layout_block(std::int64_t pairs, std::int64_t experts, std::int64_t hidden,
                          std::int64_t inter, std::int64_t gate_up, std::int64_t down);
  // Whether FP4 weights of format `weights` over N `n` and K `k` run in blocks of 256 rows: N a
  // multiple of 128 (their 128 weight rows a block) and two stages with the scales of a row's K
  // in sm_90a's shared memory (block_n 128 has no narrower fallback there).
  static bool takes_256_rows(std::int64_t weights, std::int64_t n, std::int64_t k);
  // y's columns: N, or N / 2 after SwiGLU (a gate row and an up row make one).
  static std::int64_t y_columns(const Problem& p);
  static Call<MoeGemm> validate(const TensorView& x_sorted, const TensorView& block_expert,
                                int block, const Weights& w, const TensorView& y,
                                const moe::GemmEpilogue& epilogue);
  // A contiguous-layout call whose weights hold fewer experts than the layout names (the
  // offloaded layer's cache slots, block_expert mapped to them): the config is chosen, and the
  // kernel specialised, for the layout's `layout_experts` (so as the same layer with every expert
  // resident: the same kernel and sums), while the kernel reads w's own experts.
  static void choose_for_layout(Call<MoeGemm>& call, std::int64_t layout_experts);
  static Call<MoeGemm> validate_masked(const TensorView& x, const TensorView& masked_m,
                                       int expected_m, const Weights& w, const TensorView& y,
                                       moe::GemmEpilogue::Kind epilogue);
};

// ops::run of a validated call, unless its layout holds no rows (no kernel loaded for nothing).
void run_unless_empty(const Call<MoeGemm>& call, StreamHandle stream);

}  // namespace kjit::ops

// Mixture-of-experts ops. So far the router (logits -> top-k expert ids and routing weights), the
// dispatch layout (the routed pairs grouped by expert for the grouped GEMM), the tokens' trip into
// that layout and back, the experts' grouped GEMM (16-bit or FP4 weights), the layer that chains
// them, load statistics and balancing losses, and the FP4 weight quantizer.
#pragma once

#include "kjit/device.hpp"
#include "kjit/tensor.hpp"

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit::moe {

// GLM-4.7-Flash: sigmoid, top 4 of 64, renormalise, x1.8 (with its e_score_correction_bias).
// DeepSeek-V3: sigmoid, top 8 of 256, 8 groups of which the best 4 compete, renormalise, x2.5.
struct RouterOptions {
  bool sigmoid = false;  // false: softmax over the experts
  int top_k = 1;         // 1..min(32, E), and at most the kept groups' experts
  // DeepSeek's grouped top-k, as vLLM's grouped_topk: a group's score is its two best choice
  // scores summed with a correction bias (DeepSeek-V3), its best without one (DeepSeek-V2).
  // groups divides E, at most 32; topk_groups 1..groups.
  int groups = 1, topk_groups = 1;
  bool renormalize = false;  // weights divided by their sum
  float scaling = 1.f;       // then multiplied by this (routed_scaling_factor)
};

// logits [T, E] fp32, bf16 or fp16 (rows any stride, experts contiguous), E 1..1024; bias [E]
// fp32 contiguous, added to the scores for the choice only (a view with null data: none); ids
// [T, k] int32 and weights [T, k] fp32 (rows contiguous). Ties go to the lower expert id. A NaN
// logit (sigmoid) ranks below every number: chosen only when fewer than k are numbers, its weight
// NaN. With softmax a NaN or +inf logit makes the token's normaliser NaN: every score is NaN,
// the choice falls to the k lowest ids and all the token's weights are NaN (check logits
// upstream).
void router_topk(const TensorView& logits, const TensorView& bias, const TensorView& ids,
                 const TensorView& weights, const RouterOptions& options, StreamHandle stream);

// The dispatch layout of ids [T, k] (int32) over `experts` (1 to 1024): pair i = t k + j's index
// in `sorted`, grouped by expert in pair order, each expert's run padded to a multiple of `block`
// (1 to 1024) rows with the value T k (vLLM's moe_align_block_size). All int32 on the device:
// sorted [R], block_expert [R / block] (-1 past the padded total), where R is align_capacity or
// more (whole blocks; the rows past the padded total are padding too), counts [E], offsets [E + 1]
// (offsets[E]: the padded total), invalid [1]: pairs whose id is outside [0, E), which are not
// placed (the ids are device data: check it where they may be wrong).
struct Alignment {
  TensorView sorted, block_expert, counts, offsets, invalid;
};
// The most rows any routing of `pairs` pairs pads to: min(E, pairs) blocks, and one more for each
// further `block` pairs (one expert holding all the rest).
std::int64_t align_capacity(std::int64_t pairs, int experts, int block);
void align(const TensorView& ids, int experts, int block, const Alignment& out,
           StreamHandle stream);

// The tokens x [T, D] (bf16 or fp16, D a multiple of 8, rows 16-byte aligned; top_k 1..32) in
// align's layout: x_sorted [rows, D] (rows = sorted's length) with row i = x[sorted[i] / k],
// zeros for a padding row (zero_padding false: padding rows left unwritten, for a caller whose
// GEMM's padding rows are not read either: GemmEpilogue::zero_padding); positions [T k] int32:
// pair p's row, -1 for a pair align did not place (an expert id out of range).
void permute(const TensorView& x, const TensorView& sorted, int top_k, const TensorView& x_sorted,
             const TensorView& positions, StreamHandle stream, bool zero_padding = true);

// Back to token order: out[t] = shared[t] + sum_j weights[t, j] y_sorted[positions[t k + j]],
// summed in fp32 in slot order and rounded once. y_sorted [rows, D], out and shared [T, D] (one
// dtype, bf16 or fp16, as permute's x); weights [T, k] fp32 contiguous, or a view with null data
// for weights of 1 (when the down projection applied them); shared: the shared expert's output,
// or null data for none. Positions outside [0, rows) count as pairs not placed.
void unpermute(const TensorView& y_sorted, const TensorView& positions, int top_k,
               const TensorView& weights, const TensorView& shared, const TensorView& out,
               StreamHandle stream);

// What the experts' GEMM does to its fp32 products before rounding them to y's dtype.
struct GemmEpilogue {
  enum class Kind {
    kPlain,           // y = the product
    kSwiGLU,          // w's rows interleave gate and up (row 2c gate c, 2c + 1 up c):
                      // y[r, c] = silu(gate) up, y of N / 2 columns
    kRoutingWeights,  // y[r] = the product times weights[sorted[r]] (0 for a padding row)
  };
  Kind kind = Kind::kPlain;
  // kRoutingWeights: align's sorted [rows] int32 and the router's weights [T, k] fp32 contiguous.
  // Optional with the other epilogues over the contiguous layout: given, the FP4 GEMM multiplies
  // only the rows of a block that hold pairs (decode: a few an expert), padding rows still 0.
  TensorView sorted, weights;
  // false: the rows of a block that hold no pair may be left unwritten (their values unspecified),
  // for a caller that reads the pairs' rows only, as unpermute does (the layer passes false: in
  // decode, a block of 64 rows holds one or two pairs, and its 62 rows of zeros cost up to a
  // tenth of the down projection's bytes).
  bool zero_padding = true;
};

// The experts' GEMM over align's layout: y[r] = x_sorted[r] w[e]^T for every row r of a block of
// `block` rows (align's block: 64 or 128; 256 with FP4 weights and N a multiple of 128) whose
// expert is e = block_expert[r / block], then the epilogue; the rows of a block with no expert (-1)
// are not written. x_sorted [rows, K], w [E, N, K] (K contiguous) and y [rows, N] (N / 2 after
// SwiGLU) of one dtype (bf16 or fp16, rows 16-byte aligned), fp32 accumulation; K a multiple of 64,
// N of 64. sm_90a only so far (InvalidArgument elsewhere). An expert id past w's E reads zero
// weights.
void grouped_gemm(const TensorView& x_sorted, const TensorView& block_expert, int block,
                  const TensorView& w, const TensorView& y, const GemmEpilogue& epilogue,
                  StreamHandle stream);

// FP4 expert weights (moe_expert_gemm_fp4): NVFP4 (blocks of 16 K, E4M3 scales and a fp32
// tensor scale amax / (448 x 6)) or MXFP4 (blocks of 32 K, E8M0 scales 2^(floor(log2 amax) - 2)).
// codes [E, N, K / 2] uint8 (element 2i in the low nibble; rows 16-byte aligned); scales
// [E, N, K / block] uint8 (rows 4-byte aligned for NVFP4, 2 for MXFP4); tensor_scale: NVFP4's,
// fp32 [E] (one per expert), [1] or 0-d (one for all); MXFP4: not read (null data allowed). The
// dequantisation is exact for every finite NVFP4 scale and for MXFP4 scales from 2^-118 to 2^8:
// a larger one (quantize_fp4's choice for a block whose largest magnitude is 2048 or more)
// overflows bf16 on the way (infinity, NaN with a zero code), a smaller one loses bits.
enum class Fp4Format { kNvFp4, kMxFp4 };
// The K elements one scale byte covers.
constexpr int fp4_scale_block(Fp4Format format) {
  return format == Fp4Format::kNvFp4 ? 16 : 32;
}
struct Fp4Weights {
  Fp4Format format = Fp4Format::kNvFp4;
  TensorView codes, scales, tensor_scale;
};
// The grouped GEMM with FP4 weights, dequantised to bf16 inside the kernel (exactly: e2m1 x
// scale fits bf16) for bf16 wgmma with fp32 accumulation; x_sorted and y bf16. Otherwise as
// above.
void grouped_gemm(const TensorView& x_sorted, const TensorView& block_expert, int block,
                  const Fp4Weights& w, const TensorView& y, const GemmEpilogue& epilogue,
                  StreamHandle stream);

// The same over the masked layout (decode under CUDA graphs: the counts stay on the device):
// x [E, M, K], masked_m [E] int32 on the device (the rows of each expert that hold tokens; more
// than M counts as M), w [E, N, K], y [E, M, N] (N / 2 after SwiGLU); rows past masked_m[e] are
// not written. expected_m: the rows an expert typically holds (0: unknown), which picks the block
// of rows. Epilogues: plain or SwiGLU.
void grouped_gemm_masked(const TensorView& x, const TensorView& masked_m, int expected_m,
                         const TensorView& w, const TensorView& y, GemmEpilogue::Kind epilogue,
                         StreamHandle stream);
void grouped_gemm_masked(const TensorView& x, const TensorView& masked_m, int expected_m,
                         const Fp4Weights& w, const TensorView& y, GemmEpilogue::Kind epilogue,
                         StreamHandle stream);

// Load statistics and balancing losses of a router's choices (Switch/GShard, DeepSeek's
// sequence-wise variant, ST-MoE's z-loss, the Loss-Free Balancing paper's MaxVio), each sum in a
// fixed order (the same bits run to run). With f_i = counts_i / (k T) and P_i the mean of
// probs[:, i]: losses = {aux_coeff E sum_i f_i P_i, the same per sequence averaged over the
// non-empty sequences, z_coeff mean_t logsumexp(logits[t])^2, (max_i counts_i - k T / E) /
// (k T / E)}.
struct BalanceOptions {
  float aux_coeff = 1.f, z_coeff = 1.f;
  float bias_rate = 1e-3f;  // DeepSeek-V3's gamma: b_i += rate sign(k T / E - counts_i)
};
// Outputs, contiguous on the device: counts [E] int32, f [E], p [E] and losses [4] fp32.
struct BalanceStats {
  TensorView counts, f, p, losses;
};
// ids [T, k] int32 (ids outside [0, E) not counted); probs [T, E] fp32 (the router's
// probabilities); logits [T, E] fp32, bf16 or fp16 (null data: z-loss 0); cu_seqlens [S + 1]
// int32 with max_seqlen at least every sequence's length (null data: one sequence of T tokens; a
// longer sequence makes the losses NaN, its tail uncounted);
// bias [E] fp32, updated in place when its data is not null (T k at most 2^24).
void balance(const TensorView& ids, const TensorView& probs, const TensorView& logits,
             const TensorView& cu_seqlens, int max_seqlen, const TensorView& bias,
             const BalanceOptions& options, const BalanceStats& stats, StreamHandle stream);

// align's block_expert [blocks] mapped through slot_of_expert [E] (both int32 on the device; -1:
// the expert is not in this pass): block_slot[b] = slot_of_expert[block_expert[b]], -1 for a
// block without an expert. The offloaded layer's step (kjit/expert_offload.hpp): the grouped GEMM
// then reads the experts from cache slots and skips the blocks of -1.
void map_block_experts(const TensorView& block_expert, const TensorView& slot_of_expert,
                       const TensorView& block_slot, StreamHandle stream);

// A MoE layer (GLM-4.7-Flash's, or any hidden size, expert count, top-k and intermediate size the
// weights give): router_topk over the caller's router logits [T, E] (x's router projection),
// align, permute, the gate/up GEMM with SwiGLU, the down GEMM with the routing weights, and
// unpermute adding `shared` (the shared expert's output [T, H], or null data for none) into out
// [T, H]. x [T, H] and the weights bf16 or fp16; gate_up [E, 2 I, H] with gate and up rows
// interleaved (row 2c gate c, 2c + 1 up c), down [E, H, I]; router_bias [E] fp32 or null data.
// Scratch (about T k + E block rows of H, I and H elements) is stream-ordered. sm_90a (the GEMM).
struct LayerWeights {
  TensorView gate_up, down, router_bias;
};
struct LayerOptions {
  RouterOptions router;
  // Rows of the GEMMs' blocks (align's block): 64 or 128 (or 256 with FP4 weights), or 0 to
  // choose by the tokens: 64 while the experts average at most 64 routed pairs (decode and small
  // batches: an expert's run is then one block, and a 128-row block would multiply twice the
  // padding); FP4 weights 256 from 1024 pairs an expert on where both GEMMs take them (H a
  // multiple of 128, and room for two stages beside a row's scales: NVFP4's H and I up to about
  // 19k), as each dequantised weight then feeds twice the tokens; else 128.
  int block = 0;
};
void layer(const TensorView& x, const TensorView& router_logits, const LayerWeights& weights,
           const TensorView& shared, const LayerOptions& options, const TensorView& out,
           StreamHandle stream);
// The same with FP4 experts (moe_expert_gemm_fp4): codes [E, 2 I, H / 2] and [E, H, I / 2] with
// their scales; x bf16.
struct Fp4LayerWeights {
  Fp4Weights gate_up, down;
  TensorView router_bias;
};
void layer(const TensorView& x, const TensorView& router_logits, const Fp4LayerWeights& weights,
           const TensorView& shared, const LayerOptions& options, const TensorView& out,
           StreamHandle stream);

// Expert weights to FP4 for the FP4 GEMM (Fp4Format, above), E2M1 codes rounded to nearest with
// ties to even, saturating; bit for bit as the CPU reference. w [R, C] bf16 or fp16 (C a multiple
// of the block); codes [R, C / 2] uint8, element 2i in the low nibble; scales [R, C / block]
// uint8; tensor_scale [1] fp32 (MXFP4: written 1). Dequantised: e2m1(code) x scale x
// tensor_scale. Quantise each expert's [N, K] for a tensor scale per expert.
void quantize_fp4(const TensorView& w, Fp4Format format, const TensorView& codes,
                  const TensorView& scales, const TensorView& tensor_scale, StreamHandle stream);

}  // namespace kjit::moe
#pragma GCC visibility pop

// CPU references of the MoE ops, in double precision (the kernels' specification):
//  - route: the router's top-k (softmax or sigmoid scores; a correction bias used only for the
//    choice; DeepSeek's grouped top-k: a group's score is the sum of its two best corrected
//    scores, only the top topk_group groups compete; renormalisation; a scaling factor). Ties go
//    to the lower expert id (and the lower group id).
//  - align: tokens grouped by expert as vLLM's moe_align_block_size lays them out.
//  - FP4 formats: E2M1 and E4M3 codes (round to nearest, ties to even; E4M3 saturating at 448),
//    NVFP4 (16-element blocks, E4M3 scales, an fp32 tensor scale) and MXFP4 (32-element blocks,
//    E8M0 scales) quantisation and dequantisation.
#pragma once

#include <cstdint>
#include <vector>

namespace kjit::reference {

struct RouterConfig {
  bool sigmoid = false;      // false: softmax over the experts
  std::vector<double> bias;  // per expert, added for the choice only; empty: none
  int groups = 1, topk_groups = 1, top_k = 1;
  bool renormalize = false;
  double scaling = 1.0;
};
struct Routing {
  std::vector<int> ids;         // [T][k]
  std::vector<double> weights;  // [T][k]
};
// logits [T][E].
Routing route(const std::vector<double>& logits, int tokens, int experts, const RouterConfig& c);

struct Alignment {
  std::vector<int> counts;   // [E]: (token, slot) pairs routed to each expert
  std::vector<int> offsets;  // [E + 1]: each expert's start in `sorted`, padded to `block`
  std::vector<int> sorted;   // flat pair index t * k + j by expert, in pair order; padding T * k
};
Alignment align(const std::vector<int>& ids, int tokens, int top_k, int experts, int block);

// Load statistics and balancing losses (kjit::moe::balance's definitions), in fp64.
struct Balance {
  std::vector<int> counts;      // pairs per expert (ids outside [0, E) not counted)
  std::vector<double> f, p;     // counts / (k T), mean probability
  double aux = 0, seq_aux = 0;  // aux_coeff E sum_i f_i P_i; per sequence, mean over non-empty
  double z = 0;                 // z_coeff mean_t logsumexp(logits[t])^2 (0 without logits)
  double max_vio = 0;           // (max_i counts_i - k T / E) / (k T / E)
};
// probs and logits [T, E] row-major (logits may be empty); cu_seqlens [S + 1] (empty: one
// sequence of T tokens).
Balance balance(const std::vector<int>& ids, const std::vector<double>& probs,
                const std::vector<double>& logits, const std::vector<int>& cu_seqlens, int tokens,
                int top_k, int experts, double aux_coeff, double z_coeff);

// FP4 and FP8 element codes.
std::uint8_t e2m1_code(double x);  // 4 bits: sign, 2 exponent, 1 mantissa
double e2m1_value(std::uint8_t code);
std::uint8_t e4m3_code(double x);  // OCP E4M3 (fn): no infinities, max 448
double e4m3_value(std::uint8_t code);

struct Fp4Tensor {
  std::vector<std::uint8_t> codes;   // one E2M1 code per element (unpacked)
  std::vector<std::uint8_t> scales;  // per block: E4M3 (NVFP4) or E8M0 (MXFP4)
  double tensor_scale = 1.0;         // NVFP4's fp32 per-tensor dequantisation scale; MXFP4: 1
};
// Rows of `cols` elements (cols a multiple of the block).
Fp4Tensor quantize_nvfp4(const std::vector<double>& x, int rows, int cols);
Fp4Tensor quantize_mxfp4(const std::vector<double>& x, int rows, int cols);
std::vector<double> dequantize(const Fp4Tensor& t, int rows, int cols, bool nvfp4);

}  // namespace kjit::reference

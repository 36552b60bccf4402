// The MoE layer: router -> align -> permute -> gate/up GEMM with SwiGLU -> down GEMM with the
// routing weights -> unpermute (+ the shared expert's output); 16-bit or FP4 expert weights.
// Every step validates its own operands; the layer checks what ties them together (the shapes the
// caller gives) first.
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "kjit/error.hpp"
#include "kjit/moe.hpp"
#include "ops/moe/layer_steps.hpp"

namespace kjit::ops {

MoeLayerSteps::Layout MoeLayerSteps::plan(const TensorView& x, const TensorView& router_logits,
                                          const Weights& gate_up_weights,
                                          const Weights& down_weights, const TensorView& shared,
                                          const moe::LayerOptions& options, const TensorView& out) {
  const bool fp4 = gate_up_weights.format != MoeGemm::kSameAsX;
  const TensorView &gate_up = gate_up_weights.codes, &down = down_weights.codes;
  const std::int64_t packing = fp4 ? 2 : 1;
  if (x.ndim != 2 || router_logits.ndim != 2 || gate_up.ndim != 3 || down.ndim != 3 ||
      router_logits.size(0) != x.size(0) || gate_up.size(0) != router_logits.size(1) ||
      down.size(0) != gate_up.size(0) || gate_up.size(2) * packing != x.size(1) ||
      down.size(1) != x.size(1) || down.size(2) * packing * 2 != gate_up.size(1)) {
    throw InvalidArgument(fmt::format(
        "moe layer: x [T, H], router_logits [T, E], gate_up [E, 2 I, H{0}] and down [E, H, I{0}] "
        "disagree: x {1}, router_logits {2}, gate_up {3}, down {4}",
        fp4 ? " / 2" : "", x.describe(), router_logits.describe(), gate_up.describe(),
        down.describe()));
  }
  // out and shared (when given) are unpermute's, the last step's: refused here, before any work.
  const auto token_rows = [&](const TensorView& t) {
    return t.ndim == 2 && t.size(0) == x.size(0) && t.size(1) == x.size(1) && t.dtype == x.dtype;
  };
  if (!token_rows(out) || (shared.data != nullptr && !token_rows(shared))) {
    throw InvalidArgument(fmt::format(
        "moe layer: out and shared (when given) must be [T, H] of x's dtype like x {}, got out {}, "
        "shared {}",
        x.describe(), out.describe(), shared.data != nullptr ? shared.describe() : "none"));
  }
  Layout l;
  l.tokens = x.size(0);
  l.hidden = x.size(1);
  l.experts = gate_up.size(0);
  l.inter = down.size(2) * packing;
  l.top_k = options.router.top_k;
  const std::int64_t pairs = l.tokens * l.top_k;
  l.block = options.block != 0 ? options.block
                               : MoeGemm::layout_block(pairs, l.experts, l.hidden, l.inter,
                                                       gate_up_weights.format, down_weights.format);
  // What the GEMMs would refuse after the router, align and permute ran: refused first, each
  // rule by its own message.
  if (l.top_k < 1) throw InvalidArgument(fmt::format("moe layer: top_k {} < 1", l.top_k));
  if (l.block != 64 && l.block != 128 && !(fp4 && l.block == 256)) {
    throw InvalidArgument(
        fmt::format("moe layer: block {} is not 64, 128, 256 (FP4 weights) or 0", l.block));
  }
  if (l.hidden % 64 != 0 || l.inter % 64 != 0) {
    throw InvalidArgument(
        fmt::format("moe layer: H {} and I {} must be multiples of 64 (the GEMMs' K and N)",
                    l.hidden, l.inter));
  }
  const bool dtypes =
      fp4 ? x.dtype == DType::BFloat16 && out.dtype == x.dtype
          : gate_up.dtype == x.dtype && down.dtype == x.dtype && out.dtype == x.dtype;
  if (!dtypes) {
    throw InvalidArgument(fmt::format(
        "moe layer: x, out and 16-bit weights must share one dtype, FP4 weights take bf16 x; got "
        "x {}, gate_up {}, down {}, out {}",
        dtype_name(x.dtype), dtype_name(gate_up.dtype), dtype_name(down.dtype),
        dtype_name(out.dtype)));
  }
  l.rows = moe::align_capacity(pairs, static_cast<int>(l.experts), l.block);
  // The GEMMs' own weight checks (FP4 scales and tensor scales included), before any device work.
  MoeGemm::Problem up{x.dtype,
                      l.rows,
                      0,
                      l.hidden,
                      0,
                      l.block,
                      static_cast<std::int64_t>(moe::GemmEpilogue::Kind::kSwiGLU)},
      down_projection{x.dtype,
                      l.rows,
                      0,
                      l.inter,
                      0,
                      l.block,
                      static_cast<std::int64_t>(moe::GemmEpilogue::Kind::kRoutingWeights)};
  MoeGemm::check_weights(up, gate_up_weights, l.experts);
  MoeGemm::check_weights(down_projection, down_weights, l.experts);
  l.parts = {{{DType::Int32, {l.tokens, l.top_k}},
              {DType::Float32, {l.tokens, l.top_k}},
              {DType::Int32, {l.rows}},
              {DType::Int32, {l.rows / l.block}},
              {DType::Int32, {l.experts}},
              {DType::Int32, {l.experts + 1}},
              {DType::Int32, {1}},
              {DType::Int32, {pairs}},
              {x.dtype, {l.rows, l.hidden}},
              {x.dtype, {l.rows, l.inter}},
              {x.dtype, {l.rows, l.hidden}}}};
  for (Part& part : l.parts) {
    std::int64_t elems = 1;
    for (std::int64_t n : part.shape)
      elems *= n;
    part.offset = l.total;
    l.total += (static_cast<std::size_t>(elems) * dtype_size(part.dtype) + 255) / 256 * 256;
  }
  return l;
}

MoeLayerSteps::MoeLayerSteps(const TensorView& x, const TensorView& router_logits,
                             const Weights& gate_up, const Weights& down, const TensorView& shared,
                             const moe::LayerOptions& options, const TensorView& out,
                             StreamHandle stream)
    : x_(x),
      router_logits_(router_logits),
      shared_(shared),
      out_(out),
      options_(options),
      stream_(stream),
      layout_(plan(x, router_logits, gate_up, down, shared, options, out)),
      scratch_(layout_.total, stream) {
  TensorView* views[kParts] = {&ids_,      &routing_, &sorted_,  &block_expert_,
                               &counts_,   &offsets_, &invalid_, &positions_,
                               &x_sorted_, &h_,       &y_sorted_};
  for (int i = 0; i < kParts; ++i) {
    const Part& part = layout_.parts[i];
    *views[i] =
        TensorView(static_cast<char*>(scratch_.data()) + part.offset, part.dtype, part.shape);
  }
}

void MoeLayerSteps::route(const TensorView& router_bias) {
  moe::router_topk(router_logits_, router_bias, ids_, routing_, options_.router, stream_);
  moe::align(ids_, static_cast<int>(layout_.experts), layout_.block,
             {sorted_, block_expert_, counts_, offsets_, invalid_}, stream_);
  // Padding rows left unwritten: the GEMMs' rows of output depend on their own rows of input
  // alone, and unpermute reads the pairs' rows only (experts(), below).
  moe::permute(x_, sorted_, static_cast<int>(layout_.top_k), x_sorted_, positions_, stream_, false);
}

void MoeLayerSteps::experts(const Weights& gate_up, const Weights& down,
                            const TensorView& block_expert) {
  // sorted and the weights given to both GEMMs: the FP4 kernel then skips padding rows; and the
  // padding rows left unwritten (unpermute reads the pairs' rows only, and a GEMM's row of
  // output depends on its own row of input alone).
  const moe::GemmEpilogue swiglu{moe::GemmEpilogue::Kind::kSwiGLU, sorted_, routing_, false},
      weighted{moe::GemmEpilogue::Kind::kRoutingWeights, sorted_, routing_, false};
  for (Call<MoeGemm> call :
       {MoeGemm::validate(x_sorted_, block_expert, layout_.block, gate_up, h_, swiglu),
        MoeGemm::validate(h_, block_expert, layout_.block, down, y_sorted_, weighted)}) {
    MoeGemm::choose_for_layout(call, layout_.experts);
    run_unless_empty(call, stream_);
  }
}

void MoeLayerSteps::combine() {
  moe::unpermute(y_sorted_, positions_, static_cast<int>(layout_.top_k), TensorView(), shared_,
                 out_, stream_);
}

}  // namespace kjit::ops

namespace kjit::moe {
namespace {

void run_layer(const TensorView& x, const TensorView& router_logits,
               const ops::MoeLayerSteps::Weights& gate_up, const ops::MoeLayerSteps::Weights& down,
               const TensorView& router_bias, const TensorView& shared, const LayerOptions& options,
               const TensorView& out, StreamHandle stream) {
  ops::MoeLayerSteps steps(x, router_logits, gate_up, down, shared, options, out, stream);
  steps.route(router_bias);
  steps.experts(gate_up, down, steps.block_expert());
  steps.combine();
}

}  // namespace

void layer(const TensorView& x, const TensorView& router_logits, const LayerWeights& weights,
           const TensorView& shared, const LayerOptions& options, const TensorView& out,
           StreamHandle stream) {
  run_layer(x, router_logits, weights.gate_up, weights.down, weights.router_bias, shared, options,
            out, stream);
}

void layer(const TensorView& x, const TensorView& router_logits, const Fp4LayerWeights& weights,
           const TensorView& shared, const LayerOptions& options, const TensorView& out,
           StreamHandle stream) {
  run_layer(x, router_logits, weights.gate_up, weights.down, weights.router_bias, shared, options,
            out, stream);
}

}  // namespace kjit::moe

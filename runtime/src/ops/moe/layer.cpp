// The MoE layer: the ops chained over one stream-ordered scratch allocation. Router -> align ->
// permute -> gate/up GEMM with SwiGLU -> down GEMM with the routing weights -> unpermute (+ the
// shared expert's output); 16-bit or FP4 expert weights. Every step validates its own operands; the
// layer checks what ties them together (the shapes the caller gives) first.
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "driver/stream_allocation.hpp"
#include "kjit/error.hpp"
#include "kjit/moe.hpp"
#include "ops/moe/grouped_gemm.hpp"

namespace kjit::moe {

namespace {

using Weights = ops::MoeGemm::Weights;

// The experts' weights 16-bit, or FP4 codes (two a byte along K) with their scales.
void run_layer(const TensorView& x, const TensorView& router_logits, const Weights& gate_up_weights,
               const Weights& down_weights, const TensorView& router_bias, const TensorView& shared,
               const LayerOptions& options, const TensorView& out, StreamHandle stream) {
  const bool fp4 = gate_up_weights.format != ops::MoeGemm::kSameAsX;
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
  const std::int64_t tokens = x.size(0), hidden = x.size(1), experts = gate_up.size(0),
                     inter = down.size(2) * packing, top_k = options.router.top_k;
  const std::int64_t pairs = tokens * top_k;
  const int block = options.block != 0 ? options.block : pairs <= 64 * experts ? 64 : 128;
  // What the GEMMs would refuse after the router, align and permute ran: refused first.
  const bool dtypes =
      fp4 ? x.dtype == DType::BFloat16 && out.dtype == x.dtype
          : gate_up.dtype == x.dtype && down.dtype == x.dtype && out.dtype == x.dtype;
  if (top_k < 1 || (block != 64 && block != 128) || hidden % 64 != 0 || inter % 64 != 0 ||
      !dtypes) {
    throw InvalidArgument(fmt::format(
        "moe layer: top_k {} (>= 1), block {} (64, 128 or 0), H {} and I {} (multiples of 64), "
        "x, out and 16-bit weights of one dtype, FP4 weights with bf16 x ({}, {}, {}, {})",
        top_k, block, hidden, inter, dtype_name(x.dtype), dtype_name(gate_up.dtype),
        dtype_name(down.dtype), dtype_name(out.dtype)));
  }
  const std::int64_t rows = align_capacity(pairs, static_cast<int>(experts), block);
  // The GEMMs' own weight checks (FP4 scales and tensor scales included), before any device work.
  ops::MoeGemm::Problem up{
      x.dtype, rows, 0, hidden, 0, block, static_cast<std::int64_t>(GemmEpilogue::Kind::kSwiGLU)},
      down_projection{x.dtype,
                      rows,
                      0,
                      inter,
                      0,
                      block,
                      static_cast<std::int64_t>(GemmEpilogue::Kind::kRoutingWeights)};
  ops::MoeGemm::check_weights(up, gate_up_weights, experts);
  ops::MoeGemm::check_weights(down_projection, down_weights, experts);
  // Scratch, one 256-byte-aligned part a tensor; each part's bytes follow from its shape.
  enum Part {
    kIds,
    kRouting,
    kSorted,
    kBlocks,
    kCounts,
    kOffsets,
    kInvalid,
    kPositions,
    kXSorted,
    kH,
    kYSorted,
    kParts
  };
  const std::pair<DType, std::vector<std::int64_t>> parts[kParts] = {
      {DType::Int32, {tokens, top_k}},
      {DType::Float32, {tokens, top_k}},
      {DType::Int32, {rows}},
      {DType::Int32, {rows / block}},
      {DType::Int32, {experts}},
      {DType::Int32, {experts + 1}},
      {DType::Int32, {1}},
      {DType::Int32, {pairs}},
      {x.dtype, {rows, hidden}},
      {x.dtype, {rows, inter}},
      {x.dtype, {rows, hidden}}};
  std::size_t offsets[kParts], total = 0;
  for (int i = 0; i < kParts; ++i) {
    std::int64_t elems = 1;
    for (std::int64_t n : parts[i].second)
      elems *= n;
    offsets[i] = total;
    total += (static_cast<std::size_t>(elems) * dtype_size(parts[i].first) + 255) / 256 * 256;
  }
  driver::StreamAllocation scratch(total, stream);
  auto view = [&](Part i) {
    return TensorView(static_cast<char*>(scratch.data()) + offsets[i], parts[i].first,
                      parts[i].second);
  };
  const TensorView ids = view(kIds), routing = view(kRouting), sorted = view(kSorted),
                   block_expert = view(kBlocks), positions = view(kPositions),
                   x_sorted = view(kXSorted), h = view(kH), y_sorted = view(kYSorted);

  // sorted and the weights given to both GEMMs: the FP4 kernel then skips padding rows.
  const GemmEpilogue swiglu{GemmEpilogue::Kind::kSwiGLU, sorted, routing},
      weighted{GemmEpilogue::Kind::kRoutingWeights, sorted, routing};
  router_topk(router_logits, router_bias, ids, routing, options.router, stream);
  align(ids, static_cast<int>(experts), block,
        {sorted, block_expert, view(kCounts), view(kOffsets), view(kInvalid)}, stream);
  permute(x, sorted, static_cast<int>(top_k), x_sorted, positions, stream);
  ops::run_unless_empty(
      ops::MoeGemm::validate(x_sorted, block_expert, block, gate_up_weights, h, swiglu), stream);
  ops::run_unless_empty(
      ops::MoeGemm::validate(h, block_expert, block, down_weights, y_sorted, weighted), stream);
  unpermute(y_sorted, positions, static_cast<int>(top_k), TensorView(), shared, out, stream);
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

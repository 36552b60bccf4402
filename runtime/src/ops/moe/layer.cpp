// The MoE layer: the ops chained over one stream-ordered scratch allocation. Router -> align ->
// permute -> gate/up GEMM with SwiGLU -> down GEMM with the routing weights -> unpermute (+ the
// shared expert's output). Every step validates its own operands; the layer checks what ties
// them together (the shapes the caller gives) first.
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "driver/stream_allocation.hpp"
#include "kjit/error.hpp"
#include "kjit/moe.hpp"

namespace kjit::moe {

void layer(const TensorView& x, const TensorView& router_logits, const LayerWeights& weights,
           const TensorView& shared, const LayerOptions& options, const TensorView& out,
           StreamHandle stream) {
  const TensorView &gate_up = weights.gate_up, &down = weights.down;
  if (x.ndim != 2 || router_logits.ndim != 2 || gate_up.ndim != 3 || down.ndim != 3 ||
      router_logits.size(0) != x.size(0) || gate_up.size(0) != router_logits.size(1) ||
      down.size(0) != gate_up.size(0) || gate_up.size(2) != x.size(1) ||
      down.size(1) != x.size(1) || down.size(2) * 2 != gate_up.size(1)) {
    throw InvalidArgument(fmt::format(
        "moe layer: x [T, H], router_logits [T, E], gate_up [E, 2 I, H] and down [E, H, I] "
        "disagree: x {}, router_logits {}, gate_up {}, down {}",
        x.describe(), router_logits.describe(), gate_up.describe(), down.describe()));
  }
  const std::int64_t tokens = x.size(0), hidden = x.size(1), experts = gate_up.size(0),
                     inter = down.size(2), top_k = options.router.top_k;
  const int block = options.block;
  // What the GEMMs would refuse after the router, align and permute ran: refused first.
  if (top_k < 1 || (block != 64 && block != 128) || hidden % 64 != 0 || inter % 64 != 0 ||
      gate_up.dtype != x.dtype || down.dtype != x.dtype || out.dtype != x.dtype) {
    throw InvalidArgument(fmt::format(
        "moe layer: top_k {} (>= 1), block {} (64 or 128), H {} and I {} (multiples of 64), "
        "x, gate_up, down and out of one dtype ({}, {}, {}, {})",
        top_k, block, hidden, inter, dtype_name(x.dtype), dtype_name(gate_up.dtype),
        dtype_name(down.dtype), dtype_name(out.dtype)));
  }
  const std::int64_t pairs = tokens * top_k;
  const std::int64_t rows = align_capacity(pairs, static_cast<int>(experts), block);
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

  router_topk(router_logits, weights.router_bias, ids, routing, options.router, stream);
  align(ids, static_cast<int>(experts), block,
        {sorted, block_expert, view(kCounts), view(kOffsets), view(kInvalid)}, stream);
  permute(x, sorted, static_cast<int>(top_k), x_sorted, positions, stream);
  grouped_gemm(x_sorted, block_expert, block, gate_up, h,
               {GemmEpilogue::Kind::kSwiGLU, TensorView(), TensorView()}, stream);
  grouped_gemm(h, block_expert, block, down, y_sorted,
               {GemmEpilogue::Kind::kRoutingWeights, sorted, routing}, stream);
  unpermute(y_sorted, positions, static_cast<int>(top_k), TensorView(), shared, out, stream);
}

}  // namespace kjit::moe

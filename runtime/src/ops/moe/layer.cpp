// The MoE layer: the ops chained over one stream-ordered scratch allocation. Router -> align ->
// permute -> gate/up GEMM with SwiGLU -> down GEMM with the routing weights -> unpermute (+ the
// shared expert's output). Every step validates its own operands; the layer checks what ties
// them together (the shapes the caller gives) first.
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
  const auto elem = static_cast<std::int64_t>(dtype_size(x.dtype));
  // Scratch, 256-byte parts: ids, weights, sorted, block_expert, counts, offsets, invalid,
  // positions (int32 / fp32), then x_sorted [rows, H], h [rows, I], y_sorted [rows, H].
  const std::int64_t sizes[] = {
      pairs * 4,           pairs * 4, rows * 4,  rows / block * 4,     experts * 4,
      (experts + 1) * 4,   4,         pairs * 4, rows * hidden * elem, rows * inter * elem,
      rows * hidden * elem};
  std::int64_t offsets[std::size(sizes)], total = 0;
  for (std::size_t i = 0; i < std::size(sizes); ++i) {
    offsets[i] = total;
    total += (sizes[i] + 255) / 256 * 256;
  }
  driver::StreamAllocation scratch(static_cast<std::size_t>(total), stream);
  auto at = [&](int i) { return static_cast<char*>(scratch.data()) + offsets[i]; };
  const TensorView ids(at(0), DType::Int32, {tokens, top_k}),
      routing(at(1), DType::Float32, {tokens, top_k}), sorted(at(2), DType::Int32, {rows}),
      block_expert(at(3), DType::Int32, {rows / block}), x_sorted(at(8), x.dtype, {rows, hidden}),
      h(at(9), x.dtype, {rows, inter}), y_sorted(at(10), x.dtype, {rows, hidden}),
      positions(at(7), DType::Int32, {pairs});

  router_topk(router_logits, weights.router_bias, ids, routing, options.router, stream);
  align(ids, static_cast<int>(experts), block,
        {sorted, block_expert, TensorView(at(4), DType::Int32, {experts}),
         TensorView(at(5), DType::Int32, {experts + 1}), TensorView(at(6), DType::Int32, {1})},
        stream);
  permute(x, sorted, static_cast<int>(top_k), x_sorted, positions, stream);
  grouped_gemm(x_sorted, block_expert, block, gate_up, h,
               {GemmEpilogue::Kind::kSwiGLU, TensorView(), TensorView()}, stream);
  grouped_gemm(h, block_expert, block, down, y_sorted,
               {GemmEpilogue::Kind::kRoutingWeights, sorted, routing}, stream);
  unpermute(y_sorted, positions, static_cast<int>(top_k), TensorView(), shared, out, stream);
}

}  // namespace kjit::moe

// The MoE layer's steps over one stream-ordered scratch allocation: route (router top-k, align,
// permute), the experts' two GEMMs (gate/up with SwiGLU, down with the routing weights) over a
// table of blocks, and combine (unpermute + the shared expert's output). moe::layer runs them in a
// row; the offloaded stack (kjit/expert_offload.hpp) runs the GEMMs once a pass over the cache
// slots, with align's blocks mapped to slots, and so gets moe::layer's rows and sums.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "driver/stream_allocation.hpp"
#include "kjit/moe.hpp"
#include "ops/moe/grouped_gemm.hpp"

namespace kjit::ops {

class MoeLayerSteps {
 public:
  using Weights = MoeGemm::Weights;
  // Checks everything the steps take against each other (the weights' shapes and formats; their
  // data may be anywhere, the GEMMs get theirs in experts()) before any device work, then takes
  // the scratch on `stream`.
  MoeLayerSteps(const TensorView& x, const TensorView& router_logits, const Weights& gate_up,
                const Weights& down, const TensorView& shared, const moe::LayerOptions& options,
                const TensorView& out, StreamHandle stream);

  void route(const TensorView& router_bias);
  // Both GEMMs over the blocks `block_expert` (align's, or one mapped to cache slots) names in
  // `gate_up` and `down` (the same shapes as the constructor's but for the experts' count), with
  // the configs the layout's expert count chooses (MoeGemm::choose_for_layout).
  void experts(const Weights& gate_up, const Weights& down, const TensorView& block_expert);
  void combine();

  // The router's choices [T, k] int32 and align's expert of each block of rows, on the device.
  const TensorView& ids() const { return ids_; }
  const TensorView& block_expert() const { return block_expert_; }

 private:
  // The checked shapes and the scratch's parts (one 256-byte-aligned part a tensor).
  static constexpr int kParts = 11;
  struct Part {
    DType dtype;
    std::vector<std::int64_t> shape;
    std::size_t offset = 0;
  };
  struct Layout {
    std::int64_t tokens = 0, hidden = 0, experts = 0, inter = 0, top_k = 0, rows = 0;
    int block = 0;
    // ids, routing weights, sorted, block_expert, counts, offsets, invalid, positions, x_sorted,
    // h, y_sorted
    std::array<Part, kParts> parts;
    std::size_t total = 0;
  };
  static Layout plan(const TensorView& x, const TensorView& router_logits, const Weights& gate_up,
                     const Weights& down, const TensorView& shared,
                     const moe::LayerOptions& options, const TensorView& out);
  TensorView x_, router_logits_, shared_, out_;
  moe::LayerOptions options_;
  StreamHandle stream_;
  Layout layout_;
  driver::StreamAllocation scratch_;
  TensorView ids_, routing_, sorted_, block_expert_, counts_, offsets_, invalid_, positions_,
      x_sorted_, h_, y_sorted_;
};

}  // namespace kjit::ops

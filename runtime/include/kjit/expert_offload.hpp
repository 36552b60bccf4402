// MoE expert offloading: a stack of MoE layers whose experts live in page-locked host memory. Each
// layer has a cache of GPU slots (kjit/expert_cache.hpp decides: LRU or LFU, pinned experts,
// prefetch); a layer call routes on the GPU, brings the host its choices (the one host wait of the
// call: the loads depend on them), loads the missing experts on a stream of its own, and runs the
// experts' GEMMs over the slots once a pass (ExpertSlots' passes: more experts than slots run in
// several), the compute stream waiting only for the loads of the experts it routes to. The layout
// and sums are moe::layer's: the outputs are those of the same layer with every expert resident,
// bit for bit, whatever the cache size and policy (the GEMMs' configs are chosen as for the
// resident layer). After a layer routes, a predictor (kjit/routing_analysis.hpp) prefetches what
// the next layer is expected to need; prefetch_from_logits brings in what a guess of the next
// layer's router logits chooses (mixtral-offloading's speculative trick: the next router applied to
// this hidden state).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kjit/device.hpp"
#include "kjit/expert_cache.hpp"
#include "kjit/moe.hpp"
#include "kjit/routing_analysis.hpp"
#include "kjit/routing_trace.hpp"
#include "kjit/tensor.hpp"

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit::moe {

using OffloadOptions = ExpertCacheOptions;

// The cache's statistics, and what moved and waited on the GPU.
struct OffloadStats : ExpertCacheStats {
  std::int64_t bytes_on_demand = 0, bytes_prefetched = 0;  // host -> device
  double stall_ms = 0;  // the compute stream's waits for loads, summed
  double copy_ms = 0;   // the loader's copies, from each batch's first to its last
  double stall_ms_per_token() const { return tokens ? stall_ms / double(tokens) : 0; }
  // The loader's host -> device rate while copying, GB/s.
  double copy_gbps() const {
    return copy_ms > 0 ? double(bytes_on_demand + bytes_prefetched) / copy_ms / 1e6 : 0;
  }
};

class OffloadedMoe {
 public:
  // One entry a MoE layer, as moe::layer takes them, with the experts' tensors (16-bit gate_up
  // and down, or FP4 codes, scales and per-expert tensor scales) in page-locked host memory
  // (cuMemHostAlloc, cudaHostAlloc or registered), each expert's part contiguous; router_bias and
  // a shared FP4 tensor scale ([1]) on the device or null. All layers of one shape. Throws
  // InvalidArgument for slots outside top_k..experts, pinned experts that fill the slots, layers
  // that disagree (these before any device work), or host weights that are not page-locked.
  // Destruction waits for the stack's work (the caller may then free the host weights).
  OffloadedMoe(const std::vector<LayerWeights>& layers, const LayerOptions& options,
               const OffloadOptions& offload);
  OffloadedMoe(const std::vector<Fp4LayerWeights>& layers, const LayerOptions& options,
               const OffloadOptions& offload);
  ~OffloadedMoe();
  OffloadedMoe(const OffloadedMoe&) = delete;
  OffloadedMoe& operator=(const OffloadedMoe&) = delete;

  // moe::layer for MoE layer `index` (0..layers-1, called in order each step) on `stream`: one
  // stream for all calls (or streams the caller orders), since a slot's next load waits for its
  // last reader there. `sequences`: each token's sequence (the predictors' and the history's key;
  // empty: token t is sequence t). After an exception the layer's cache starts empty again (its
  // pinned experts stay).
  void layer(int index, const TensorView& x, const TensorView& router_logits,
             const TensorView& shared, const TensorView& out, StreamHandle stream,
             const std::vector<std::uint32_t>& sequences = {});
  // Prefetches into layer `index` the experts router_topk chooses on `guess_logits` [T, E] (with
  // the layer's router options and bias): call it before the layer, with the next router applied
  // to the current hidden state. Waits for the choice on the host, as layer() does.
  void prefetch_from_logits(int index, const TensorView& guess_logits, StreamHandle stream);

  OffloadStats stats() const;       // waits for the timing of loads still in flight
  RoutingTrace history() const;     // the records every layer still holds
  std::size_t cache_bytes() const;  // the slots' device memory, all layers

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kjit::moe
#pragma GCC visibility pop

// What a serving stack's expert cache decides, on the host, layer by layer: each layer's slots
// (ExpertSlots), the online predictor that prefetches the next layer's experts, the routing
// history, and the statistics (hits, misses, prefetch hits and waste, per layer and expert). The
// offloaded stack (kjit/expert_offload.hpp) runs one and executes its loads on the GPU;
// replay_expert_cache runs one over a trace, so `kjit moe analyze` and the tests see the hits the
// stack would get.
#pragma once

#include <cstdint>
#include <vector>

#include "kjit/routing_analysis.hpp"
#include "kjit/routing_trace.hpp"

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit::moe {

struct ExpertCacheOptions {
  CachePolicy policy = CachePolicy::Lru;  // Lru or Lfu (Optimal needs the future: replay_cache)
  int slots = 0;                          // a layer's slots, top_k to experts
  std::vector<std::vector<int>> pinned;   // a layer's experts kept resident (empty: none)
  // After layer l's step, each token's `prefetch` most likely experts at layer l + 1 by
  // `predictor` are brought in, most voted first, while the next layer has slots holding none of
  // the experts its last step used (its likely repeats) or a prefetch since chose (0: no
  // prefetch, loads on demand only).
  PredictorKind predictor = PredictorKind::CrossLayer;
  int prefetch = 0;
  std::int64_t history = 4096;  // records a layer the routing history keeps
};

struct ExpertCacheStats {
  std::int64_t tokens = 0;            // tokens through the stack (layer 0's steps)
  std::int64_t hits = 0, misses = 0;  // a step's distinct experts, resident or not
  std::int64_t prefetches = 0, prefetch_hits = 0, prefetches_wasted = 0;
  std::vector<std::int64_t> layer_hits, layer_misses;                // [layers]
  std::vector<std::vector<std::int64_t>> expert_uses, expert_loads;  // [layers][experts]

  double hit_rate() const { return hits + misses ? double(hits) / double(hits + misses) : 0; }
  // Of the prefetched experts, the share a step used; of the experts a step needed and did not
  // find resident by itself, the share a prefetch brought.
  double prefetch_precision() const { return prefetches ? double(prefetch_hits) / prefetches : 0; }
  double prefetch_recall() const {
    return prefetch_hits + misses ? double(prefetch_hits) / double(prefetch_hits + misses) : 0;
  }
};

class ExpertCache {
 public:
  // Throws InvalidArgument for slots outside top_k..experts, pinned experts that fill a layer's
  // slots or lie outside 0..experts-1, pinned lists for another number of layers, the Optimal
  // policy, prefetch outside 0..experts, history below 1.
  ExpertCache(int layers, int experts, int top_k, const ExpertCacheOptions& options);

  // Layer `layer`'s step: the router chose ids[t * top_k + j] for the tokens of `sequences`. The
  // distinct experts, in increasing id, go through the layer's slots (ExpertSlots::request), are
  // recorded and learnt; the outcome says which load where, pass by pass.
  ExpertSlots::Outcome step(int layer, const std::vector<std::uint32_t>& sequences,
                            const std::vector<int>& ids);
  // After `step` of `layer` (same tokens): the loads the predictor's prefetch for layer + 1 asks
  // for (none at the last layer or without prefetch).
  std::vector<ExpertSlots::Load> prefetch_next(int layer,
                                               const std::vector<std::uint32_t>& sequences,
                                               const std::vector<int>& ids);
  // Loads bringing the `chosen` experts (a repeated id: one more vote) into `layer`, most voted
  // first (ties: the lower id), until one finds no slot; they evict neither what a prefetch since
  // the layer's last step chose nor the chosen experts already resident, but may evict the last
  // step's (a guess of the router itself, such as the offloaded stack's prefetch_from_logits,
  // outranks them).
  std::vector<ExpertSlots::Load> prefetch(int layer, const std::vector<int>& chosen);
  // Forgets `layer`'s residency (its pinned experts stay), keeping the statistics: after a step
  // whose loads failed half queued.
  void forget(int layer);

  const ExpertSlots& slots(int layer) const { return slots_[layer]; }
  int layers() const { return static_cast<int>(slots_.size()); }
  int experts() const { return experts_; }
  int top_k() const { return top_k_; }
  ExpertCacheStats stats() const;
  RoutingTrace history() const { return history_.trace(); }

 private:
  ExpertCacheOptions options_;
  int experts_, top_k_;
  std::vector<ExpertSlots> slots_;
  void check_layer(int layer) const;
  void check_tokens(const std::vector<std::uint32_t>& sequences, const std::vector<int>& ids) const;
  std::vector<ExpertSlots::Load> prefetch(int layer, const std::vector<int>& chosen,
                                          bool keep_last_step);
  // Per layer, the experts prefetches chose since its last step (no prefetch evicts them), and
  // the experts that step used (no predictor's prefetch evicts them).
  std::vector<std::vector<int>> prefetch_keep_, last_used_;
  ExpertPredictor predictor_;
  RoutingHistory history_;
  std::vector<std::int64_t> now_;  // each layer's steps
  std::uint32_t step_ = 0;         // the stack's step (layer 0's)
  // The last step's layer and choice, for the cross-layer predictor.
  int previous_layer_ = -1;
  std::vector<int> previous_ids_;
  ExpertCacheStats stats_;
  std::int64_t forgotten_wasted_ = 0;  // prefetches_wasted of the slots forget() replaced
};

// Runs `trace` through an ExpertCache: each trace step's records through every layer in order,
// with the prefetch the options ask for. With no prefetch its hits are replay_cache's. On a
// stack's history() it gives the stack's own counts (without prefetch_from_logits) while the
// history holds every step since the stack began (the ring has not wrapped).
ExpertCacheStats replay_expert_cache(const RoutingTrace& trace, const ExpertCacheOptions& options);

}  // namespace kjit::moe
#pragma GCC visibility pop

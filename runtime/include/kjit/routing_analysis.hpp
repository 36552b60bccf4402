// What a routing trace (kjit/routing_trace.hpp) says about expert offloading: the load of each
// expert, the experts chosen together, how predictable the next choice is, the hit rate a
// per-layer expert cache of a given size and policy would get, and synthetic traces of known
// structure to test all of that on. `kjit moe analyze` and `kjit moe simulate` print and write
// these.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "kjit/routing_trace.hpp"

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit::moe {

// ---- load and co-occurrence ----

struct LayerLoad {
  std::vector<std::int64_t> counts;  // [experts]: records that chose each expert
  double max_over_mean = 0;          // 1: balanced
  double entropy_bits = 0;           // of the choice distribution; log2(experts) when uniform
};
std::vector<LayerLoad> expert_load(const RoutingTrace& trace);

// [experts x experts], symmetric: records whose top-k at `layer` holds both experts.
std::vector<std::int64_t> co_occurrence(const RoutingTrace& trace, int layer);

// The pairs chosen together most above independence (lift = count / the count independent
// choices with the layer's loads would give), at most `count` of them, highest lift first, over
// pairs seen at least `min_count` times.
struct PairHotSpot {
  int layer = 0, a = 0, b = 0;
  std::int64_t count = 0;
  double lift = 0;
};
std::vector<PairHotSpot> co_occurrence_hot_spots(const RoutingTrace& trace, int count,
                                                 std::int64_t min_count = 8);

// ---- predictability ----

// Conditional entropies (bits) of one chosen expert given one the same token chose at the layer
// before (cross-layer), and given one the same sequence's previous record chose at the same
// layer (temporal), from the pair counts; beside log2(experts), the uniform choice's. Lower is
// more predictable; a value near 0 means one expert almost always follows.
struct Predictability {
  double cross_layer_bits = 0, temporal_bits = 0, uniform_bits = 0;
};
Predictability predictability(const RoutingTrace& trace);

// ---- prediction of the next experts ----

// What a prefetcher guesses before a token's router runs at a layer, learning online from the
// choices it has seen (never from the one it predicts):
enum class PredictorKind {
  Frequency,      // the layer's most chosen experts, counts decayed by half every 64 records
  PreviousToken,  // the same sequence's previous choice at the layer, then Frequency's
  CrossLayer,     // from the same token's choice at the layer before: the experts that most
                  // often followed those (transition counts), then Frequency's; at layer 0
                  // PreviousToken's
};
const char* predictor_name(PredictorKind kind);  // "frequency", "previous-token", "cross-layer"

// One predictor, online: predict a token's experts at a layer, then observe its choice there.
// A serving stack's prefetcher runs it layer by layer; score_predictions runs it over a trace.
class ExpertPredictor {
 public:
  ExpertPredictor(PredictorKind kind, int layers, int experts, int top_k);

  // The `count` experts (1..experts, best first) `sequence`'s next token is predicted to choose
  // at `layer`; `before`: its top_k choice at layer - 1 (CrossLayer; null at layer 0 or unknown).
  std::vector<int> predict(std::uint32_t sequence, int layer, const int* before, int count) const;
  // Learns the token's choice `ids` (top_k) at `layer` (`before` as predict's).
  void observe(std::uint32_t sequence, int layer, const int* ids, const int* before);

  PredictorKind kind() const { return kind_; }

 private:
  PredictorKind kind_;
  int layers_, experts_, top_k_;
  // Frequency: counts scaled up by `boost` each observation instead of decaying every count.
  std::vector<std::vector<double>> frequency_;
  std::vector<double> boost_;
  std::vector<std::vector<double>> transitions_;  // [layer][before * experts + after]
  // A sequence's last choice (layers x top_k) and when it was last seen, for the sequences seen
  // most recently: past 2 x kSequences the older half is dropped (a server's finished requests).
  static constexpr std::size_t kSequences = 1 << 16;
  struct Last {
    std::vector<int> ids;
    std::int64_t seen = 0;
  };
  std::map<std::uint32_t, Last> last_;
  std::int64_t observations_ = 0;
};

// Each record's `predicted` experts at each layer against its top_k: precision = hits /
// predicted, recall = hits / top_k, over all records and layers (and per layer).
struct PredictionScore {
  double precision = 0, recall = 0;
  std::vector<double> layer_recall;
};
PredictionScore score_predictions(const RoutingTrace& trace, PredictorKind kind, int predicted);

// ---- expert caches ----

enum class CachePolicy {
  Lru,      // evict the expert used longest ago
  Lfu,      // evict the expert used least often (ties: longest ago)
  Optimal,  // Belady: evict the expert needed again furthest ahead (the bound; replay only)
};
const char* cache_policy_name(CachePolicy policy);  // "lru", "lfu", "optimal"

// One layer's GPU slots for experts, and what to evict: the bookkeeping an expert cache runs on
// the host. `pinned` experts stay resident and take slots. A step's `needed` experts are used
// together: misses are loaded, evicting by policy but never a needed or pinned expert. When the
// step needs more experts than the slots hold, it runs in passes: pass 0 uses the hits and fills
// the slots it may take; each later pass loads the next misses over the slots of the pass before
// (not the pinned ones), so the experts of the last passes stay.
class ExpertSlots {
 public:
  ExpertSlots(CachePolicy policy, int slots, int experts, const std::vector<int>& pinned = {});

  struct Load {
    int expert = 0, slot = 0;
    bool operator==(const Load& o) const { return expert == o.expert && slot == o.slot; }
  };
  struct Outcome {
    std::vector<int> hits;     // resident when asked (pinned ones too)
    std::vector<Load> loaded;  // the misses, in pass order, each into its slot
    std::vector<int> evicted;  // in eviction order (a later pass evicts earlier passes' experts)
    std::vector<std::vector<Load>> passes;  // every needed expert in exactly one, in its slot
    int prefetch_hits = 0;  // hits on experts a prefetch brought in and no step had used yet
  };
  // Throws InvalidArgument for an expert outside 0..experts-1, or when a miss finds every slot
  // pinned. `needed` may repeat an expert (counted once). `next_use[e]`: when expert e is needed
  // next (Optimal only; empty otherwise).
  Outcome request(const std::vector<int>& needed, std::int64_t now,
                  const std::vector<std::int64_t>& next_use = {});

  // Brings `expert` in ahead of its use (a prefetch), evicting by policy but never a pinned
  // expert or one of `keep` (the experts a step in flight uses). Nothing when it is resident or
  // no slot may be taken. A prefetched expert counts as used at `now` (so the next prefetch does
  // not evict it under LRU) but not as a use for LFU.
  struct Prefetch {
    Load load;
    int evicted = -1;  // -1: the slot was free
  };
  std::optional<Prefetch> prefetch(int expert, std::int64_t now, const std::vector<int>& keep = {});

  bool resident(int expert) const { return state_[expert].slot >= 0; }
  int slot(int expert) const { return state_[expert].slot; }  // -1: not resident
  int slots() const { return slots_; }
  int experts() const { return static_cast<int>(state_.size()); }
  // Prefetched experts evicted before any step used them; resident ones no step used yet.
  std::int64_t prefetches_wasted() const { return prefetches_wasted_; }
  std::int64_t prefetches_pending() const;

 private:
  struct State {
    int slot = -1;
    bool pinned = false, prefetched = false;  // prefetched: brought in by a prefetch, not yet used
    std::int64_t last_use = -1, uses = 0;
  };
  void check_expert(int expert) const;
  // The resident expert to evict (neither pinned nor kept), lowest by the policy; -1: none.
  int victim(const std::vector<bool>& kept, const std::vector<std::int64_t>& next_use) const;
  int evict(int expert);  // returns its slot
  void place(int expert, int slot);
  CachePolicy policy_;
  int slots_;
  std::vector<int> free_;  // free slots, the next one last
  std::vector<State> state_;
  std::int64_t prefetches_wasted_ = 0;
};

// Replays `trace` through one ExpertSlots per layer (a step's needed experts: the union of its
// records' choices). Throws InvalidArgument when the slots are fewer than top_k or than the
// pinned experts of a layer.
struct CacheReplay {
  std::int64_t hits = 0, misses = 0;
  std::vector<std::int64_t> layer_hits, layer_misses;
  double hit_rate() const {
    return hits + misses ? static_cast<double>(hits) / (hits + misses) : 0;
  }
};
CacheReplay replay_cache(const RoutingTrace& trace, CachePolicy policy, int slots_per_layer,
                         const std::vector<std::vector<int>>& pinned = {});

// ---- synthetic traces ----

// `sequences` tokens a step (a decode batch), `steps` steps. Each choice of a token at a layer:
// with probability temporal_locality the same sequence's previous choice at that layer (same
// position of the top-k); else with probability cross_layer the image of the same token's choice
// at the layer before under a fixed per-layer permutation; else a draw from a Zipf(skew)
// popularity over the experts (skew 0: uniform), permuted per layer. Repeats are redrawn.
struct RoutingSimulation {
  int layers = 8, experts = 64, top_k = 4;
  int sequences = 1, steps = 256;
  double skew = 0.8, temporal_locality = 0.3, cross_layer = 0.3;
  std::uint64_t seed = 1;
};
RoutingTrace simulate_routing(const RoutingSimulation& simulation);

}  // namespace kjit::moe
#pragma GCC visibility pop

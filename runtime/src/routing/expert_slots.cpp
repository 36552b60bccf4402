// An expert cache's slot bookkeeping and its replay over a trace (kjit/routing_analysis.hpp).
#include <algorithm>
#include <limits>
#include <set>

#include <fmt/format.h>

#include "kjit/error.hpp"
#include "kjit/routing_analysis.hpp"

namespace kjit::moe {

const char* cache_policy_name(CachePolicy policy) {
  switch (policy) {
    case CachePolicy::Lru:
      return "lru";
    case CachePolicy::Lfu:
      return "lfu";
    default:
      return "optimal";
  }
}

ExpertSlots::ExpertSlots(CachePolicy policy, int slots, int experts, const std::vector<int>& pinned)
    : policy_(policy), slots_(slots), state_(static_cast<std::size_t>(std::max(experts, 0))) {
  if (experts < 1 || slots < 1) {
    throw InvalidArgument(fmt::format(
        "expert cache: need slots >= 1 and experts >= 1, got {} and {}", slots, experts));
  }
  for (int s = slots - 1; s >= 0; --s)
    free_.push_back(s);
  for (int e : pinned) {
    check_expert(e);
    if (state_[e].pinned) continue;
    if (free_.empty()) {
      throw InvalidArgument(fmt::format("expert cache: {} pinned experts do not fit its {} slots",
                                        pinned.size(), slots));
    }
    state_[e].pinned = true;
    place(e, free_.back());
  }
}

void ExpertSlots::check_expert(int expert) const {
  if (expert < 0 || expert >= experts()) {
    throw InvalidArgument(
        fmt::format("expert cache: expert {} is outside 0..{}", expert, experts() - 1));
  }
}

int ExpertSlots::victim(const std::vector<bool>& kept,
                        const std::vector<std::int64_t>& next_use) const {
  int best = -1;
  for (int e = 0; e < experts(); ++e) {
    const State& s = state_[e];
    if (s.slot < 0 || s.pinned || kept[e]) continue;
    if (best < 0) {
      best = e;
      continue;
    }
    const State& b = state_[best];
    bool better = false;
    switch (policy_) {
      case CachePolicy::Lru:
        better = s.last_use < b.last_use;
        break;
      case CachePolicy::Lfu:
        better = s.uses != b.uses ? s.uses < b.uses : s.last_use < b.last_use;
        break;
      case CachePolicy::Optimal:
        better = next_use[e] > next_use[best];
        break;
    }
    if (better) best = e;
  }
  return best;
}

int ExpertSlots::evict(int expert) {
  State& s = state_[expert];
  const int slot = s.slot;
  if (s.prefetched) ++prefetches_wasted_;
  s.slot = -1;
  s.prefetched = false;
  return slot;
}

void ExpertSlots::place(int expert, int slot) {
  state_[expert].slot = slot;
  free_.erase(std::remove(free_.begin(), free_.end(), slot), free_.end());
}

ExpertSlots::Outcome ExpertSlots::request(const std::vector<int>& needed, std::int64_t now,
                                          const std::vector<std::int64_t>& next_use) {
  if (policy_ == CachePolicy::Optimal && next_use.size() != state_.size())
    throw InvalidArgument("expert cache: the optimal policy needs every expert's next use");
  std::vector<bool> in_use(state_.size(), false);
  std::vector<int> unique, misses;
  for (int e : needed) {
    check_expert(e);
    if (in_use[e]) continue;
    in_use[e] = true;
    unique.push_back(e);
  }
  Outcome out;
  out.passes.emplace_back();
  for (int e : unique) {
    State& s = state_[e];
    if (s.slot < 0) {
      misses.push_back(e);
      continue;
    }
    out.hits.push_back(e);
    out.passes[0].push_back({e, s.slot});
    out.prefetch_hits += s.prefetched;
    s.prefetched = false;
  }
  const auto load = [&](int e, int slot) {
    place(e, slot);
    out.loaded.push_back({e, slot});
    out.passes.back().push_back({e, slot});
  };
  std::size_t m = 0;
  for (; m < misses.size(); ++m) {  // pass 0: free slots, then evictions
    if (!free_.empty()) {
      load(misses[m], free_.back());
    } else if (const int v = victim(in_use, next_use); v >= 0) {
      out.evicted.push_back(v);
      load(misses[m], evict(v));
    } else {
      break;
    }
  }
  while (m < misses.size()) {  // later passes over the slots of the pass before
    std::vector<int> reusable;
    for (const Load& l : out.passes.back()) {
      if (!state_[l.expert].pinned) reusable.push_back(l.expert);
    }
    if (reusable.empty()) {
      throw InvalidArgument(fmt::format(
          "expert cache: all {} slots hold pinned experts; expert {} has none to load into", slots_,
          misses[m]));
    }
    out.passes.emplace_back();
    for (std::size_t i = 0; i < reusable.size() && m < misses.size(); ++i, ++m) {
      out.evicted.push_back(reusable[i]);
      load(misses[m], evict(reusable[i]));
    }
  }
  for (int e : unique) {
    state_[e].last_use = now;
    ++state_[e].uses;
  }
  return out;
}

std::int64_t ExpertSlots::prefetches_pending() const {
  return std::count_if(state_.begin(), state_.end(),
                       [](const State& s) { return s.slot >= 0 && s.prefetched; });
}

std::optional<ExpertSlots::Prefetch> ExpertSlots::prefetch(int expert, std::int64_t now,
                                                           const std::vector<int>& keep) {
  check_expert(expert);
  if (policy_ == CachePolicy::Optimal)
    throw InvalidArgument("expert cache: the optimal policy replays a trace; it does not prefetch");
  if (resident(expert)) return std::nullopt;
  std::vector<bool> kept(state_.size(), false);
  for (int e : keep) {
    check_expert(e);
    kept[e] = true;
  }
  Prefetch p;
  if (free_.empty()) {
    p.evicted = victim(kept, {});
    if (p.evicted < 0) return std::nullopt;
    p.load = {expert, evict(p.evicted)};
  } else {
    p.load = {expert, free_.back()};
  }
  place(expert, p.load.slot);
  state_[expert].prefetched = true;
  state_[expert].last_use = now;
  return p;
}

CacheReplay replay_cache(const RoutingTrace& trace, CachePolicy policy, int slots_per_layer,
                         const std::vector<std::vector<int>>& pinned) {
  if (slots_per_layer < trace.top_k()) {
    throw InvalidArgument(fmt::format(
        "expert cache: {} slots a layer are fewer than top_k = {}: one token's experts would not "
        "fit",
        slots_per_layer, trace.top_k()));
  }
  if (!pinned.empty() && static_cast<int>(pinned.size()) != trace.layers()) {
    throw InvalidArgument(
        fmt::format("expert cache: pinned experts for {} layers, the trace has {}", pinned.size(),
                    trace.layers()));
  }
  // The steps: [first record, end) runs of one step; each step's needed set per layer.
  std::vector<std::int64_t> step_begin;
  for (std::int64_t r = 0; r < trace.records(); ++r) {
    if (r == 0 || trace.step(r) != trace.step(r - 1)) step_begin.push_back(r);
  }
  step_begin.push_back(trace.records());
  const std::int64_t steps = static_cast<std::int64_t>(step_begin.size()) - 1;
  const int e_count = trace.experts();
  CacheReplay replay;
  replay.layer_hits.assign(static_cast<std::size_t>(trace.layers()), 0);
  replay.layer_misses.assign(static_cast<std::size_t>(trace.layers()), 0);
  for (int layer = 0; layer < trace.layers(); ++layer) {
    std::vector<std::vector<int>> needed(static_cast<std::size_t>(steps));
    for (std::int64_t s = 0; s < steps; ++s) {
      std::set<int> set;
      for (std::int64_t r = step_begin[s]; r < step_begin[s + 1]; ++r)
        set.insert(trace.choice(r, layer), trace.choice(r, layer) + trace.top_k());
      needed[s].assign(set.begin(), set.end());
    }
    // Next uses, walking backwards (Optimal only).
    std::vector<std::vector<std::int64_t>> next(policy == CachePolicy::Optimal ? steps : 0);
    if (policy == CachePolicy::Optimal) {
      std::vector<std::int64_t> upcoming(static_cast<std::size_t>(e_count),
                                         std::numeric_limits<std::int64_t>::max());
      for (std::int64_t s = steps - 1; s >= 0; --s) {
        next[s] = upcoming;  // after step s
        for (int e : needed[s])
          upcoming[e] = s;
      }
    }
    ExpertSlots slots(policy, slots_per_layer, e_count,
                      pinned.empty() ? std::vector<int>{} : pinned[layer]);
    for (std::int64_t s = 0; s < steps; ++s) {
      const ExpertSlots::Outcome o = slots.request(
          needed[s], s, policy == CachePolicy::Optimal ? next[s] : std::vector<std::int64_t>{});
      replay.layer_hits[layer] += static_cast<std::int64_t>(o.hits.size());
      replay.layer_misses[layer] += static_cast<std::int64_t>(o.loaded.size());
    }
    replay.hits += replay.layer_hits[layer];
    replay.misses += replay.layer_misses[layer];
  }
  return replay;
}

}  // namespace kjit::moe

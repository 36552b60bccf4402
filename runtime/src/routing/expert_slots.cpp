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
  for (int e : pinned) {
    if (e < 0 || e >= experts)
      throw InvalidArgument(
          fmt::format("expert cache: pinned expert {} is outside 0..{}", e, experts - 1));
    if (state_[e].pinned) continue;
    if (used_ == slots_) {
      throw InvalidArgument(fmt::format("expert cache: {} pinned experts do not fit its {} slots",
                                        pinned.size(), slots));
    }
    state_[e].pinned = state_[e].resident = true;
    ++used_;
  }
}

ExpertSlots::Outcome ExpertSlots::request(const std::vector<int>& needed, std::int64_t now,
                                          const std::vector<std::int64_t>& next_use) {
  if (policy_ == CachePolicy::Optimal && next_use.size() != state_.size())
    throw InvalidArgument("expert cache: the optimal policy needs every expert's next use");
  Outcome out;
  std::vector<bool> in_use(state_.size(), false);
  for (int e : needed) {
    if (e < 0 || e >= static_cast<int>(state_.size()))
      throw InvalidArgument(
          fmt::format("expert cache: expert {} is outside 0..{}", e, state_.size() - 1));
    in_use[e] = true;
  }
  // The victim: resident, neither pinned nor needed now, lowest by the policy's order.
  const auto victim = [&]() {
    int best = -1;
    for (int e = 0; e < static_cast<int>(state_.size()); ++e) {
      const State& s = state_[e];
      if (!s.resident || s.pinned || in_use[e]) continue;
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
  };
  for (int e : needed) {
    State& s = state_[e];
    if (s.resident) {
      out.hits.push_back(e);
    } else if (used_ < slots_) {
      s.resident = true;
      ++used_;
      out.loaded.push_back(e);
    } else if (const int v = victim(); v >= 0) {
      state_[v].resident = false;
      out.evicted.push_back(v);
      s.resident = true;
      out.loaded.push_back(e);
    } else {
      out.streamed.push_back(e);
    }
    s.last_use = now;
    ++s.uses;
  }
  return out;
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
      replay.layer_misses[layer] += static_cast<std::int64_t>(o.loaded.size() + o.streamed.size());
    }
    replay.hits += replay.layer_hits[layer];
    replay.misses += replay.layer_misses[layer];
  }
  return replay;
}

}  // namespace kjit::moe

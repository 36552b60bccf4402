// The host side of an expert cache with prefetch (kjit/expert_cache.hpp).
#include "kjit/expert_cache.hpp"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "kjit/error.hpp"

namespace kjit::moe {
namespace {

// The options' own checks, before any member is built from them.
const ExpertCacheOptions& checked(int layers, int experts, int top_k, const ExpertCacheOptions& o) {
  if (layers < 1 || experts < 1) {
    throw InvalidArgument(fmt::format(
        "expert cache: need layers >= 1 and experts >= 1, got {} and {}", layers, experts));
  }
  if (top_k < 1 || top_k > experts || o.slots < top_k || o.slots > experts) {
    throw InvalidArgument(fmt::format(
        "expert cache: {} slots a layer must be between top_k ({}) and the experts ({}): a "
        "smaller cache could not hold one token's experts",
        o.slots, top_k, experts));
  }
  if (!o.pinned.empty() && static_cast<int>(o.pinned.size()) != layers) {
    throw InvalidArgument(fmt::format(
        "expert cache: pinned experts for {} layers, the stack has {}", o.pinned.size(), layers));
  }
  if (o.policy == CachePolicy::Optimal)
    throw InvalidArgument("expert cache: the optimal policy needs the future: replay_cache only");
  if (o.prefetch < 0 || o.prefetch > experts || o.history < 1) {
    throw InvalidArgument(fmt::format("expert cache: prefetch {} (0..{}) and history {} (>= 1)",
                                      o.prefetch, experts, o.history));
  }
  for (std::size_t l = 0; l < o.pinned.size(); ++l) {
    const std::set<int> distinct(o.pinned[l].begin(), o.pinned[l].end());
    if (static_cast<int>(distinct.size()) >= o.slots && o.slots < experts) {
      throw InvalidArgument(fmt::format(
          "expert cache: layer {}'s {} pinned experts leave none of its {} slots for the other "
          "experts",
          l, distinct.size(), o.slots));
    }
  }
  return o;
}

}  // namespace

ExpertCache::ExpertCache(int layers, int experts, int top_k, const ExpertCacheOptions& options)
    : options_(checked(layers, experts, top_k, options)),
      experts_(experts),
      top_k_(top_k),
      predictor_(options.predictor, layers, experts, top_k),
      history_(layers, experts, top_k, options.history) {
  for (int l = 0; l < layers; ++l)
    forget(l);
  prefetch_keep_.resize(static_cast<std::size_t>(layers));
  last_used_.resize(static_cast<std::size_t>(layers));
  now_.assign(static_cast<std::size_t>(layers), 0);
  stats_.layer_hits.assign(static_cast<std::size_t>(layers), 0);
  stats_.layer_misses = stats_.layer_hits;
  stats_.expert_uses.assign(static_cast<std::size_t>(layers),
                            std::vector<std::int64_t>(static_cast<std::size_t>(experts), 0));
  stats_.expert_loads = stats_.expert_uses;
}

void ExpertCache::forget(int layer) {
  ExpertSlots fresh(options_.policy, options_.slots, experts_,
                    options_.pinned.empty() ? std::vector<int>{} : options_.pinned[layer]);
  if (static_cast<int>(slots_.size()) <= layer) {
    slots_.push_back(std::move(fresh));
    return;
  }
  // The counts survive the slots; prefetched experts no step used are wasted now.
  forgotten_wasted_ += slots_[layer].prefetches_wasted() + slots_[layer].prefetches_pending();
  slots_[layer] = std::move(fresh);
  prefetch_keep_[layer].clear();
  last_used_[layer].clear();
}

void ExpertCache::check_layer(int layer) const {
  if (layer < 0 || layer >= layers()) {
    throw InvalidArgument(
        fmt::format("expert cache: layer {} is outside 0..{}", layer, layers() - 1));
  }
}

void ExpertCache::check_tokens(const std::vector<std::uint32_t>& sequences,
                               const std::vector<int>& ids) const {
  if (ids.size() != sequences.size() * top_k_) {
    throw InvalidArgument(fmt::format("expert cache: {} ids for {} tokens of top {}", ids.size(),
                                      sequences.size(), top_k_));
  }
}

ExpertSlots::Outcome ExpertCache::step(int layer, const std::vector<std::uint32_t>& sequences,
                                       const std::vector<int>& ids) {
  check_layer(layer);
  check_tokens(sequences, ids);
  const std::uint32_t step = layer == 0 && now_[0] > 0 ? step_ + 1 : step_;
  history_.record(layer, step, sequences, ids.data());  // checks the ids first
  step_ = step;
  if (layer == 0) stats_.tokens += static_cast<std::int64_t>(sequences.size());
  const std::set<int> distinct(ids.begin(), ids.end());
  const ExpertSlots::Outcome o =
      slots_[layer].request(std::vector<int>(distinct.begin(), distinct.end()), now_[layer]++);
  prefetch_keep_[layer].clear();
  last_used_[layer].assign(distinct.begin(), distinct.end());
  stats_.hits += static_cast<std::int64_t>(o.hits.size());
  stats_.misses += static_cast<std::int64_t>(o.loaded.size());
  stats_.layer_hits[layer] += static_cast<std::int64_t>(o.hits.size());
  stats_.layer_misses[layer] += static_cast<std::int64_t>(o.loaded.size());
  stats_.prefetch_hits += o.prefetch_hits;
  for (int e : distinct)
    ++stats_.expert_uses[layer][e];
  for (const ExpertSlots::Load& l : o.loaded)
    ++stats_.expert_loads[layer][l.expert];
  // Learn the choice, each token's from its choice at the layer before when that was the last step.
  const bool chained =
      layer > 0 && previous_layer_ == layer - 1 && previous_ids_.size() == ids.size();
  for (std::size_t t = 0; t < sequences.size(); ++t) {
    predictor_.observe(sequences[t], layer, &ids[t * top_k_],
                       chained ? &previous_ids_[t * top_k_] : nullptr);
  }
  previous_layer_ = layer;
  previous_ids_ = ids;
  return o;
}

std::vector<ExpertSlots::Load> ExpertCache::prefetch_next(
    int layer, const std::vector<std::uint32_t>& sequences, const std::vector<int>& ids) {
  check_tokens(sequences, ids);
  if (options_.prefetch == 0 || layer + 1 >= layers()) return {};
  std::vector<int> chosen;  // every token's predictions: an expert's repeats are its votes
  for (std::size_t t = 0; t < sequences.size(); ++t) {
    const std::vector<int> p =
        predictor_.predict(sequences[t], layer + 1, &ids[t * top_k_], options_.prefetch);
    chosen.insert(chosen.end(), p.begin(), p.end());
  }
  return prefetch(layer + 1, chosen, true);
}

std::vector<ExpertSlots::Load> ExpertCache::prefetch(int layer, const std::vector<int>& chosen) {
  return prefetch(layer, chosen, false);
}

std::vector<ExpertSlots::Load> ExpertCache::prefetch(int layer, const std::vector<int>& chosen,
                                                     bool keep_last_step) {
  check_layer(layer);
  // The chosen experts, most voted first (ties: the lower id).
  std::vector<int> votes(static_cast<std::size_t>(experts_), 0), ranked;
  for (int e : chosen) {
    if (e < 0 || e >= experts_) {
      throw InvalidArgument(
          fmt::format("expert cache: expert {} is outside 0..{}", e, experts_ - 1));
    }
    ++votes[e];
  }
  for (int e = 0; e < experts_; ++e) {
    if (votes[e] > 0) ranked.push_back(e);
  }
  std::stable_sort(ranked.begin(), ranked.end(), [&](int a, int b) { return votes[a] > votes[b]; });
  ExpertSlots& slots = slots_[layer];
  std::vector<int>& keep = prefetch_keep_[layer];
  for (int e : ranked) {  // the chosen experts already resident stay
    if (slots.resident(e) && std::find(keep.begin(), keep.end(), e) == keep.end())
      keep.push_back(e);
  }
  std::vector<int> kept = keep;
  if (keep_last_step) kept.insert(kept.end(), last_used_[layer].begin(), last_used_[layer].end());
  std::vector<ExpertSlots::Load> loads;
  for (int e : ranked) {
    if (slots.resident(e)) continue;
    const auto p = slots.prefetch(e, now_[layer], kept);
    if (!p) break;
    keep.push_back(e);
    kept.push_back(e);
    loads.push_back(p->load);
    ++stats_.prefetches;
    ++stats_.expert_loads[layer][e];
  }
  return loads;
}

ExpertCacheStats ExpertCache::stats() const {
  ExpertCacheStats s = stats_;
  s.prefetches_wasted = forgotten_wasted_;
  for (const ExpertSlots& slots : slots_)
    s.prefetches_wasted += slots.prefetches_wasted();
  return s;
}

ExpertCacheStats replay_expert_cache(const RoutingTrace& trace, const ExpertCacheOptions& options) {
  ExpertCache cache(trace.layers(), trace.experts(), trace.top_k(), options);
  const int k = trace.top_k();
  std::vector<std::uint32_t> sequences;
  std::vector<std::vector<int>> ids(static_cast<std::size_t>(trace.layers()));
  for (std::int64_t first = 0; first < trace.records();) {
    std::int64_t end = first;
    sequences.clear();
    for (auto& layer : ids)
      layer.clear();
    for (; end < trace.records() && trace.step(end) == trace.step(first); ++end) {
      sequences.push_back(trace.sequence(end));
      for (int l = 0; l < trace.layers(); ++l)
        ids[l].insert(ids[l].end(), trace.choice(end, l), trace.choice(end, l) + k);
    }
    for (int l = 0; l < trace.layers(); ++l) {
      cache.step(l, sequences, ids[l]);
      cache.prefetch_next(l, sequences, ids[l]);
    }
    first = end;
  }
  return cache.stats();
}

}  // namespace kjit::moe

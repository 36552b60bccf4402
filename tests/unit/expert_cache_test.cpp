// The host side of the expert cache with prefetch (kjit/expert_cache.hpp), on simulated traces of
// known structure: without prefetch it hits exactly what replay_cache counts; the cross-layer
// prefetch reaches the hit rate a fully correlated stack allows; the statistics add up; bad
// options are refused.
#include <gtest/gtest.h>

#include <numeric>
#include <set>
#include <vector>

#include "kjit/error.hpp"
#include "kjit/expert_cache.hpp"

namespace kjit::moe {
namespace {

TEST(ExpertCache, WithoutPrefetchItHitsWhatTheReplayCounts) {
  const RoutingTrace t = simulate_routing({4, 32, 4, 3, 300, 0.8, 0.3, 0.3, 17});
  for (CachePolicy policy : {CachePolicy::Lru, CachePolicy::Lfu}) {
    for (int slots : {4, 8, 16, 32}) {
      ExpertCacheOptions o;
      o.policy = policy;
      o.slots = slots;
      const ExpertCacheStats s = replay_expert_cache(t, o);
      const CacheReplay r = replay_cache(t, policy, slots);
      EXPECT_EQ(s.hits, r.hits) << cache_policy_name(policy) << " " << slots;
      EXPECT_EQ(s.misses, r.misses) << cache_policy_name(policy) << " " << slots;
      EXPECT_EQ(s.layer_hits, r.layer_hits);
      EXPECT_EQ(s.prefetches, 0);
      EXPECT_EQ(s.tokens, t.records());
    }
  }
  ExpertCacheOptions pinned;
  pinned.slots = 8;
  pinned.pinned.assign(4, {0, 1});
  EXPECT_EQ(replay_expert_cache(t, pinned).hits,
            replay_cache(t, CachePolicy::Lru, 8, pinned.pinned).hits);
}

TEST(ExpertCache, CrossLayerPrefetchReachesWhatACorrelatedStackAllows) {
  // Every choice past layer 0 is a fixed image of the token's choice at the layer before
  // (cross_layer 1): once learnt, the next layer's experts are known exactly, so with 2 top_k
  // slots (top_k kept for the last step's experts, top_k for the prefetch) a prefetch makes every
  // layer past 0 hit; layer 0 (nothing before it) stays at chance. The
  // transitions from all 64 experts are learnt in the first ~100 steps (a coupon collector's
  // 64 ln 64 / 4 records), so over 1600 steps the hit rate is >= 0.95 and approaches 1.
  const int layers = 4, experts = 64, k = 4;
  const RoutingTrace t = simulate_routing({layers, experts, k, 1, 1600, 0.0, 0.0, 1.0, 5});
  ExpertCacheOptions o;
  o.slots = 2 * k;
  const ExpertCacheStats plain = replay_expert_cache(t, o);
  o.prefetch = k;
  const ExpertCacheStats fetched = replay_expert_cache(t, o);
  for (int l = 1; l < layers; ++l) {
    const double plain_rate =
        double(plain.layer_hits[l]) / (plain.layer_hits[l] + plain.layer_misses[l]);
    const double rate =
        double(fetched.layer_hits[l]) / (fetched.layer_hits[l] + fetched.layer_misses[l]);
    EXPECT_LT(plain_rate, 0.25) << l;  // uniform choices: about 2 k / E of them still resident
    EXPECT_GT(rate, 0.95) << l;
  }
  EXPECT_GT(fetched.prefetch_recall(), 0.65);  // layer 0 is a quarter of the needs, unpredicted
  EXPECT_GT(fetched.prefetch_precision(), 0.95);
  // Uncorrelated layers: the prefetch guesses no better than chance (the structure allows k / E).
  const RoutingTrace noise = simulate_routing({layers, experts, k, 1, 400, 0.0, 0.0, 0.0, 5});
  EXPECT_LT(replay_expert_cache(noise, o).prefetch_precision(), 0.2);
}

TEST(ExpertCache, StatisticsAddUp) {
  const RoutingTrace t = simulate_routing({3, 16, 2, 4, 120, 1.0, 0.4, 0.5, 3});
  ExpertCacheOptions o;
  o.slots = 5;
  o.prefetch = 2;
  o.policy = CachePolicy::Lfu;
  o.pinned.assign(3, {7});
  const ExpertCacheStats s = replay_expert_cache(t, o);
  std::int64_t distinct = 0;
  for (std::int64_t first = 0; first < t.records(); first += 4) {
    for (int l = 0; l < 3; ++l) {
      std::set<int> e;
      for (std::int64_t r = first; r < first + 4; ++r)
        e.insert(t.choice(r, l), t.choice(r, l) + 2);
      distinct += static_cast<std::int64_t>(e.size());
    }
  }
  EXPECT_EQ(s.hits + s.misses, distinct);
  std::int64_t uses = 0, loads = 0;
  for (int l = 0; l < 3; ++l) {
    uses += std::accumulate(s.expert_uses[l].begin(), s.expert_uses[l].end(), std::int64_t{0});
    loads += std::accumulate(s.expert_loads[l].begin(), s.expert_loads[l].end(), std::int64_t{0});
  }
  EXPECT_EQ(uses, distinct);
  EXPECT_EQ(loads, s.misses + s.prefetches);
  EXPECT_GT(s.prefetches, 0);
  EXPECT_LE(s.prefetch_hits + s.prefetches_wasted, s.prefetches);
  EXPECT_EQ(s.expert_loads[0][7], 0);  // pinned: loaded with the stack, never again
}

TEST(ExpertCache, StepsLoadsAndForgetting) {
  ExpertCacheOptions o;
  o.slots = 2;
  o.pinned = {{5}, {}};
  ExpertCache cache(2, 8, 1, o);
  const ExpertSlots::Outcome a = cache.step(0, {0, 1}, {3, 5});
  EXPECT_EQ(a.hits, (std::vector<int>{5}));
  EXPECT_EQ(a.loaded, (std::vector<ExpertSlots::Load>{{3, 1}}));
  EXPECT_EQ(cache.prefetch(1, {4, 6}), (std::vector<ExpertSlots::Load>{{4, 0}, {6, 1}}));
  EXPECT_TRUE(cache.prefetch(1, {2}).empty());  // both slots hold this round's picks
  cache.forget(1);
  EXPECT_EQ(cache.stats().prefetches_wasted, 2);  // forgotten before any step used them
  cache.forget(0);
  EXPECT_TRUE(cache.slots(0).resident(5) && !cache.slots(0).resident(3));
  EXPECT_THROW(cache.step(2, {0}, {1}), InvalidArgument);
  EXPECT_THROW(cache.step(0, {0}, {1, 2}), InvalidArgument);  // two ids for one token of top 1
  EXPECT_THROW(cache.step(0, {0}, {8}), InvalidArgument);
  EXPECT_EQ(cache.history().records(), 0);  // layer 1 has seen no step
  o.slots = 9;
  EXPECT_THROW(ExpertCache(2, 8, 1, o), InvalidArgument);
  o.slots = 2;
  o.pinned = {{5}};
  EXPECT_THROW(ExpertCache(2, 8, 1, o), InvalidArgument);
}

}  // namespace
}  // namespace kjit::moe

// MoE routing traces and their analysis (kjit/routing_trace.hpp, kjit/routing_analysis.hpp), on
// the CPU: both file formats round trip and every damaged file is refused by name; load,
// co-occurrence and predictability on hand-made traces with known answers; the cache policies'
// evictions step by step; replays against their bounds; synthetic traces with the structure they
// were asked for; the `kjit moe` command line.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "kjit/error.hpp"
#include "kjit/routing_analysis.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/temp_dir.hpp"

namespace kjit::moe {
namespace {

using test::TempDir;

test::ProcessResult kjit_cli(std::vector<std::string> args) {
  args.insert(args.begin(), test::cli_path());
  return test::run_process(args);
}

RoutingTrace hand_trace() {  // 2 layers, 6 experts, top 2; two sequences over three steps
  RoutingTrace t(2, 6, 2);
  t.add(0, 0, {0, 1, 2, 3});
  t.add(1, 0, {0, 4, 2, 5});
  t.add(0, 1, {1, 0, 3, 2});
  t.add(1, 1, {5, 4, 2, 1});
  t.add(0, 2, {0, 1, 2, 3});
  return t;
}

void expect_same(const RoutingTrace& a, const RoutingTrace& b) {
  ASSERT_EQ(a.layers(), b.layers());
  ASSERT_EQ(a.experts(), b.experts());
  ASSERT_EQ(a.top_k(), b.top_k());
  ASSERT_EQ(a.records(), b.records());
  for (std::int64_t r = 0; r < a.records(); ++r) {
    EXPECT_EQ(a.sequence(r), b.sequence(r));
    EXPECT_EQ(a.step(r), b.step(r));
    for (int l = 0; l < a.layers(); ++l) {
      for (int j = 0; j < a.top_k(); ++j)
        EXPECT_EQ(a.choice(r, l)[j], b.choice(r, l)[j]) << "record " << r << " layer " << l;
    }
  }
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string refusal_reading(const std::string& path) {
  try {
    RoutingTrace::read(path);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  ADD_FAILURE() << path << " was read";
  return "";
}

TEST(RoutingTrace, BothFormatsRoundTrip) {
  const TempDir dir;
  const RoutingTrace t = simulate_routing({3, 40, 5, 4, 50, 0.5, 0.4, 0.4, 7});
  t.write_binary(dir.str() + "/t.kjrt");
  t.write_json_lines(dir.str() + "/t.jsonl");
  expect_same(t, RoutingTrace::read(dir.str() + "/t.kjrt"));
  expect_same(t, RoutingTrace::read(dir.str() + "/t.jsonl"));
  // Binary: 32 header bytes, 8 + 2 x layers x top_k a record, an 8-byte checksum.
  EXPECT_EQ(read_bytes(dir.str() + "/t.kjrt").size(), 32u + 200u * (8 + 2 * 3 * 5) + 8);
}

TEST(RoutingTrace, DamagedFilesAreRefusedByName) {
  const TempDir dir;
  const std::string good = dir.str() + "/good.kjrt";
  hand_trace().write_binary(good);
  const std::string bytes = read_bytes(good);
  const std::string bad = dir.str() + "/bad.kjrt";

  write_bytes(bad, bytes.substr(0, bytes.size() - 3));
  EXPECT_NE(refusal_reading(bad).find("truncated: the header's 5 records need"), std::string::npos);
  write_bytes(bad, bytes.substr(0, 20));
  EXPECT_NE(refusal_reading(bad).find("truncated"), std::string::npos);
  write_bytes(bad, bytes + "x");
  EXPECT_NE(refusal_reading(bad).find("corrupt (bytes past the end)"), std::string::npos);
  std::string flipped = bytes;
  flipped[40] ^= 0x10;  // an id of the first record
  write_bytes(bad, flipped);
  EXPECT_NE(refusal_reading(bad).find("corrupt: checksum mismatch"), std::string::npos);
  std::string header = bytes;
  header[12] = 0;  // layers = 0
  write_bytes(bad, header);
  EXPECT_NE(refusal_reading(bad).find("corrupt header"), std::string::npos);
  write_bytes(bad, "not a trace\n");
  EXPECT_NE(refusal_reading(bad).find("is not JSON"), std::string::npos);
  write_bytes(bad, "{\"format\": \"something\"}\n");
  EXPECT_NE(refusal_reading(bad).find("neither a binary trace"), std::string::npos);
  const std::string head =
      "{\"format\": \"kjit-routing-trace\", \"version\": 1, \"layers\": 1, \"experts\": 4, "
      "\"top_k\": 2}\n";
  write_bytes(bad, head + "{\"sequence\": 0, \"step\": 0, \"experts\": [[1, 4]]}\n");
  EXPECT_NE(refusal_reading(bad).find("line 2: layer 0: expert 4 is outside 0..3"),
            std::string::npos);
  write_bytes(bad, head + "{\"sequence\": 0, \"step\": 0, \"experts\": [[2, 2]]}\n");
  EXPECT_NE(refusal_reading(bad).find("expert 2 chosen twice"), std::string::npos);
  write_bytes(bad, head + "{\"sequence\": 0, \"step\": 3, \"experts\": [[0, 1]]}\n" +
                       "{\"sequence\": 0, \"step\": 2, \"experts\": [[0, 1]]}\n");
  EXPECT_NE(refusal_reading(bad).find("line 3: step 2 comes after step 3"), std::string::npos);
  write_bytes(bad, head + "{\"sequence\": 0, \"step\": 0, \"experts\": [[0, 1, 2]]}\n");
  EXPECT_NE(refusal_reading(bad).find("each layer must hold top_k = 2 ids"), std::string::npos);
  write_bytes(bad, head + "{\"sequence\": 0, \"experts\": [[0, 1]]}\n");
  EXPECT_NE(refusal_reading(bad).find("line 2"), std::string::npos);
  EXPECT_NE(refusal_reading(dir.str() + "/absent").find("cannot open it"), std::string::npos);
  EXPECT_THROW(RoutingTrace(1, 4, 5), InvalidArgument);
}

TEST(RoutingAnalysis, LoadAndCoOccurrenceOfAHandTrace) {
  const RoutingTrace t = hand_trace();
  const std::vector<LayerLoad> load = expert_load(t);
  EXPECT_EQ(load[0].counts, (std::vector<std::int64_t>{4, 3, 0, 0, 2, 1}));
  EXPECT_EQ(load[1].counts, (std::vector<std::int64_t>{0, 1, 5, 3, 0, 1}));
  EXPECT_DOUBLE_EQ(load[0].max_over_mean, 4 / (5.0 * 2 / 6));
  const std::vector<std::int64_t> pairs = co_occurrence(t, 0);
  EXPECT_EQ(pairs[0 * 6 + 1], 3);  // records 0, 2, 4
  EXPECT_EQ(pairs[1 * 6 + 0], 3);
  EXPECT_EQ(pairs[0 * 6 + 4], 1);
  EXPECT_EQ(pairs[4 * 6 + 5], 1);
  EXPECT_EQ(pairs[0 * 6 + 0], 0);
  const std::vector<PairHotSpot> spots = co_occurrence_hot_spots(t, 2, 2);
  ASSERT_EQ(spots.size(), 2u);  // pairs seen twice or more: (0, 1) and (2, 3), both at 3
  EXPECT_EQ(spots[0].count, 3);
  EXPECT_THROW(co_occurrence(t, 2), InvalidArgument);
}

TEST(RoutingAnalysis, PredictabilityIsZeroForADeterministicFollowerAndFullForNoise) {
  RoutingTrace follow(2, 16, 1);  // layer 1 = (layer 0 + 3) % 16; every token the same expert
  for (int r = 0; r < 200; ++r)
    follow.add(0, static_cast<std::uint32_t>(r), {7, 10});
  const Predictability p = predictability(follow);
  EXPECT_NEAR(p.cross_layer_bits, 0, 1e-12);
  EXPECT_NEAR(p.temporal_bits, 0, 1e-12);
  EXPECT_DOUBLE_EQ(p.uniform_bits, 4);
  const RoutingTrace noise = simulate_routing({2, 16, 1, 1, 20000, 0.0, 0.0, 0.0, 3});
  const Predictability q = predictability(noise);
  EXPECT_GT(q.cross_layer_bits, 3.95);
  EXPECT_GT(q.temporal_bits, 3.95);
  // Half the choices follow the layer before: the entropy falls well below uniform.
  const RoutingTrace half = simulate_routing({2, 16, 1, 1, 20000, 0.0, 0.0, 0.5, 3});
  EXPECT_LT(predictability(half).cross_layer_bits, 3.5);
}

// The recall each structure allows: a choice that follows the layer before with probability c
// (uniform otherwise) is predicted by the transition counts with recall c + (1 - c) k / E; one
// that repeats the previous token's with probability t by the previous token's choice, t + (1 -
// t) k / E; on uniform choices no predictor beats chance, n / E.
TEST(ExpertPrediction, ReachesTheRecallTheStructureAllows) {
  const int e = 64, k = 2;
  const double chance = static_cast<double>(k) / e;
  const RoutingTrace follows = simulate_routing({4, e, k, 1, 4000, 0.0, 0.0, 0.6, 9});
  const PredictionScore cross = score_predictions(follows, PredictorKind::CrossLayer, k);
  for (int layer = 1; layer < 4; ++layer) {
    EXPECT_NEAR(cross.layer_recall[layer], 0.6 + 0.4 * chance, 0.04) << "layer " << layer;
  }
  EXPECT_NEAR(score_predictions(follows, PredictorKind::Frequency, k).recall, chance, 0.02);

  const RoutingTrace repeats = simulate_routing({4, e, k, 3, 3000, 0.0, 0.7, 0.0, 9});
  const PredictionScore previous = score_predictions(repeats, PredictorKind::PreviousToken, k);
  EXPECT_NEAR(previous.recall, 0.7 + 0.3 * chance, 0.03);
  EXPECT_NEAR(previous.precision, previous.recall, 1e-12);  // k predicted for k chosen

  // Skewed popularity: the frequency predictor finds the popular experts.
  const RoutingTrace skewed = simulate_routing({2, e, k, 1, 3000, 1.2, 0.0, 0.0, 9});
  EXPECT_GT(score_predictions(skewed, PredictorKind::Frequency, k).recall, 4 * chance);
  // Predicting every expert finds every choice.
  EXPECT_DOUBLE_EQ(score_predictions(skewed, PredictorKind::Frequency, e).recall, 1.0);
  EXPECT_THROW(score_predictions(skewed, PredictorKind::Frequency, 0), InvalidArgument);
}

TEST(RoutingHistory, KeepsTheLastRecordsOfEveryLayer) {
  RoutingHistory history(2, 8, 2, 3);
  const int step0[] = {1, 2, 3, 4}, step0_l1[] = {5, 6, 7, 0};
  history.record(0, 0, {10, 11}, step0);
  EXPECT_EQ(history.trace().records(), 0);  // layer 1 has not seen the step yet
  history.record(1, 0, {10, 11}, step0_l1);
  RoutingTrace t = history.trace();
  ASSERT_EQ(t.records(), 2);
  EXPECT_EQ(t.sequence(1), 11u);
  EXPECT_EQ(t.choice(1, 1)[0], 7);
  const int step1[] = {2, 3, 4, 5}, step1_l1[] = {6, 7, 0, 1};
  history.record(0, 1, {10, 11}, step1);
  history.record(1, 1, {10, 11}, step1_l1);
  t = history.trace();  // four written, three kept
  ASSERT_EQ(t.records(), 3);
  EXPECT_EQ(history.recorded(0), 4);
  EXPECT_EQ(t.step(0), 0u);
  EXPECT_EQ(t.sequence(0), 11u);
  EXPECT_EQ(t.choice(2, 0)[1], 5);
  const int bad[] = {1, 8};
  EXPECT_THROW(history.record(0, 2, {1}, bad), InvalidArgument);
  EXPECT_THROW(history.record(2, 2, {1}, step0), InvalidArgument);
  EXPECT_EQ(history.recorded(0), 4);  // nothing of a refused call
  EXPECT_THROW(RoutingHistory(2, 8, 2, 0), InvalidArgument);
}

TEST(ExpertPredictor, LearnsOnlineLayerByLayer) {
  ExpertPredictor previous(PredictorKind::PreviousToken, 2, 8, 2);
  const int a[] = {3, 5}, b[] = {6, 1};
  previous.observe(1, 0, a, nullptr);
  EXPECT_EQ(previous.predict(1, 0, nullptr, 2), (std::vector<int>{3, 5}));
  previous.observe(2, 0, b, nullptr);
  EXPECT_EQ(previous.predict(2, 0, nullptr, 3), (std::vector<int>{6, 1, 3}));  // then frequency
  ExpertPredictor cross(PredictorKind::CrossLayer, 2, 8, 2);
  cross.observe(7, 0, a, nullptr);
  cross.observe(7, 1, b, a);
  EXPECT_EQ(cross.predict(9, 1, a, 2), (std::vector<int>{1, 6}));  // a was followed by b
  const int bad[] = {3, 8};
  EXPECT_THROW(cross.observe(7, 0, bad, nullptr), InvalidArgument);
  // A server's sequences come and go: the oldest are forgotten past 2^17 of them.
  for (std::uint32_t s = 100; s < 100 + (1u << 17) + 1; ++s)
    previous.observe(s, 0, b, nullptr);
  EXPECT_EQ(previous.predict(1, 0, nullptr, 2), (std::vector<int>{1, 6}));  // not {3, 5}: forgotten
  EXPECT_EQ(previous.predict(100 + (1u << 17), 0, nullptr, 2), (std::vector<int>{6, 1}));
  EXPECT_THROW(cross.predict(7, 2, nullptr, 2), InvalidArgument);
  EXPECT_THROW(cross.predict(7, 0, nullptr, 0), InvalidArgument);
  EXPECT_THROW(ExpertPredictor(PredictorKind::Frequency, 1, 4, 5), InvalidArgument);
}

TEST(ExpertSlots, LruAndLfuEvictInTheirOrder) {
  ExpertSlots lru(CachePolicy::Lru, 2, 8);
  EXPECT_EQ(lru.request({1}, 0).loaded, (std::vector<ExpertSlots::Load>{{1, 0}}));
  EXPECT_EQ(lru.request({2}, 1).loaded, (std::vector<ExpertSlots::Load>{{2, 1}}));
  EXPECT_EQ(lru.request({1}, 2).hits, (std::vector<int>{1}));
  const ExpertSlots::Outcome o = lru.request({3}, 3);  // 2 is the least recently used
  EXPECT_EQ(o.evicted, (std::vector<int>{2}));
  EXPECT_TRUE(lru.resident(1) && lru.resident(3) && !lru.resident(2));

  ExpertSlots lfu(CachePolicy::Lfu, 2, 8);
  lfu.request({1}, 0);
  lfu.request({1}, 1);
  lfu.request({2}, 2);
  EXPECT_EQ(lfu.request({3}, 3).evicted, (std::vector<int>{2}));  // used once against twice
  EXPECT_EQ(lfu.request({4}, 4).evicted, (std::vector<int>{3}));
}

TEST(ExpertSlots, PinnedStayAndAStepLargerThanTheSlotsRunsInPasses) {
  ExpertSlots slots(CachePolicy::Lru, 3, 8, {5});
  EXPECT_TRUE(slots.resident(5));
  EXPECT_EQ(slots.slot(5), 0);
  EXPECT_EQ(slots.request({1, 2}, 0).loaded, (std::vector<ExpertSlots::Load>{{1, 1}, {2, 2}}));
  // Four needed, two slots free of pins: 1 and 2 hit and run first, then 3 and 4 take their slots.
  const ExpertSlots::Outcome o = slots.request({1, 2, 3, 4, 3}, 1);
  EXPECT_EQ(o.hits, (std::vector<int>{1, 2}));
  EXPECT_EQ(o.loaded, (std::vector<ExpertSlots::Load>{{3, 1}, {4, 2}}));
  EXPECT_EQ(o.evicted, (std::vector<int>{1, 2}));
  using Pass = std::vector<ExpertSlots::Load>;
  EXPECT_EQ(o.passes, (std::vector<Pass>{{{1, 1}, {2, 2}}, {{3, 1}, {4, 2}}}));
  EXPECT_TRUE(slots.resident(5) && slots.resident(3) && slots.resident(4) && !slots.resident(1));
  // Pinned experts run in pass 0 and are never displaced by a later pass.
  const ExpertSlots::Outcome p = slots.request({5, 6, 7, 1}, 2);
  EXPECT_EQ(p.hits, (std::vector<int>{5}));
  EXPECT_EQ(p.passes, (std::vector<Pass>{{{5, 0}, {6, 1}, {7, 2}}, {{1, 1}}}));
  EXPECT_EQ(p.evicted, (std::vector<int>{3, 4, 6}));
  EXPECT_EQ(slots.slot(5), 0);
  EXPECT_THROW(ExpertSlots(CachePolicy::Lru, 1, 8, {1, 2}), InvalidArgument);
  EXPECT_THROW(ExpertSlots(CachePolicy::Lru, 2, 8, {9}), InvalidArgument);
  EXPECT_THROW(slots.request({8}, 3), InvalidArgument);
  EXPECT_THROW(ExpertSlots(CachePolicy::Optimal, 2, 8).request({1}, 0), InvalidArgument);
  ExpertSlots all_pinned(CachePolicy::Lru, 2, 8, {0, 1});
  EXPECT_EQ(all_pinned.request({0, 1}, 0).hits, (std::vector<int>{0, 1}));
  EXPECT_THROW(all_pinned.request({2}, 1), InvalidArgument);  // no slot it may take
}

TEST(ExpertSlots, PrefetchesKeepTheStepsExpertsAndCountTheirUse) {
  ExpertSlots slots(CachePolicy::Lru, 2, 8);
  slots.request({1, 2}, 0);
  // Both slots hold experts the step in flight uses: a prefetch may not take them.
  EXPECT_FALSE(slots.prefetch(3, 1, {1, 2}).has_value());
  EXPECT_FALSE(slots.prefetch(1, 1).has_value());  // resident already
  const auto p = slots.prefetch(3, 1, {2});
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->evicted, 1);
  EXPECT_EQ(p->load, (ExpertSlots::Load{3, slots.slot(3)}));
  // The prefetched 3 counts as used at 1: the next prefetch evicts 2 (used at 0) instead.
  const auto q = slots.prefetch(4, 1);
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->evicted, 2);
  const ExpertSlots::Outcome o = slots.request({3}, 2);
  EXPECT_EQ(o.prefetch_hits, 1);                      // 3 was brought in for this
  EXPECT_EQ(slots.request({3}, 3).prefetch_hits, 0);  // once only
  slots.request({5}, 4);                              // evicts 4, prefetched and never used
  EXPECT_EQ(slots.prefetches_wasted(), 1);
  EXPECT_THROW(ExpertSlots(CachePolicy::Optimal, 2, 8).prefetch(1, 0), InvalidArgument);
  EXPECT_THROW(slots.prefetch(1, 5, {9}), InvalidArgument);
}

TEST(CacheReplay, BoundsAndStructure) {
  const RoutingTrace t = simulate_routing({4, 32, 4, 2, 400, 0.8, 0.3, 0.3, 11});
  EXPECT_THROW(replay_cache(t, CachePolicy::Lru, 3), InvalidArgument);  // fewer than top_k
  for (int slots : {4, 8, 16, 24}) {
    const double optimal = replay_cache(t, CachePolicy::Optimal, slots).hit_rate();
    for (CachePolicy p : {CachePolicy::Lru, CachePolicy::Lfu})
      EXPECT_LE(replay_cache(t, p, slots).hit_rate(), optimal + 1e-12) << slots;
  }
  // Every expert resident: only each layer's first use of an expert misses.
  const CacheReplay all = replay_cache(t, CachePolicy::Lru, 32);
  std::int64_t distinct = 0;
  for (const LayerLoad& l : expert_load(t)) {
    for (std::int64_t c : l.counts)
      distinct += c > 0;
  }
  EXPECT_EQ(all.misses, distinct);
  // Tokens that repeat their previous choice: after the first step nothing misses.
  const RoutingTrace same = simulate_routing({3, 32, 4, 1, 100, 0.8, 1.0, 0.0, 5});
  EXPECT_EQ(replay_cache(same, CachePolicy::Lru, 4).misses, 3 * 4);
  // Pinning the experts a layer uses most keeps them: hits never fall below the pinned ones'.
  std::vector<std::vector<int>> pinned(4);
  const std::vector<LayerLoad> load = expert_load(t);
  for (int l = 0; l < 4; ++l) {
    pinned[l].push_back(static_cast<int>(
        std::max_element(load[l].counts.begin(), load[l].counts.end()) - load[l].counts.begin()));
  }
  EXPECT_GT(replay_cache(t, CachePolicy::Lru, 8, pinned).hits, 0);
  EXPECT_THROW(replay_cache(t, CachePolicy::Lru, 8, {{0}}), InvalidArgument);
}

TEST(RoutingSimulation, HasTheStructureAskedFor) {
  const RoutingSimulation s{4, 64, 4, 3, 100, 1.2, 0.0, 0.0, 42};
  expect_same(simulate_routing(s), simulate_routing(s));  // deterministic per seed
  const RoutingTrace skewed = simulate_routing(s);
  EXPECT_EQ(skewed.records(), 300);
  const RoutingTrace flat = simulate_routing({4, 64, 4, 3, 2000, 0.0, 0.0, 0.0, 42});
  EXPECT_GT(expert_load(skewed)[0].max_over_mean, 4.0);
  EXPECT_LT(expert_load(flat)[0].max_over_mean, 1.5);
  EXPECT_THROW(simulate_routing({4, 64, 4, 3, 10, 0.5, 1.5, 0.0, 1}), InvalidArgument);
  EXPECT_THROW(simulate_routing({4, 64, 80, 3, 10, 0.5, 0.5, 0.0, 1}), InvalidArgument);
}

TEST(MoeCommand, SimulateThenAnalyze) {
  const TempDir dir;
  const std::string trace = dir.str() + "/t.kjrt";
  const test::ProcessResult sim = kjit_cli({"moe", "simulate", "--out", trace, "--layers", "4",
                                            "--experts", "32", "--top-k", "4", "--steps", "50"});
  ASSERT_EQ(sim.exit_code, 0) << sim.err;
  EXPECT_NE(sim.out.find("wrote 50 records (4 layers, 32 experts, top_k 4)"), std::string::npos);
  const test::ProcessResult text = kjit_cli({"moe", "analyze", trace, "--slots", "8,16"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("expert cache hit rate"), std::string::npos) << text.out;
  const test::ProcessResult json = kjit_cli({"moe", "analyze", trace, "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_NE(json.out.find("\"cross_layer_bits\""), std::string::npos);
  EXPECT_NE(json.out.find("\"previous-token\""), std::string::npos);
  write_bytes(dir.str() + "/bad.kjrt", read_bytes(trace).substr(0, 50));
  const test::ProcessResult bad = kjit_cli({"moe", "analyze", dir.str() + "/bad.kjrt"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("truncated"), std::string::npos) << bad.err;
  const test::ProcessResult small = kjit_cli({"moe", "analyze", trace, "--slots", "2"});
  EXPECT_EQ(small.exit_code, 1);
  EXPECT_NE(small.err.find("fewer than top_k = 4"), std::string::npos) << small.err;
}

}  // namespace
}  // namespace kjit::moe

// `kjit moe analyze TRACE` and `kjit moe simulate`: routing traces (kjit/routing_trace.hpp) and
// what they say about expert offloading (kjit/routing_analysis.hpp).
#include <algorithm>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "kjit/error.hpp"
#include "kjit/expert_cache.hpp"
#include "kjit/routing_analysis.hpp"
#include "tools/commands.hpp"

namespace kjit::tools {
namespace {

constexpr moe::CachePolicy kPolicies[] = {moe::CachePolicy::Lru, moe::CachePolicy::Lfu,
                                          moe::CachePolicy::Optimal};
constexpr moe::PredictorKind kPredictors[] = {moe::PredictorKind::Frequency,
                                              moe::PredictorKind::PreviousToken,
                                              moe::PredictorKind::CrossLayer};

// Cache sizes to report: the given ones, else 25%, 50% and 75% of the experts (at least top_k).
std::vector<int> cache_sizes(const moe::RoutingTrace& trace, std::vector<int> given) {
  if (given.empty()) {
    for (int percent : {25, 50, 75})
      given.push_back(std::max(trace.top_k(), trace.experts() * percent / 100));
  }
  std::sort(given.begin(), given.end());
  given.erase(std::unique(given.begin(), given.end()), given.end());
  return given;
}

nlohmann::json analyze(const moe::RoutingTrace& trace, const std::vector<int>& sizes, int hot) {
  nlohmann::json j;
  j["layers"] = trace.layers();
  j["experts"] = trace.experts();
  j["top_k"] = trace.top_k();
  j["records"] = trace.records();
  nlohmann::json loads = nlohmann::json::array();
  for (const moe::LayerLoad& l : moe::expert_load(trace)) {
    const auto busiest = std::max_element(l.counts.begin(), l.counts.end()) - l.counts.begin();
    loads.push_back({{"max_over_mean", l.max_over_mean},
                     {"entropy_bits", l.entropy_bits},
                     {"busiest_expert", busiest},
                     {"counts", l.counts}});
  }
  j["load"] = loads;
  nlohmann::json spots = nlohmann::json::array();
  for (const moe::PairHotSpot& s : moe::co_occurrence_hot_spots(trace, hot))
    spots.push_back(
        {{"layer", s.layer}, {"a", s.a}, {"b", s.b}, {"count", s.count}, {"lift", s.lift}});
  j["co_occurrence_hot_spots"] = spots;
  const moe::Predictability p = moe::predictability(trace);
  j["predictability"] = {{"cross_layer_bits", p.cross_layer_bits},
                         {"temporal_bits", p.temporal_bits},
                         {"uniform_bits", p.uniform_bits}};
  nlohmann::json caches = nlohmann::json::array();
  for (int slots : sizes) {
    for (moe::CachePolicy policy : kPolicies) {
      const moe::CacheReplay r = moe::replay_cache(trace, policy, slots);
      caches.push_back({{"slots_per_layer", slots},
                        {"policy", moe::cache_policy_name(policy)},
                        {"hit_rate", r.hit_rate()},
                        {"hits", r.hits},
                        {"misses", r.misses}});
    }
  }
  j["cache"] = caches;
  // What the offloaded stack's cache gets with its cross-layer prefetch (kjit/expert_cache.hpp).
  nlohmann::json prefetched = nlohmann::json::array();
  for (int slots : sizes) {
    if (slots > trace.experts()) continue;  // a cache of every expert needs no prefetch
    moe::ExpertCacheOptions o;
    o.slots = slots;
    o.prefetch = trace.top_k();
    const moe::ExpertCacheStats s = moe::replay_expert_cache(trace, o);
    prefetched.push_back({{"slots_per_layer", slots},
                          {"policy", "lru"},
                          {"predictor", moe::predictor_name(o.predictor)},
                          {"prefetch", o.prefetch},
                          {"hit_rate", s.hit_rate()},
                          {"prefetch_recall", s.prefetch_recall()},
                          {"prefetch_precision", s.prefetch_precision()}});
  }
  j["cache_with_prefetch"] = prefetched;
  nlohmann::json predictions = nlohmann::json::array();
  for (int n : {trace.top_k(), std::min(2 * trace.top_k(), trace.experts())}) {
    for (moe::PredictorKind kind : kPredictors) {
      const moe::PredictionScore s = moe::score_predictions(trace, kind, n);
      predictions.push_back({{"predictor", moe::predictor_name(kind)},
                             {"predicted", n},
                             {"precision", s.precision},
                             {"recall", s.recall},
                             {"layer_recall", s.layer_recall}});
    }
  }
  j["prediction"] = predictions;
  return j;
}

void print(const nlohmann::json& j) {
  const auto percent = [](const nlohmann::json& x) { return 100 * x.get<double>(); };
  std::cout << fmt::format("{} records, {} layers, {} experts, top_k {}\n\n",
                           j["records"].get<long long>(), j["layers"].get<int>(),
                           j["experts"].get<int>(), j["top_k"].get<int>());
  std::cout << "load per layer (max/mean: 1 is balanced; entropy: uniform is log2(experts))\n";
  std::cout << fmt::format("  {:>5} {:>9} {:>12} {:>8}\n", "layer", "max/mean", "entropy bits",
                           "busiest");
  for (std::size_t l = 0; l < j["load"].size(); ++l) {
    const auto& x = j["load"][l];
    std::cout << fmt::format("  {:>5} {:>9.2f} {:>12.2f} {:>8}\n", l,
                             x["max_over_mean"].get<double>(), x["entropy_bits"].get<double>(),
                             x["busiest_expert"].get<long long>());
  }
  std::cout
      << "\nco-occurrence hot spots (pairs one token chose together, lift over independent)\n";
  for (const auto& s : j["co_occurrence_hot_spots"]) {
    std::cout << fmt::format("  layer {:>3}: experts {:>4} + {:<4} {:>8} times, lift {:.2f}\n",
                             s["layer"].get<int>(), s["a"].get<int>(), s["b"].get<int>(),
                             s["count"].get<long long>(), s["lift"].get<double>());
  }
  const auto& p = j["predictability"];
  std::cout << fmt::format(
      "\npredictability (conditional entropy of a chosen expert; uniform {:.2f} bits)\n"
      "  given the layer before (same token):      {:.2f} bits\n"
      "  given the previous token (same layer):    {:.2f} bits\n",
      p["uniform_bits"].get<double>(), p["cross_layer_bits"].get<double>(),
      p["temporal_bits"].get<double>());
  std::cout << "\nexpert cache hit rate (slots per layer x policy; optimal = Belady's bound)\n";
  std::cout << fmt::format("  {:>6} {:>8} {:>8} {:>8}\n", "slots", "lru", "lfu", "optimal");
  const auto& caches = j["cache"];
  for (std::size_t i = 0; i + 2 < caches.size(); i += 3) {
    std::cout << fmt::format("  {:>6} {:>7.1f}% {:>7.1f}% {:>7.1f}%\n",
                             caches[i]["slots_per_layer"].get<int>(),
                             percent(caches[i]["hit_rate"]), percent(caches[i + 1]["hit_rate"]),
                             percent(caches[i + 2]["hit_rate"]));
  }
  std::cout << "\nexpert cache with the cross-layer prefetch (LRU; each token's top_k likeliest "
               "experts at the next layer brought in)\n";
  std::cout << fmt::format("  {:>6} {:>9} {:>9} {:>10}\n", "slots", "hit rate", "recall",
                           "precision");
  for (const auto& c : j["cache_with_prefetch"]) {
    std::cout << fmt::format("  {:>6} {:>8.1f}% {:>8.1f}% {:>9.1f}%\n",
                             c["slots_per_layer"].get<int>(), percent(c["hit_rate"]),
                             percent(c["prefetch_recall"]), percent(c["prefetch_precision"]));
  }
  std::cout << "\nprefetch prediction before each router runs (recall: chosen experts guessed)\n";
  std::cout << fmt::format("  {:<15} {:>9} {:>9} {:>9}\n", "predictor", "predicted", "recall",
                           "precision");
  for (const auto& p : j["prediction"]) {
    std::cout << fmt::format("  {:<15} {:>9} {:>8.1f}% {:>8.1f}%\n",
                             p["predictor"].get<std::string>(), p["predicted"].get<int>(),
                             percent(p["recall"]), percent(p["precision"]));
  }
}

}  // namespace

void add_moe_command(CLI::App& app, int* exit_code) {
  CLI::App* moe = app.add_subcommand("moe", "MoE routing traces: analyze one, simulate one");
  moe->require_subcommand(1);
  // The options' storage lives as long as the app.
  struct AnalyzeArgs {
    std::string trace;
    bool json = false;
    std::vector<int> slots;
    int hot = 10;
  };
  auto a = std::make_shared<AnalyzeArgs>();
  CLI::App* analyze_cmd = moe->add_subcommand(
      "analyze",
      "Expert load, co-occurrence hot spots, predictability and cache hit rates of a trace");
  analyze_cmd->add_option("trace", a->trace, "Routing trace (.kjrt binary or JSON lines)")
      ->required();
  analyze_cmd->add_flag("--json", a->json, "Print one JSON object");
  analyze_cmd
      ->add_option("--slots", a->slots,
                   "Cache sizes, experts a layer (default: 25, 50, 75% of them)")
      ->delimiter(',');
  analyze_cmd->add_option("--hot", a->hot, "Co-occurrence hot spots to list")
      ->check(CLI::NonNegativeNumber);
  analyze_cmd->callback([a, exit_code] {
    const moe::RoutingTrace trace = moe::RoutingTrace::read(a->trace);
    const nlohmann::json j = analyze(trace, cache_sizes(trace, a->slots), a->hot);
    if (a->json)
      std::cout << j.dump(2) << "\n";
    else
      print(j);
    *exit_code = 0;
  });

  struct SimulateArgs {
    moe::RoutingSimulation sim;
    std::string out, format = "binary";
  };
  auto s = std::make_shared<SimulateArgs>();
  CLI::App* simulate_cmd = moe->add_subcommand(
      "simulate",
      "Write a synthetic trace of known skew, temporal locality and cross-layer correlation");
  simulate_cmd->add_option("--out", s->out, "The trace file to write")->required();
  simulate_cmd->add_option("--format", s->format, "binary (.kjrt) or jsonl")
      ->check(CLI::IsMember({"binary", "jsonl"}));
  simulate_cmd->add_option("--layers", s->sim.layers, "MoE layers")->capture_default_str();
  simulate_cmd->add_option("--experts", s->sim.experts, "Experts a layer")->capture_default_str();
  simulate_cmd->add_option("--top-k", s->sim.top_k, "Experts a token")->capture_default_str();
  simulate_cmd->add_option("--sequences", s->sim.sequences, "Tokens a step (the batch)")
      ->capture_default_str();
  simulate_cmd->add_option("--steps", s->sim.steps, "Steps")->capture_default_str();
  simulate_cmd->add_option("--skew", s->sim.skew, "Zipf exponent of the experts' popularity")
      ->capture_default_str();
  simulate_cmd
      ->add_option("--temporal", s->sim.temporal_locality,
                   "Probability a choice repeats the sequence's previous token's")
      ->capture_default_str();
  simulate_cmd
      ->add_option("--cross-layer", s->sim.cross_layer,
                   "Probability a choice follows the layer before's (a fixed map)")
      ->capture_default_str();
  simulate_cmd->add_option("--seed", s->sim.seed, "Random seed")->capture_default_str();
  simulate_cmd->callback([s, exit_code] {
    const moe::RoutingTrace trace = moe::simulate_routing(s->sim);
    if (s->format == "jsonl")
      trace.write_json_lines(s->out);
    else
      trace.write_binary(s->out);
    std::cout << fmt::format("wrote {} records ({} layers, {} experts, top_k {}) to {}\n",
                             trace.records(), trace.layers(), trace.experts(), trace.top_k(),
                             s->out);
    *exit_code = 0;
  });
}

}  // namespace kjit::tools

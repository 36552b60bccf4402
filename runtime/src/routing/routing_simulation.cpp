// Synthetic routing traces of known structure (kjit/routing_analysis.hpp).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include <fmt/format.h>

#include "kjit/error.hpp"
#include "kjit/routing_analysis.hpp"

namespace kjit::moe {

RoutingTrace simulate_routing(const RoutingSimulation& sim) {
  const auto probability = [](double p, const char* name) {
    if (!(p >= 0 && p <= 1))
      throw InvalidArgument(
          fmt::format("routing simulation: {} must be in [0, 1], got {}", name, p));
  };
  probability(sim.temporal_locality, "temporal_locality");
  probability(sim.cross_layer, "cross_layer");
  if (!(sim.skew >= 0 && sim.skew <= 8))
    throw InvalidArgument(
        fmt::format("routing simulation: skew must be in [0, 8], got {}", sim.skew));
  if (sim.sequences < 1 || sim.steps < 0) {
    throw InvalidArgument(
        fmt::format("routing simulation: need sequences >= 1 and steps >= 0, got {} and {}",
                    sim.sequences, sim.steps));
  }
  RoutingTrace trace(sim.layers, sim.experts, sim.top_k);  // checks the sizes
  const int e = sim.experts, k = sim.top_k, layers = sim.layers;
  std::mt19937_64 rng(sim.seed);
  std::uniform_real_distribution<double> unit(0, 1);
  // Zipf popularity (rank i has weight 1 / (i + 1)^skew), a different expert order per layer; a
  // fixed permutation per layer maps the layer before's choices (the cross-layer structure).
  std::vector<double> weights(static_cast<std::size_t>(e));
  for (int i = 0; i < e; ++i)
    weights[i] = 1.0 / std::pow(i + 1.0, sim.skew);
  std::discrete_distribution<int> popular(weights.begin(), weights.end());
  std::vector<std::vector<int>> rank_to_expert(static_cast<std::size_t>(layers)),
      follows(static_cast<std::size_t>(layers));
  for (int l = 0; l < layers; ++l) {
    rank_to_expert[l].resize(static_cast<std::size_t>(e));
    std::iota(rank_to_expert[l].begin(), rank_to_expert[l].end(), 0);
    std::shuffle(rank_to_expert[l].begin(), rank_to_expert[l].end(), rng);
    follows[l] = rank_to_expert[l];
    std::shuffle(follows[l].begin(), follows[l].end(), rng);
  }
  std::vector<std::vector<int>> previous(static_cast<std::size_t>(sim.sequences));
  std::vector<int> ids(static_cast<std::size_t>(layers) * k);
  for (int step = 0; step < sim.steps; ++step) {
    for (int seq = 0; seq < sim.sequences; ++seq) {
      for (int l = 0; l < layers; ++l) {
        int* choice = ids.data() + static_cast<std::ptrdiff_t>(l) * k;
        for (int j = 0; j < k; ++j) {
          int pick = -1;
          const double u = unit(rng);
          if (!previous[seq].empty() && u < sim.temporal_locality) {
            pick = previous[seq][static_cast<std::size_t>(l) * k + j];
          } else if (l > 0 &&
                     u < sim.temporal_locality + (1 - sim.temporal_locality) * sim.cross_layer) {
            pick = follows[l][choice[j - k]];  // the same position at the layer before
          }
          // A repeat within the token's top-k (or no structured pick): Zipf draws until new.
          while (pick < 0 || std::find(choice, choice + j, pick) != choice + j)
            pick = rank_to_expert[l][popular(rng)];
          choice[j] = pick;
        }
      }
      trace.add(static_cast<std::uint32_t>(seq), static_cast<std::uint32_t>(step), ids);
      previous[seq] = ids;
    }
  }
  return trace;
}

}  // namespace kjit::moe

// Online predictors of the next experts and their precision and recall over a trace
// (kjit/routing_analysis.hpp).
#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include <fmt/format.h>

#include "kjit/error.hpp"
#include "kjit/routing_analysis.hpp"

namespace kjit::moe {
namespace {

constexpr double kHalfLife = 64;  // records

// The `n` highest-scored experts, `first` ones ahead of them (in order, without repeats).
std::vector<int> top_n(const std::vector<double>& score, int n,
                       const std::vector<int>& first = {}) {
  std::vector<int> out;
  for (int e : first) {
    if (static_cast<int>(out.size()) == n) return out;
    if (std::find(out.begin(), out.end(), e) == out.end()) out.push_back(e);
  }
  std::vector<int> order(score.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return score[a] > score[b]; });
  for (int e : order) {
    if (static_cast<int>(out.size()) == n) break;
    if (std::find(out.begin(), out.end(), e) == out.end()) out.push_back(e);
  }
  return out;
}

}  // namespace

const char* predictor_name(PredictorKind kind) {
  switch (kind) {
    case PredictorKind::Frequency:
      return "frequency";
    case PredictorKind::PreviousToken:
      return "previous-token";
    default:
      return "cross-layer";
  }
}

PredictionScore score_predictions(const RoutingTrace& trace, PredictorKind kind, int predicted) {
  const int e = trace.experts(), k = trace.top_k(), layers = trace.layers();
  if (predicted < 1 || predicted > e) {
    throw InvalidArgument(
        fmt::format("expert prediction: predicted experts must be in 1..{}, got {}", e, predicted));
  }
  // Frequency: counts scaled up by `boost` each record instead of decaying every count.
  std::vector<std::vector<double>> frequency(static_cast<std::size_t>(layers),
                                             std::vector<double>(static_cast<std::size_t>(e), 0));
  double boost = 1;
  const double growth = std::pow(2.0, 1 / kHalfLife);
  std::vector<std::vector<double>> transitions(
      static_cast<std::size_t>(layers), std::vector<double>(static_cast<std::size_t>(e) * e, 0));
  std::map<std::uint32_t, std::int64_t> last_of_sequence;
  std::vector<std::int64_t> hits(static_cast<std::size_t>(layers), 0);
  std::vector<double> score(static_cast<std::size_t>(e));
  for (std::int64_t r = 0; r < trace.records(); ++r) {
    const auto previous = last_of_sequence.find(trace.sequence(r));
    for (int layer = 0; layer < layers; ++layer) {
      std::vector<int> first;
      if (kind == PredictorKind::CrossLayer && layer > 0) {
        std::fill(score.begin(), score.end(), 0.0);
        const std::uint16_t* before = trace.choice(r, layer - 1);
        for (int j = 0; j < k; ++j) {
          const double* row = &transitions[layer][static_cast<std::size_t>(before[j]) * e];
          for (int b = 0; b < e; ++b)
            score[b] += row[b];
        }
        first = top_n(score, predicted);
        // Transitions never seen say nothing: keep only experts with a count.
        first.erase(
            std::remove_if(first.begin(), first.end(), [&](int x) { return score[x] <= 0; }),
            first.end());
      } else if (kind != PredictorKind::Frequency && previous != last_of_sequence.end()) {
        const std::uint16_t* last = trace.choice(previous->second, layer);
        first.assign(last, last + k);
      }
      const std::vector<int> guess = top_n(frequency[layer], predicted, first);
      const std::uint16_t* actual = trace.choice(r, layer);
      for (int g : guess)
        hits[layer] += std::find(actual, actual + k, g) != actual + k;
    }
    // Learn from the record.
    boost *= growth;
    if (boost > 1e100) {  // rescale before overflow
      for (auto& counts : frequency) {
        for (double& c : counts)
          c /= boost;
      }
      boost = 1;
    }
    for (int layer = 0; layer < layers; ++layer) {
      const std::uint16_t* c = trace.choice(r, layer);
      for (int j = 0; j < k; ++j) {
        frequency[layer][c[j]] += boost;
        if (layer > 0) {
          const std::uint16_t* before = trace.choice(r, layer - 1);
          for (int i = 0; i < k; ++i)
            transitions[layer][static_cast<std::size_t>(before[i]) * e + c[j]] += 1;
        }
      }
    }
    last_of_sequence[trace.sequence(r)] = r;
  }
  PredictionScore out;
  const double records = static_cast<double>(std::max<std::int64_t>(1, trace.records()));
  std::int64_t total = 0;
  for (int layer = 0; layer < layers; ++layer) {
    out.layer_recall.push_back(hits[layer] / (records * k));
    total += hits[layer];
  }
  out.recall = total / (records * k * layers);
  out.precision = total / (records * predicted * layers);
  return out;
}

}  // namespace kjit::moe

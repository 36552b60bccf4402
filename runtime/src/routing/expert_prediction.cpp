// Online predictors of the next experts and their precision and recall over a trace
// (kjit/routing_analysis.hpp).
#include <algorithm>
#include <cmath>
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

ExpertPredictor::ExpertPredictor(PredictorKind kind, int layers, int experts, int top_k)
    : kind_(kind),
      layers_(layers),
      experts_(experts),
      top_k_(top_k),
      frequency_(static_cast<std::size_t>(std::max(layers, 0)),
                 std::vector<double>(static_cast<std::size_t>(std::max(experts, 0)), 0)),
      boost_(static_cast<std::size_t>(std::max(layers, 0)), 1.0),
      transitions_(kind == PredictorKind::CrossLayer ? frequency_.size() : 0,
                   std::vector<double>(static_cast<std::size_t>(std::max(experts, 0)) *
                                           static_cast<std::size_t>(std::max(experts, 0)),
                                       0)) {
  if (layers < 1 || experts < 1 || top_k < 1 || top_k > experts) {
    throw InvalidArgument(fmt::format(
        "expert prediction: need layers >= 1 and 1 <= top_k <= experts, got {}, {} and {}", layers,
        top_k, experts));
  }
}

std::vector<int> ExpertPredictor::predict(std::uint32_t sequence, int layer, const int* before,
                                          int count) const {
  if (layer < 0 || layer >= layers_ || count < 1 || count > experts_) {
    throw InvalidArgument(fmt::format("expert prediction: layer {} (0..{}) and count {} (1..{})",
                                      layer, layers_ - 1, count, experts_));
  }
  std::vector<int> first;
  if (kind_ == PredictorKind::CrossLayer && layer > 0 && before != nullptr) {
    std::vector<double> score(static_cast<std::size_t>(experts_), 0.0);
    for (int j = 0; j < top_k_; ++j) {
      const double* row = &transitions_[layer][static_cast<std::size_t>(before[j]) * experts_];
      for (int b = 0; b < experts_; ++b)
        score[b] += row[b];
    }
    first = top_n(score, count);
    // Transitions never seen say nothing: keep only experts with a count.
    first.erase(std::remove_if(first.begin(), first.end(), [&](int x) { return score[x] <= 0; }),
                first.end());
  } else if (kind_ != PredictorKind::Frequency) {
    if (const auto last = last_.find(sequence); last != last_.end()) {
      const int* ids = &last->second.ids[static_cast<std::size_t>(layer) * top_k_];
      if (ids[0] >= 0) first.assign(ids, ids + top_k_);
    }
  }
  return top_n(frequency_[layer], count, first);
}

void ExpertPredictor::observe(std::uint32_t sequence, int layer, const int* ids,
                              const int* before) {
  if (layer < 0 || layer >= layers_) {
    throw InvalidArgument(
        fmt::format("expert prediction: layer {} is outside 0..{}", layer, layers_ - 1));
  }
  for (int j = 0; j < top_k_; ++j) {
    if (ids[j] < 0 || ids[j] >= experts_ || (before && (before[j] < 0 || before[j] >= experts_))) {
      throw InvalidArgument(fmt::format("expert prediction: an expert id outside 0..{} at layer {}",
                                        experts_ - 1, layer));
    }
  }
  double& boost = boost_[layer];
  boost *= std::pow(2.0, 1 / kHalfLife);
  std::vector<double>& counts = frequency_[layer];
  if (boost > 1e100) {  // rescale before overflow
    for (double& c : counts)
      c /= boost;
    boost = 1;
  }
  for (int j = 0; j < top_k_; ++j) {
    counts[ids[j]] += boost;
    if (kind_ == PredictorKind::CrossLayer && layer > 0 && before != nullptr) {
      for (int i = 0; i < top_k_; ++i)
        transitions_[layer][static_cast<std::size_t>(before[i]) * experts_ + ids[j]] += 1;
    }
  }
  if (kind_ != PredictorKind::Frequency) {
    Last& last = last_[sequence];
    if (last.ids.empty()) last.ids.assign(static_cast<std::size_t>(layers_) * top_k_, -1);
    std::copy(ids, ids + top_k_, last.ids.begin() + static_cast<std::ptrdiff_t>(layer) * top_k_);
    last.seen = ++observations_;
    if (last_.size() > 2 * kSequences) {  // drop the older half
      std::vector<std::int64_t> seen;
      for (const auto& [s, l] : last_)
        seen.push_back(l.seen);
      std::nth_element(seen.begin(), seen.begin() + kSequences, seen.end());
      const std::int64_t cut = seen[kSequences];
      for (auto it = last_.begin(); it != last_.end();)
        it = it->second.seen < cut ? last_.erase(it) : std::next(it);
    }
  }
}

PredictionScore score_predictions(const RoutingTrace& trace, PredictorKind kind, int predicted) {
  const int e = trace.experts(), k = trace.top_k(), layers = trace.layers();
  if (predicted < 1 || predicted > e) {
    throw InvalidArgument(
        fmt::format("expert prediction: predicted experts must be in 1..{}, got {}", e, predicted));
  }
  ExpertPredictor predictor(kind, layers, e, k);
  std::vector<std::int64_t> hits(static_cast<std::size_t>(layers), 0);
  std::vector<int> now(static_cast<std::size_t>(k)), before(static_cast<std::size_t>(k));
  for (std::int64_t r = 0; r < trace.records(); ++r) {
    for (int layer = 0; layer < layers; ++layer) {
      const std::uint16_t* actual = trace.choice(r, layer);
      std::copy(actual, actual + k, now.begin());
      const int* b = layer > 0 ? before.data() : nullptr;
      for (int g : predictor.predict(trace.sequence(r), layer, b, predicted))
        hits[layer] += std::find(now.begin(), now.end(), g) != now.end();
      predictor.observe(trace.sequence(r), layer, now.data(), b);
      before.swap(now);
    }
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

// Expert load, co-occurrence and predictability of a routing trace (kjit/routing_analysis.hpp).
#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include <fmt/format.h>

#include "kjit/error.hpp"
#include "kjit/routing_analysis.hpp"

namespace kjit::moe {
namespace {

double entropy_bits(const std::vector<std::int64_t>& counts) {
  std::int64_t total = 0;
  for (std::int64_t c : counts)
    total += c;
  double h = 0;
  for (std::int64_t c : counts) {
    if (c > 0) {
      const double p = static_cast<double>(c) / total;
      h -= p * std::log2(p);
    }
  }
  return h;
}

// H(B | A) in bits from pair counts [A][B] (rows with no count are skipped).
double conditional_entropy_bits(const std::vector<std::int64_t>& pairs, int n) {
  std::int64_t total = 0;
  double h = 0;
  for (int a = 0; a < n; ++a) {
    const std::vector<std::int64_t> row(pairs.begin() + static_cast<std::ptrdiff_t>(a) * n,
                                        pairs.begin() + static_cast<std::ptrdiff_t>(a + 1) * n);
    std::int64_t row_total = 0;
    for (std::int64_t c : row)
      row_total += c;
    h += static_cast<double>(row_total) * entropy_bits(row);
    total += row_total;
  }
  return total ? h / static_cast<double>(total) : 0;
}

}  // namespace

std::vector<LayerLoad> expert_load(const RoutingTrace& trace) {
  const int e = trace.experts();
  std::vector<LayerLoad> out(static_cast<std::size_t>(trace.layers()));
  for (int layer = 0; layer < trace.layers(); ++layer) {
    LayerLoad& load = out[layer];
    load.counts.assign(static_cast<std::size_t>(e), 0);
    for (std::int64_t r = 0; r < trace.records(); ++r) {
      for (int j = 0; j < trace.top_k(); ++j)
        ++load.counts[trace.choice(r, layer)[j]];
    }
    const double mean = static_cast<double>(trace.records()) * trace.top_k() / e;
    const std::int64_t max = *std::max_element(load.counts.begin(), load.counts.end());
    load.max_over_mean = mean > 0 ? static_cast<double>(max) / mean : 0;
    load.entropy_bits = entropy_bits(load.counts);
  }
  return out;
}

std::vector<std::int64_t> co_occurrence(const RoutingTrace& trace, int layer) {
  if (layer < 0 || layer >= trace.layers()) {
    throw InvalidArgument(
        fmt::format("co_occurrence: layer {} is outside 0..{}", layer, trace.layers() - 1));
  }
  const int e = trace.experts(), k = trace.top_k();
  std::vector<std::int64_t> pairs(static_cast<std::size_t>(e) * e, 0);
  for (std::int64_t r = 0; r < trace.records(); ++r) {
    const std::uint16_t* c = trace.choice(r, layer);
    for (int i = 0; i < k; ++i) {
      for (int j = 0; j < k; ++j) {
        if (i != j) ++pairs[static_cast<std::size_t>(c[i]) * e + c[j]];
      }
    }
  }
  return pairs;
}

std::vector<PairHotSpot> co_occurrence_hot_spots(const RoutingTrace& trace, int count,
                                                 std::int64_t min_count) {
  const int e = trace.experts();
  const std::vector<LayerLoad> loads = expert_load(trace);
  const double n = static_cast<double>(trace.records());
  std::vector<PairHotSpot> spots;
  for (int layer = 0; layer < trace.layers(); ++layer) {
    const std::vector<std::int64_t> pairs = co_occurrence(trace, layer);
    for (int a = 0; a < e; ++a) {
      for (int b = a + 1; b < e; ++b) {
        const std::int64_t together = pairs[static_cast<std::size_t>(a) * e + b];
        if (together < min_count) continue;
        // Independent choices: P(a) P(b) per record.
        const double expected = n * (loads[layer].counts[a] / n) * (loads[layer].counts[b] / n);
        spots.push_back({layer, a, b, together, expected > 0 ? together / expected : 0});
      }
    }
  }
  std::sort(spots.begin(), spots.end(), [](const PairHotSpot& x, const PairHotSpot& y) {
    return x.lift != y.lift ? x.lift > y.lift : x.count > y.count;
  });
  if (static_cast<int>(spots.size()) > count) spots.resize(static_cast<std::size_t>(count));
  return spots;
}

Predictability predictability(const RoutingTrace& trace) {
  const int e = trace.experts(), k = trace.top_k();
  std::vector<std::int64_t> cross(static_cast<std::size_t>(e) * e, 0),
      temporal(static_cast<std::size_t>(e) * e, 0);
  const auto count_pairs = [&](std::vector<std::int64_t>& pairs, const std::uint16_t* from,
                               const std::uint16_t* to) {
    for (int i = 0; i < k; ++i) {
      for (int j = 0; j < k; ++j)
        ++pairs[static_cast<std::size_t>(from[i]) * e + to[j]];
    }
  };
  std::map<std::uint32_t, std::int64_t> last_of_sequence;
  for (std::int64_t r = 0; r < trace.records(); ++r) {
    for (int layer = 1; layer < trace.layers(); ++layer)
      count_pairs(cross, trace.choice(r, layer - 1), trace.choice(r, layer));
    const auto it = last_of_sequence.find(trace.sequence(r));
    if (it != last_of_sequence.end()) {
      for (int layer = 0; layer < trace.layers(); ++layer)
        count_pairs(temporal, trace.choice(it->second, layer), trace.choice(r, layer));
    }
    last_of_sequence[trace.sequence(r)] = r;
  }
  return {conditional_entropy_bits(cross, e), conditional_entropy_bits(temporal, e),
          std::log2(static_cast<double>(e))};
}

}  // namespace kjit::moe

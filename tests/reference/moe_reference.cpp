#include "tests/reference/moe_reference.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace kjit::reference {
namespace {

// Indices of the n largest values, largest first; ties to the lower index.
std::vector<int> top_n(const std::vector<double>& v, int n) {
  std::vector<int> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return v[a] > v[b]; });
  order.resize(static_cast<std::size_t>(n));
  return order;
}

// The nearest of `values` (ascending) to x >= 0; ties to the even index.
int nearest_even(const std::vector<double>& values, double x) {
  int best = 0;
  for (int i = 1; i < static_cast<int>(values.size()); ++i) {
    const double d = std::abs(values[i] - x), db = std::abs(values[best] - x);
    if (d < db || (d == db && i % 2 == 0)) best = i;
  }
  return best;
}

const std::vector<double>& e2m1_grid() {
  static const std::vector<double> grid{0, 0.5, 1, 1.5, 2, 3, 4, 6};
  return grid;
}

const std::vector<double>& e4m3_grid() {  // codes 0x00..0x7e: 0x7f is NaN
  static const std::vector<double> grid = [] {
    std::vector<double> g;
    for (int c = 0; c < 0x7f; ++c) {
      const int e = c >> 3, m = c & 7;
      g.push_back(e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1 + m / 8.0, e - 7));
    }
    return g;
  }();
  return grid;
}

}  // namespace

Routing route(const std::vector<double>& logits, int tokens, int experts, const RouterConfig& c) {
  Routing r{std::vector<int>(static_cast<std::size_t>(tokens) * c.top_k),
            std::vector<double>(static_cast<std::size_t>(tokens) * c.top_k)};
  const int per_group = experts / c.groups;
  for (int t = 0; t < tokens; ++t) {
    const double* l = &logits[static_cast<std::size_t>(t) * experts];
    std::vector<double> score(experts), choice(experts);
    if (c.sigmoid) {
      for (int e = 0; e < experts; ++e)
        score[e] = 1 / (1 + std::exp(-l[e]));
    } else {
      const double max = *std::max_element(l, l + experts);
      double sum = 0;
      for (int e = 0; e < experts; ++e)
        sum += score[e] = std::exp(l[e] - max);
      for (double& s : score)
        s /= sum;
    }
    for (int e = 0; e < experts; ++e)
      choice[e] = score[e] + (c.bias.empty() ? 0.0 : c.bias[e]);
    if (c.groups > 1) {
      std::vector<double> group_score(c.groups);
      for (int g = 0; g < c.groups; ++g) {
        const std::vector<double> members(choice.begin() + g * per_group,
                                          choice.begin() + (g + 1) * per_group);
        // vLLM's grouped_topk: the two best summed with a correction bias, else the best.
        for (int i : top_n(members, std::min(c.bias.empty() ? 1 : 2, per_group)))
          group_score[g] += members[i];
      }
      std::vector<bool> kept(c.groups, false);
      for (int g : top_n(group_score, c.topk_groups))
        kept[g] = true;
      for (int e = 0; e < experts; ++e) {
        if (!kept[e / per_group]) choice[e] = -std::numeric_limits<double>::infinity();
      }
    }
    const std::vector<int> ids = top_n(choice, c.top_k);
    double sum = 0;
    for (int j = 0; j < c.top_k; ++j)
      sum += score[ids[j]];
    for (int j = 0; j < c.top_k; ++j) {
      double w = score[ids[j]];
      if (c.renormalize) w /= sum + 1e-20;
      r.ids[static_cast<std::size_t>(t) * c.top_k + j] = ids[j];
      r.weights[static_cast<std::size_t>(t) * c.top_k + j] = w * c.scaling;
    }
  }
  return r;
}

Alignment align(const std::vector<int>& ids, int tokens, int top_k, int experts, int block) {
  Alignment a{std::vector<int>(experts, 0), std::vector<int>(experts + 1, 0), {}};
  const int pairs = tokens * top_k;
  for (int i = 0; i < pairs; ++i)
    ++a.counts[ids[i]];
  for (int e = 0; e < experts; ++e)
    a.offsets[e + 1] = a.offsets[e] + (a.counts[e] + block - 1) / block * block;
  a.sorted.assign(static_cast<std::size_t>(a.offsets[experts]), pairs);
  std::vector<int> fill(experts, 0);
  for (int i = 0; i < pairs; ++i)
    a.sorted[a.offsets[ids[i]] + fill[ids[i]]++] = i;
  return a;
}

Balance balance(const std::vector<int>& ids, const std::vector<double>& probs,
                const std::vector<double>& logits, const std::vector<int>& cu_seqlens, int tokens,
                int top_k, int experts, double aux_coeff, double z_coeff) {
  // counts and probability sums of tokens [begin, end)
  auto sums = [&](int begin, int end, std::vector<int>& counts, std::vector<double>& prob) {
    counts.assign(experts, 0);
    prob.assign(experts, 0.0);
    for (int t = begin; t < end; ++t) {
      for (int j = 0; j < top_k; ++j) {
        const int e = ids[static_cast<std::size_t>(t) * top_k + j];
        if (e >= 0 && e < experts) ++counts[e];
      }
      for (int e = 0; e < experts; ++e)
        prob[e] += probs[static_cast<std::size_t>(t) * experts + e];
    }
  };
  Balance b;
  std::vector<double> prob;
  sums(0, tokens, b.counts, prob);
  b.f.assign(experts, 0.0);
  b.p.assign(experts, 0.0);
  if (tokens == 0) return b;
  for (int e = 0; e < experts; ++e) {
    b.f[e] = static_cast<double>(b.counts[e]) / (static_cast<double>(top_k) * tokens);
    b.p[e] = prob[e] / tokens;
    b.aux += aux_coeff * experts * b.f[e] * b.p[e];
  }
  const std::vector<int> bounds = cu_seqlens.empty() ? std::vector<int>{0, tokens} : cu_seqlens;
  int non_empty = 0;
  for (std::size_t s = 0; s + 1 < bounds.size(); ++s) {
    const int length = bounds[s + 1] - bounds[s];
    if (length <= 0) continue;
    std::vector<int> counts;
    std::vector<double> seq_prob;
    sums(bounds[s], bounds[s + 1], counts, seq_prob);
    double fp = 0;
    for (int e = 0; e < experts; ++e)
      fp += static_cast<double>(counts[e]) / (static_cast<double>(top_k) * length) *
            (seq_prob[e] / length);
    b.seq_aux += aux_coeff * experts * fp;
    ++non_empty;
  }
  if (non_empty > 0) b.seq_aux /= non_empty;
  if (!logits.empty()) {
    for (int t = 0; t < tokens; ++t) {
      const double* row = &logits[static_cast<std::size_t>(t) * experts];
      double max = row[0], sum = 0;
      for (int e = 1; e < experts; ++e)
        max = std::max(max, row[e]);
      for (int e = 0; e < experts; ++e)
        sum += std::exp(row[e] - max);
      const double lse = max + std::log(sum);
      b.z += z_coeff * lse * lse / tokens;
    }
  }
  const double mean = static_cast<double>(top_k) * tokens / experts;
  b.max_vio = (*std::max_element(b.counts.begin(), b.counts.end()) - mean) / mean;
  return b;
}

std::uint8_t e2m1_code(double x) {
  const auto magnitude = static_cast<std::uint8_t>(nearest_even(e2m1_grid(), std::abs(x)));
  return static_cast<std::uint8_t>((x < 0 ? 8 : 0) | magnitude);
}

double e2m1_value(std::uint8_t code) {
  return (code & 8 ? -1 : 1) * e2m1_grid()[code & 7];
}

std::uint8_t e4m3_code(double x) {
  const auto magnitude = static_cast<std::uint8_t>(nearest_even(e4m3_grid(), std::abs(x)));
  return static_cast<std::uint8_t>((x < 0 ? 0x80 : 0) | magnitude);
}

double e4m3_value(std::uint8_t code) {
  return (code & 0x80 ? -1 : 1) * e4m3_grid()[code & 0x7f];
}

Fp4Tensor quantize_nvfp4(const std::vector<double>& x, int rows, int cols) {
  constexpr int kBlock = 16;
  Fp4Tensor t;
  double amax = 0;
  for (double v : x)
    amax = std::max(amax, std::abs(v));
  // TensorRT-LLM's convention: the tensor scale maps the largest block scale to E4M3's 448.
  const double global = amax > 0 ? 448.0 * 6.0 / amax : 1.0;
  t.tensor_scale = 1.0 / global;
  for (int r = 0; r < rows; ++r) {
    for (int b = 0; b < cols / kBlock; ++b) {
      const double* v = &x[static_cast<std::size_t>(r) * cols + b * kBlock];
      double block_max = 0;
      for (int i = 0; i < kBlock; ++i)
        block_max = std::max(block_max, std::abs(v[i]));
      const std::uint8_t scale = e4m3_code(block_max / 6.0 * global);
      t.scales.push_back(scale);
      const double s = e4m3_value(scale);
      for (int i = 0; i < kBlock; ++i)
        t.codes.push_back(s > 0 ? e2m1_code(v[i] * global / s) : 0);
    }
  }
  return t;
}

Fp4Tensor quantize_mxfp4(const std::vector<double>& x, int rows, int cols) {
  constexpr int kBlock = 32;
  Fp4Tensor t;
  for (int r = 0; r < rows; ++r) {
    for (int b = 0; b < cols / kBlock; ++b) {
      const double* v = &x[static_cast<std::size_t>(r) * cols + b * kBlock];
      double block_max = 0;
      for (int i = 0; i < kBlock; ++i)
        block_max = std::max(block_max, std::abs(v[i]));
      // The OCP MX choice: 2^(floor(log2 amax) - 2), E2M1's largest exponent being 2; elements
      // past 6 X saturate.
      const int exponent =
          block_max > 0 ? static_cast<int>(std::floor(std::log2(block_max))) - 2 : -127;
      const int code = std::clamp(exponent + 127, 0, 254);
      t.scales.push_back(static_cast<std::uint8_t>(code));
      const double s = std::ldexp(1.0, code - 127);
      for (int i = 0; i < kBlock; ++i)
        t.codes.push_back(e2m1_code(v[i] / s));
    }
  }
  return t;
}

std::vector<double> dequantize(const Fp4Tensor& t, int rows, int cols, bool nvfp4) {
  const int block = nvfp4 ? 16 : 32;
  std::vector<double> x(static_cast<std::size_t>(rows) * cols);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const std::uint8_t scale = t.scales[i / block];
    const double s = nvfp4 ? e4m3_value(scale) * t.tensor_scale : std::ldexp(1.0, scale - 127);
    x[i] = e2m1_value(t.codes[i]) * s;
  }
  return x;
}

}  // namespace kjit::reference

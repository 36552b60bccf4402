// The MoE references against hand-worked cases: the router (softmax, GLM-4.7-Flash's sigmoid
// with a choice-only bias, renormalisation and x1.8, DeepSeek-V3's grouped top-k, ties to the
// lower id), vLLM's block alignment, and the FP4/FP8 codes (every grid value, ties to even,
// saturation) with NVFP4/MXFP4 round trips inside their half steps.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "tests/reference/moe_reference.hpp"

namespace kjit::test {
namespace {

using reference::RouterConfig;

TEST(MoeRouterReference, SoftmaxTopKWithTiesToTheLowerId) {
  // Experts 1 and 3 tie for the top; 0 and 2 tie below them.
  const std::vector<double> logits{1.0, 2.0, 1.0, 2.0, 0.0};
  RouterConfig c;
  c.top_k = 3;
  const auto r = reference::route(logits, 1, 5, c);
  EXPECT_EQ(r.ids, (std::vector<int>{1, 3, 0}));
  const double z = 2 * std::exp(1.0) + 2 * std::exp(2.0) + 1;
  EXPECT_NEAR(r.weights[0], std::exp(2.0) / z, 1e-15);
  EXPECT_NEAR(r.weights[2], std::exp(1.0) / z, 1e-15);
}

TEST(MoeRouterReference, GlmSigmoidBiasOnlyChoosesAndWeightsAreRenormalisedTimes18) {
  // Sigmoid scores; the bias lifts expert 0 into the top 2 but its weight is its own score.
  const std::vector<double> logits{-1.0, 3.0, 0.5, 2.0};
  RouterConfig c;
  c.sigmoid = true;
  c.bias = {10.0, 0.0, 0.0, 0.0};
  c.top_k = 2;
  c.renormalize = true;
  c.scaling = 1.8;
  const auto r = reference::route(logits, 1, 4, c);
  EXPECT_EQ(r.ids, (std::vector<int>{0, 1}));
  const double s0 = 1 / (1 + std::exp(1.0)), s1 = 1 / (1 + std::exp(-3.0));
  EXPECT_NEAR(r.weights[0], 1.8 * s0 / (s0 + s1), 1e-12);
  EXPECT_NEAR(r.weights[1], 1.8 * s1 / (s0 + s1), 1e-12);
}

// A sigmoid router over 8 experts in 4 groups of 2.
RouterConfig four_groups_of_two(int topk_groups, int top_k) {
  RouterConfig c;
  c.sigmoid = true;
  c.groups = 4;
  c.topk_groups = topk_groups;
  c.top_k = top_k;
  return c;
}

TEST(MoeRouterReference, GroupedTopKKeepsTheGroupsOfTheBestPairs) {
  // Group scores (a bias: the sum of both): g0 0.2, g1 1.5, g2 1.4, g3 0.9. Top-2 groups: g1,
  // g2; the single best expert overall (6, in g3) is excluded.
  RouterConfig c = four_groups_of_two(2, 3);
  std::vector<double> scores{0.1, 0.1, 0.7, 0.8, 0.5, 0.9, 0.95, -0.05};
  // Scores enter through a bias on zero logits: sigmoid(0) = 0.5 for everyone.
  c.bias.resize(8);
  for (int e = 0; e < 8; ++e)
    c.bias[e] = scores[e] - 0.5;
  const auto r = reference::route(std::vector<double>(8, 0.0), 1, 8, c);
  EXPECT_EQ(r.ids, (std::vector<int>{5, 3, 2}));
  for (double w : r.weights) {
    EXPECT_DOUBLE_EQ(w, 0.5);  // the unbiased score of each chosen expert
  }
}

TEST(MoeRouterReference, GroupScoreIsTheBestWithoutABiasAndTheBestTwoWithOne) {
  // vLLM's grouped_topk. Scores g0 {0.953, 0.047} (best 0.953, sum 1.0), g1 {0.731, 0.731}
  // (best 0.731, sum 1.462), g2 and g3 lower; one group kept, top 1.
  RouterConfig c = four_groups_of_two(1, 1);
  const std::vector<double> logits{3, -3, 1, 1, -2, -2, -1, -1};
  EXPECT_EQ(reference::route(logits, 1, 8, c).ids, (std::vector<int>{0}));  // g0's best
  c.bias.assign(8, 0.0);  // a (zero) correction bias: the sums decide, g1
  EXPECT_EQ(reference::route(logits, 1, 8, c).ids, (std::vector<int>{2}));
}

TEST(MoeAlignReference, GroupsPairsByExpertPaddedToTheBlock) {
  // 3 tokens x top-2 over 4 experts: pairs 0..5 -> experts.
  const std::vector<int> ids{2, 0, 2, 1, 0, 2};
  const auto a = reference::align(ids, 3, 2, 4, 4);
  EXPECT_EQ(a.counts, (std::vector<int>{2, 1, 3, 0}));
  EXPECT_EQ(a.offsets, (std::vector<int>{0, 4, 8, 12, 12}));
  EXPECT_EQ(a.sorted, (std::vector<int>{1, 4, 6, 6, 3, 6, 6, 6, 0, 2, 5, 6}));
}

TEST(MoeBalanceReference, HandComputedStatisticsAndLosses) {
  // 4 tokens, top 1 of 2 experts; two sequences of 2 tokens; logits all 0 (lse = ln 2).
  const std::vector<int> ids{0, 0, 0, 1, 7};  // the 5th (token 4) is outside [0, E)
  const std::vector<double> probs{0.9, 0.1, 0.8, 0.2, 0.6, 0.4, 0.3, 0.7};
  const std::vector<double> logits(8, 0.0);
  const auto b = reference::balance({0, 0, 0, 1}, probs, logits, {0, 2, 4}, 4, 1, 2, 1.0, 1.0);
  EXPECT_EQ(b.counts, (std::vector<int>{3, 1}));
  EXPECT_DOUBLE_EQ(b.f[0], 0.75);
  EXPECT_DOUBLE_EQ(b.p[0], 0.65);
  EXPECT_NEAR(b.aux, 2 * (0.75 * 0.65 + 0.25 * 0.35), 1e-12);  // 1.15
  // Sequence 0: f {1, 0}, P {0.85, 0.15}: 2 x 0.85; sequence 1: f {0.5, 0.5}: 2 x 0.5.
  EXPECT_NEAR(b.seq_aux, (1.7 + 1.0) / 2, 1e-12);
  EXPECT_NEAR(b.z, std::log(2.0) * std::log(2.0), 1e-12);
  EXPECT_NEAR(b.max_vio, (3 - 2) / 2.0, 1e-12);
  // Out-of-range ids are not counted; no logits, no z-loss; an empty sequence is left out.
  const auto c = reference::balance(ids, {0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5}, {},
                                    {0, 0, 5}, 5, 1, 2, 2.0, 1.0);
  EXPECT_EQ(c.counts, (std::vector<int>{3, 1}));
  EXPECT_EQ(c.z, 0.0);
  EXPECT_NEAR(c.seq_aux, c.aux, 1e-12);  // one non-empty sequence: the batch itself
}

TEST(MoeFp4Reference, E2M1CodesEveryValueTiesToEvenAndSaturates) {
  const std::vector<double> grid{0, 0.5, 1, 1.5, 2, 3, 4, 6};
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(reference::e2m1_code(grid[i]), i);
    EXPECT_EQ(reference::e2m1_value(static_cast<std::uint8_t>(i)), grid[i]);
    if (i > 0) {
      EXPECT_EQ(reference::e2m1_code(-grid[i]), 8 | i);
    }
  }
  // Midpoints go to the even code.
  EXPECT_EQ(reference::e2m1_code(0.25), 0);
  EXPECT_EQ(reference::e2m1_code(0.75), 2);
  EXPECT_EQ(reference::e2m1_code(1.25), 2);
  EXPECT_EQ(reference::e2m1_code(1.75), 4);
  EXPECT_EQ(reference::e2m1_code(2.5), 4);
  EXPECT_EQ(reference::e2m1_code(3.5), 6);
  EXPECT_EQ(reference::e2m1_code(5.0), 6);
  EXPECT_EQ(reference::e2m1_code(100.0), 7);  // saturates at 6
  EXPECT_EQ(reference::e2m1_code(-100.0), 15);
}

TEST(MoeFp4Reference, E4M3CodesKnownValues) {
  EXPECT_EQ(reference::e4m3_code(1.0), 0x38);
  EXPECT_EQ(reference::e4m3_code(448.0), 0x7e);
  EXPECT_EQ(reference::e4m3_code(1000.0), 0x7e);  // saturates: no infinity in E4M3 (fn)
  EXPECT_EQ(reference::e4m3_code(std::ldexp(1.0, -9)), 0x01);  // the smallest subnormal
  EXPECT_EQ(reference::e4m3_code(-2.0), 0xc0);
  EXPECT_EQ(reference::e4m3_value(0x7e), 448.0);
  EXPECT_EQ(reference::e4m3_value(0x08), std::ldexp(1.0, -6));  // the smallest normal
  // 1 + 1/16 lies halfway between 1 (mantissa 0) and 1.125 (mantissa 1): to the even one.
  EXPECT_EQ(reference::e4m3_code(1.0625), 0x38);
  EXPECT_EQ(reference::e4m3_code(1.1875), 0x3a);  // halfway 1.125 / 1.25: to mantissa 2
}

TEST(MoeFp4Reference, NvFp4AndMxFp4RoundTripsStayWithinHalfAStep) {
  std::mt19937 rng(5);
  std::normal_distribution<double> normal(0.0, 0.02);
  const int rows = 8, cols = 128;
  std::vector<double> x(rows * cols);
  for (double& v : x)
    v = normal(rng);
  x[77] = 0.5;  // an outlier: its block's scale grows, the others' do not
  for (bool nvfp4 : {true, false}) {
    const int block = nvfp4 ? 16 : 32;
    const auto q =
        nvfp4 ? reference::quantize_nvfp4(x, rows, cols) : reference::quantize_mxfp4(x, rows, cols);
    ASSERT_EQ(q.codes.size(), x.size());
    ASSERT_EQ(q.scales.size(), x.size() / block);
    const auto y = reference::dequantize(q, rows, cols, nvfp4);
    for (std::size_t b = 0; b < x.size() / block; ++b) {
      double amax = 0;
      for (int i = 0; i < block; ++i)
        amax = std::max(amax, std::abs(x[b * block + i]));
      // E2M1's widest step is 2 (between 4 and 6) at a scale of amax / 6 (NVFP4; MXFP4's power of
      // two scale is at most amax / 4): half a step is amax / 6 (amax / 4), plus the scale's own
      // rounding.
      const double bound = (nvfp4 ? amax / 6 * 1.07 : amax / 4) + 1e-12;
      for (int i = 0; i < block; ++i) {
        EXPECT_LE(std::abs(y[b * block + i] - x[b * block + i]), bound)
            << (nvfp4 ? "nvfp4" : "mxfp4") << " block " << b << " element " << i;
      }
    }
  }
  // All zeros stay zeros.
  const std::vector<double> zeros(64, 0.0);
  for (double v : reference::dequantize(reference::quantize_nvfp4(zeros, 1, 64), 1, 64, true)) {
    EXPECT_EQ(v, 0.0);
  }
  for (double v : reference::dequantize(reference::quantize_mxfp4(zeros, 1, 64), 1, 64, false)) {
    EXPECT_EQ(v, 0.0);
  }
}

}  // namespace
}  // namespace kjit::test

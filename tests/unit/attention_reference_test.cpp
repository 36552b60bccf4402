// The CPU attention reference on hand-computed cases: uniform scores, causal bottom-right
// alignment when Sq != Sk, fully masked rows; the backward reference against central finite
// differences of the forward one.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "tests/reference/attention_reference.hpp"

namespace kjit::test {
namespace {

TEST(AttentionReference, EqualScoresAverageTheValues) {
  // Two keys with equal scores: out = mean of the values, lse = log 2 + score.
  const auto r = reference::attention({1, 0}, {1, 0, 1, 0}, {2, 4, 6, 8}, 1, 2, 2, 0.5, false);
  EXPECT_DOUBLE_EQ(r.out[0], 4.0);
  EXPECT_DOUBLE_EQ(r.out[1], 6.0);
  EXPECT_NEAR(r.lse[0], 0.5 + std::log(2.0), 1e-15);
}

TEST(AttentionReference, CausalIsBottomRightAligned) {
  // Sq = 2, Sk = 3: query 0 sees keys 0..1, query 1 sees keys 0..2.
  const std::vector<double> q = {0, 0};  // D = 1, zero scores: uniform over the visible keys
  const std::vector<double> k = {0, 0, 0};
  const std::vector<double> v = {3, 6, 9};
  const auto r = reference::attention(q, k, v, 2, 3, 1, 1.0, true);
  EXPECT_DOUBLE_EQ(r.out[0], 4.5);
  EXPECT_DOUBLE_EQ(r.out[1], 6.0);
  EXPECT_NEAR(r.lse[0], std::log(2.0), 1e-15);
  EXPECT_NEAR(r.lse[1], std::log(3.0), 1e-15);
}

TEST(AttentionReference, QueriesThatSeeNoKeyGiveZeroAndMinusInfinity) {
  // Sq = 3, Sk = 1, causal: query i sees keys j <= i - 2, so only query 2 sees key 0.
  const auto r = reference::attention({1, 1, 1}, {1}, {5}, 3, 1, 1, 1.0, true);
  EXPECT_EQ(r.out[0], 0.0);
  EXPECT_EQ(r.out[1], 0.0);
  EXPECT_TRUE(std::isinf(r.lse[0]) && r.lse[0] < 0);
  EXPECT_DOUBLE_EQ(r.out[2], 5.0);
  EXPECT_DOUBLE_EQ(r.lse[2], 1.0);
}

TEST(AttentionReference, RoundingPChangesTheResultSlightly) {
  const auto exact = reference::attention({1}, {0.3, 0.1, -0.2}, {1, 2, 3}, 1, 3, 1, 1.0, false);
  const auto rounded = reference::attention({1}, {0.3, 0.1, -0.2}, {1, 2, 3}, 1, 3, 1, 1.0, false,
                                            [](double p) { return std::round(p * 256) / 256; });
  EXPECT_NE(exact.out[0], rounded.out[0]);
  EXPECT_NEAR(exact.out[0], rounded.out[0], 3 * 6.0 / 256);
}

// d/dx sum(dout * out) by central differences equals the backward's gradient, for q, k and v,
// causal with Sq != Sk (one query row sees no key).
TEST(AttentionReference, BackwardMatchesFiniteDifferences) {
  const int sq = 4, sk = 3, dim = 5;
  const double scale = 0.7;
  std::mt19937 rng(3);
  std::normal_distribution<double> normal;
  auto random = [&](int n) {
    std::vector<double> x(n);
    for (double& e : x)
      e = normal(rng);
    return x;
  };
  std::vector<double> q = random(sq * dim), k = random(sk * dim), v = random(sk * dim),
                      dout = random(sq * dim);
  const auto g = reference::attention_backward(q, k, v, dout, sq, sk, dim, scale, true);
  auto loss = [&] {
    const auto r = reference::attention(q, k, v, sq, sk, dim, scale, true);
    double l = 0;
    for (std::size_t i = 0; i < r.out.size(); ++i)
      l += dout[i] * r.out[i];
    return l;
  };
  const double h = 1e-6;
  for (auto [x, grad] : {std::pair{&q, &g.dq}, {&k, &g.dk}, {&v, &g.dv}}) {
    for (std::size_t i = 0; i < x->size(); ++i) {
      const double keep = (*x)[i];
      (*x)[i] = keep + h;
      const double up = loss();
      (*x)[i] = keep - h;
      const double down = loss();
      (*x)[i] = keep;
      EXPECT_NEAR((*grad)[i], (up - down) / (2 * h), 1e-7) << "element " << i;
    }
  }
  for (int d = 0; d < dim; ++d)
    EXPECT_EQ(g.dq[d], 0.0);  // row 0 sees no key (Sq - Sk = 1)
}

}  // namespace
}  // namespace kjit::test

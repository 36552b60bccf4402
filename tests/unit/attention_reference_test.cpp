// The CPU attention reference on hand-computed cases: uniform scores, causal bottom-right
// alignment when Sq != Sk, fully masked rows.
#include <gtest/gtest.h>

#include <cmath>

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

}  // namespace
}  // namespace kjit::test

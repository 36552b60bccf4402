// CPU tests of MLA's helix layout rules (heads per rank, block ownership, local lengths), the
// rotary helper the cache generators use, and the fp64 MLA decode reference itself.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kjit/error.hpp"
#include "kjit/mla.hpp"
#include "tests/reference/mla_reference.hpp"
#include "tests/support/rope.hpp"

namespace kjit::test {
namespace {

TEST(MlaHelixHeads, CoverEveryHeadOnceWhenRanksDoNotDivideThem) {
  for (int heads : {16, 20, 64, 128}) {
    for (int world : {1, 2, 3, 4, 5, 8, 16}) {
      if (world > heads) continue;
      int next = 0;
      for (int r = 0; r < world; ++r) {
        const mla::HeadRange h = mla::helix_heads(heads, world, r);
        EXPECT_EQ(h.begin, next) << heads << " heads, W " << world << ", rank " << r;
        EXPECT_GE(h.size(), heads / world);
        EXPECT_LE(h.size(), heads / world + 1);
        next = h.end;
      }
      EXPECT_EQ(next, heads) << heads << " heads, W " << world;
    }
  }
  // GLM-4.7-Flash's 20 heads over 8 ranks: 2 or 3 each.
  EXPECT_EQ(mla::helix_heads(20, 8, 0).size(), 2);
  EXPECT_EQ(mla::helix_heads(20, 8, 1).size(), 3);
}

TEST(MlaHelixHeads, RefusesBadWorlds) {
  EXPECT_THROW(mla::helix_heads(20, 0, 0), InvalidArgument);
  EXPECT_THROW(mla::helix_heads(20, 4, 4), InvalidArgument);
  EXPECT_THROW(mla::helix_heads(20, 4, -1), InvalidArgument);
  try {
    mla::helix_heads(4, 8, 0);
    FAIL() << "W > H was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("W > H"), std::string::npos) << e.what();
  }
}

TEST(MlaHelixOwnership, LocalLengthsAreTheOwnedTokensAndSumToTheSequence) {
  for (int tokens_per_block : {32, 64}) {
    for (int world : {1, 2, 4, 8}) {
      for (std::int64_t length = 0; length <= 1200; length += 7) {
        std::int64_t sum = 0;
        for (int r = 0; r < world; ++r) {
          std::int64_t owned = 0;  // token by token: token t is in block t / tokens_per_block
          for (std::int64_t t = 0; t < length; ++t)
            owned += mla::helix_block_owner(t / tokens_per_block, world) == r;
          const std::int64_t local = mla::helix_local_length(length, tokens_per_block, world, r);
          EXPECT_EQ(local, owned) << "L " << length << " tpb " << tokens_per_block << " W " << world
                                  << " rank " << r;
          sum += local;
        }
        EXPECT_EQ(sum, length);
      }
    }
  }
  // A rank past the last block of a short sequence owns nothing of it (the empty-shard case).
  EXPECT_EQ(mla::helix_local_length(64, 64, 4, 3), 0);
  EXPECT_THROW(mla::helix_local_length(10, 0, 2, 0), InvalidArgument);
  EXPECT_THROW(mla::helix_local_length(-1, 64, 2, 0), InvalidArgument);
  EXPECT_THROW(mla::helix_block_owner(-1, 2), InvalidArgument);
}

TEST(MlaRope, InverseUndoesAndScoresDependOnTheDistanceOnly) {
  std::mt19937 rng(7);
  std::normal_distribution<double> normal;
  std::vector<double> q(mla::kRopeDim), k(mla::kRopeDim);
  for (auto* v : {&q, &k}) {
    for (double& x : *v)
      x = normal(rng);
  }
  std::vector<double> x = q;
  rope(x.data(), mla::kRopeDim, 12345);
  rope(x.data(), mla::kRopeDim, 12345, true);
  for (int i = 0; i < mla::kRopeDim; ++i)
    EXPECT_NEAR(x[i], q[i], 1e-12);
  x = q;
  rope(x.data(), mla::kRopeDim, 0);
  for (int i = 0; i < mla::kRopeDim; ++i)
    EXPECT_EQ(x[i], q[i]);
  // <rope(q, m), rope(k, n)> is a function of m - n.
  auto score = [&](long long m, long long n) {
    std::vector<double> a = q, b = k;
    rope(a.data(), mla::kRopeDim, m);
    rope(b.data(), mla::kRopeDim, n);
    double s = 0;
    for (int i = 0; i < mla::kRopeDim; ++i)
      s += a[i] * b[i];
    return s;
  };
  EXPECT_NEAR(score(100, 40), score(1060, 1000), 1e-9);
  EXPECT_GT(std::abs(score(100, 40) - score(100, 41)), 1e-6);
}

TEST(MlaReference, MatchesADirectSoftmaxAndTheEmptyCacheRule) {
  constexpr int kD = mla::kHeadDim, kV = mla::kLatentDim;
  const int s_q = 2, heads = 3, length = 5;
  const double scale = 0.0625;
  std::mt19937 rng(3);
  std::normal_distribution<double> normal;
  std::vector<double> q(static_cast<std::size_t>(s_q) * heads * kD), cache(length * kD);
  for (auto* v : {&q, &cache}) {
    for (double& x : *v)
      x = normal(rng);
  }
  const reference::MlaDecodeRows rows = reference::mla_decode(q, cache, s_q, heads, length, scale);
  for (int i = 0; i < s_q; ++i) {
    const int visible = length - s_q + i + 1;  // causal among the new tokens
    for (int h = 0; h < heads; ++h) {
      std::vector<double> s(visible);
      double max = -std::numeric_limits<double>::infinity(), sum = 0;
      for (int j = 0; j < visible; ++j) {
        for (int x = 0; x < kD; ++x)
          s[j] += q[(static_cast<std::size_t>(i) * heads + h) * kD + x] * cache[j * kD + x];
        s[j] *= scale;
        max = std::max(max, s[j]);
      }
      for (int j = 0; j < visible; ++j)
        sum += std::exp(s[j] - max);
      EXPECT_NEAR(rows.lse[i * heads + h], max + std::log(sum), 1e-12);
      for (int x = 0; x < kV; x += 37) {
        double o = 0;
        for (int j = 0; j < visible; ++j)
          o += std::exp(s[j] - max) / sum * cache[j * kD + x];
        EXPECT_NEAR(rows.out[(static_cast<std::size_t>(i) * heads + h) * kV + x], o, 1e-12);
      }
    }
  }
  const reference::MlaDecodeRows empty = reference::mla_decode(q, {}, s_q, heads, 0, scale);
  for (double l : empty.lse)
    EXPECT_TRUE(std::isinf(l) && l < 0);
  for (double o : empty.out)
    EXPECT_EQ(o, 0.0);
}

}  // namespace
}  // namespace kjit::test

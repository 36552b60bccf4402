// MLA decode's default split counts on the host: a request's keys are split only while the
// blocks leave most SMs idle, never below two key tiles a split (one for a single block of at
// most 1k keys), never into more partial bytes than key bytes once the blocks fill the card, and
// mma.sync's loop keeps its 512-key minimum.
#include <gtest/gtest.h>

#include <cstdint>

#include "ops/mla/mla_decode.hpp"

namespace kjit::test {
namespace {

using ops::MlaDecode;

std::int64_t splits(std::int64_t batch, std::int64_t heads, std::int64_t length,
                    const char* arch = "sm_90a") {
  const MlaDecode::Problem p{DType::BFloat16, batch, 1, heads, 64, length};
  const MlaDecode::Config c = MlaDecode::default_config(p, arch);
  EXPECT_TRUE(MlaDecode::valid(c, p, arch)) << batch << " " << heads << " " << length;
  return c.splits;
}

TEST(MlaDecodeConfig, SplitsFillTheSmsDownToAMinimumSplit) {
  EXPECT_EQ(splits(1, 20, 1024), 16);  // one block, 1k keys: a tile a split
  EXPECT_EQ(splits(1, 64, 512), 8);
  EXPECT_EQ(splits(1, 20, 4096), 32);  // two tiles a split
  EXPECT_EQ(splits(1, 128, 1024), 8);  // two row tiles: two blocks a split
  EXPECT_EQ(splits(8, 20, 1024), 8);
  EXPECT_EQ(splits(8, 20, 4096), 12);  // one row tile: three quarters of the SMs, any count
  EXPECT_EQ(splits(32, 64, 1024), 3);
  EXPECT_EQ(splits(1, 20, 65536), 99);
  EXPECT_EQ(splits(64, 20, 1024), 2);
  EXPECT_EQ(splits(128, 128, 4096), 1);
  EXPECT_EQ(splits(8, 128, 1024), 4);  // 8 would write more partial bytes than it reads keys
  EXPECT_EQ(splits(8, 128, 4096), 8);
  EXPECT_EQ(splits(8, 64, 1024), 8);
  EXPECT_EQ(splits(1, 20, 1024, "sm_80"), 2);  // mma.sync: 512 keys a split at least
}

// The balanced plan takes a batch whose keys are under four fifths of B x the longest; the even
// plan one request, near-even lengths, and the tuner's problems (keys unknown).
TEST(MlaDecodeConfig, UnevenBatchesTakeTheBalancedPlan) {
  const auto balanced = [](std::int64_t batch, std::int64_t longest, std::int64_t keys) {
    return MlaDecode::balanced({DType::BFloat16, batch, 1, 128, 64, longest, keys});
  };
  EXPECT_TRUE(balanced(8, 65536, 65536 + 7 * 1024));     // one 64k among seven 1k
  EXPECT_TRUE(balanced(64, 16384, 32 * (16384 + 256)));  // 16k and 256 alternating
  EXPECT_TRUE(balanced(2, 100, 101));
  EXPECT_FALSE(balanced(8, 4096, 8 * 4096));  // even
  EXPECT_FALSE(balanced(8, 4096, 8 * 4000));  // near-even
  EXPECT_FALSE(balanced(1, 65536, 65536));
  EXPECT_FALSE(balanced(8, 4096, 0));  // unknown
  EXPECT_FALSE(balanced(8, 0, 0));     // every request empty
  // Row tiles whose balanced grid would pass a launch's 2^31 - 1 blocks keep the even plan.
  EXPECT_FALSE(MlaDecode::balanced({DType::BFloat16, 60000, 4, 1000000, 64, 100, 60000}));
  EXPECT_TRUE(balanced(60000, 100, 60000));
}

}  // namespace
}  // namespace kjit::test

// Attention tile configs on the host: the default is valid for every head dim of each arch, the
// rules keep wgmma tiles to sm_90a and shared memory within the arch's limit, and every valid
// wgmma config the tuner may try compiles for sm_90a.
#include <gtest/gtest.h>

#include "kjit/jit.hpp"
#include "ops/attention/flash_forward.hpp"
#include "tests/support/isolated_cache.hpp"

namespace kjit::test {
namespace {

using ops::FlashForward;
using Config = FlashForward::Config;

Config wgmma(std::int64_t m, std::int64_t n) {
  return {FlashForward::kMainloopWgmma, m, n, 1};
}

FlashForward::Problem problem(DType dtype, std::int64_t head_dim, bool causal = true) {
  return {dtype, 1, 1, 1, head_dim, 128, 128, causal};
}

bool valid(const Config& c, DType dtype, std::int64_t head_dim, const char* arch) {
  return FlashForward::valid(c, problem(dtype, head_dim), arch);
}

TEST(AttentionConfig, DefaultIsValidForEveryHeadDimAndArch) {
  for (const char* arch : {"sm_80", "sm_86", "sm_90a"}) {
    for (std::int64_t d : FlashForward::kHeadDims) {
      for (bool causal : {false, true}) {
        for (DType dtype : {DType::Float16, DType::BFloat16}) {
          const Config c = FlashForward::default_config(problem(dtype, d, causal), arch);
          EXPECT_TRUE(valid(c, dtype, d, arch)) << arch << " d=" << d;
          EXPECT_EQ(c.wgmma(), std::string(arch) == "sm_90a" && d % 64 == 0) << arch << " d=" << d;
        }
      }
    }
  }
}

TEST(AttentionConfig, RulesFollowTheArch) {
  EXPECT_TRUE(valid(wgmma(128, 128), DType::BFloat16, 128, "sm_90a"));
  EXPECT_FALSE(valid(wgmma(128, 128), DType::BFloat16, 128, "sm_90"));  // no wgmma
  EXPECT_FALSE(valid(wgmma(128, 128), DType::BFloat16, 128, "sm_80"));
  EXPECT_FALSE(valid(wgmma(128, 128), DType::BFloat16, 96, "sm_90a"));   // not 64k
  EXPECT_FALSE(valid(wgmma(128, 32), DType::BFloat16, 128, "sm_90a"));   // S is n64/n128
  EXPECT_FALSE(valid(wgmma(256, 64), DType::BFloat16, 128, "sm_90a"));   // 4 warpgroups
  EXPECT_FALSE(valid(wgmma(128, 128), DType::BFloat16, 256, "sm_90a"));  // 321 KiB
  Config bad = wgmma(128, 128);
  bad.m_tiles = 2;
  EXPECT_FALSE(valid(bad, DType::BFloat16, 128, "sm_90a"));
  bad = wgmma(128, 128);
  bad.mainloop = 70;
  EXPECT_FALSE(valid(bad, DType::BFloat16, 128, "sm_90a"));
  // A stored config without the mainloop key is not a config of the family.
  tuning::Config stored = ops::config_map<FlashForward>(wgmma(128, 128));
  stored.erase("mainloop");
  EXPECT_FALSE(ops::config_of<FlashForward>(stored));
  // mma.sync, 128 x 128 tiles at hd 128: 174 KiB fits sm_90 (227) but not sm_80 (163).
  const Config mma{FlashForward::kMainloopMma, 128, 128, 1};
  EXPECT_TRUE(valid(mma, DType::BFloat16, 128, "sm_90a"));
  EXPECT_FALSE(valid(mma, DType::BFloat16, 128, "sm_80"));
}

class AttentionWgmmaConfigs : public IsolatedCache {};

TEST_F(AttentionWgmmaConfigs, EveryValidOneCompilesForSm90a) {
  int compiled = 0;
  for (std::int64_t d : {64, 128, 256}) {
    for (std::int64_t m : {64, 128, 192}) {
      for (std::int64_t n : {64, 128}) {
        const Config c = wgmma(m, n);
        if (!valid(c, DType::BFloat16, d, "sm_90a")) continue;
        Origin origin{};
        EXPECT_NO_THROW(
            compile(FlashForward::spec(c, problem(DType::BFloat16, d), "sm_90a"), &origin))
            << "d=" << d << " block " << m << "x" << n;
        ++compiled;
      }
    }
  }
  EXPECT_EQ(compiled, 15);  // hd 64 and 128: all six tiles; hd 256: block_n 64
}

}  // namespace
}  // namespace kjit::test

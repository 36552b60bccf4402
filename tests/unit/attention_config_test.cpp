// Attention tile configs on the host: the default is valid for every head dim of each arch, the
// rules keep wgmma tiles to sm_90a and shared memory within the arch's limit, the
// warp-specialised loops take their tiles where they fit, and every valid wgmma config the tuner
// may try compiles for sm_90a.
#include <gtest/gtest.h>

#include "kjit/jit.hpp"
#include "ops/attention/flash_forward.hpp"
#include "ops/attention/flash_grouped_forward.hpp"
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

// The grouped kernel has no persistent blocks and no warp-specialised loop past hd 192: its
// default takes the plain call's loop without them.
TEST(AttentionConfig, GroupedDefaultIsValidForEveryHeadDimAndArch) {
  for (const char* arch : {"sm_80", "sm_90a"}) {
    for (std::int64_t d : FlashForward::kHeadDims) {
      for (bool causal : {false, true}) {
        const ops::GroupedForward::Problem p{DType::BFloat16, 2, 1, 4, 2, d, 300, 300, causal};
        const Config c = ops::GroupedForward::default_config(p, arch);
        EXPECT_TRUE(ops::GroupedForward::valid(c, p, arch)) << arch << " d=" << d;
        EXPECT_EQ(c.warp_specialized(), std::string(arch) == "sm_90a" && d % 64 == 0 && d <= 192)
            << arch << " d=" << d;
      }
    }
  }
}

// Sections of the grouped grid: key/value heads whose K/V windows fit a quarter of the L2 (12 MB),
// a divisor of the heads, grown until the section fills the 132 SMs of an H100 with blocks.
TEST(AttentionGroupedSections, QuarterOfTheL2AndAtLeastAWave) {
  const auto heads = [](std::int64_t heads_k, std::int64_t keys, std::int64_t blocks_per_head) {
    return ops::GroupedForward::section_kv_heads(heads_k, keys * 128 * 2 * 2, blocks_per_head, 132);
  };
  // Llama 3 8B (8 key/value heads, 4 queries each), zigzag rank 0, two groups of S / 2W queries
  // in tiles of 128: W 2 at S 8k (4 MB a head, 32 tiles), at 16k (8 MB, 64 tiles).
  EXPECT_EQ(heads(8, 8192, 32 * 4), 2);
  EXPECT_EQ(heads(8, 16384, 64 * 4), 1);
  EXPECT_EQ(heads(8, 32768, 128 * 4), 1);
  // W 4 at S 8k: 2 heads fit, 64 blocks a head; 4 fill the SMs.
  EXPECT_EQ(heads(8, 8192, 16 * 4), 4);
  // W 8 at S 8k: 32 blocks a head take 5 heads to fill the SMs; the first divisor of 8 from 5 is 8.
  EXPECT_EQ(heads(8, 8192, 8 * 4), 8);
  // One head over the budget still makes a section; every head fits when the windows are short.
  EXPECT_EQ(heads(8, 1 << 20, 1024), 1);
  EXPECT_EQ(heads(8, 512, 4), 8);
  // 6 heads over the budget at 48 blocks a head: 1 -> 2 (96 blocks) -> 3 (144, a wave).
  EXPECT_EQ(heads(6, 16384, 48), 3);
  // At 16 blocks a head 1 -> 2 -> 3 -> 6: every head, still under a wave (96 blocks).
  EXPECT_EQ(heads(6, 16384, 16), 6);
  // No multiprocessor count: the budget's choice alone.
  EXPECT_EQ(ops::GroupedForward::section_kv_heads(8, 4 << 20, 1, 0), 2);
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

// The warp-specialised loops (91; 92 with the overlap; 93 persistent): FA3's key tiles where
// their registers fit (176 keys only with the overlap), three K/V stages where they fit 227 KiB,
// the persistent loop for plain calls causal or not (the grouped kernel refuses it), all of them
// in the tuner's space.
TEST(AttentionConfig, WarpSpecialisedLoopsAndTiles) {
  const auto ws = FlashForward::kMainloopWgmmaWs, overlap = FlashForward::kMainloopWgmmaWsOverlap,
             persistent = FlashForward::kMainloopWgmmaWsPersistent;
  auto tile = [](std::int64_t loop, std::int64_t m, std::int64_t n) {
    return Config{loop, m, n, 1};
  };
  for (bool causal : {false, true}) {
    const auto hd = [&](std::int64_t d) { return problem(DType::BFloat16, d, causal); };
    EXPECT_FALSE(FlashForward::valid(tile(ws, 128, 176), hd(128), "sm_90a"));  // spills
    EXPECT_TRUE(FlashForward::valid(tile(overlap, 128, 176), hd(128), "sm_90a"));
    EXPECT_TRUE(FlashForward::valid(tile(persistent, 128, 176), hd(128), "sm_90a"));
    EXPECT_FALSE(FlashForward::valid(tile(overlap, 128, 176), hd(192), "sm_90a"));  // registers
    EXPECT_FALSE(FlashForward::valid(tile(overlap, 128, 96), hd(128), "sm_90a"));   // no n96
    for (auto loop : {ws, overlap, persistent}) {
      EXPECT_TRUE(FlashForward::valid(tile(loop, 128, 80), hd(256), "sm_90a")) << loop;
      EXPECT_TRUE(FlashForward::valid(tile(loop, 128, 112), hd(192), "sm_90a")) << loop;
      EXPECT_TRUE(FlashForward::valid(tile(loop, 192, 112), hd(64), "sm_90a")) << loop;
      EXPECT_FALSE(FlashForward::valid(tile(loop, 192, 176), hd(64), "sm_90a")) << loop;
      EXPECT_FALSE(FlashForward::valid(tile(loop, 128, 128), hd(128), "sm_80")) << loop;
    }
    EXPECT_EQ(FlashForward::ws_stages(tile(ws, 128, 128), hd(128)), 3);
    EXPECT_EQ(FlashForward::ws_stages(tile(persistent, 128, 128), hd(128)), 3);
    EXPECT_EQ(FlashForward::ws_stages(tile(ws, 192, 128), hd(64)), 3);
    EXPECT_EQ(FlashForward::ws_stages(tile(ws, 128, 64), hd(192)), 3);
    EXPECT_EQ(FlashForward::ws_stages(tile(ws, 128, 64), hd(256)), 2);
    EXPECT_EQ(FlashForward::ws_stages(tile(overlap, 128, 176), hd(128)), 2);
    const ops::GroupedForward::Problem grouped{DType::BFloat16, 2, 1, 1, 1, 128, 128, 128, causal};
    EXPECT_TRUE(ops::GroupedForward::valid(tile(overlap, 128, 128), grouped, "sm_90a"));
    EXPECT_FALSE(ops::GroupedForward::valid(tile(persistent, 128, 128), grouped, "sm_90a"));
  }
  // The tuner's space holds every loop and key tile valid() takes.
  for (std::int64_t d : {64, 128, 192, 256}) {
    const FlashForward::Problem p = problem(DType::BFloat16, d, true);
    int warp_specialized = 0, tiles = 0;
    for (const Config& c : FlashForward::space(p, "sm_90a")) {
      if (!FlashForward::valid(c, p, "sm_90a") || !c.warp_specialized()) continue;
      ++warp_specialized;
      tiles += c.block_n != 64 && c.block_n != 128;
    }
    EXPECT_GE(warp_specialized, 3 * 2) << d;  // loops 91, 92 and 93, two tiles at least
    EXPECT_GE(tiles, 2) << d;
  }
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

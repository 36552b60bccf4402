// Kernel families on the CPU: the registry lists every family with a stable template hash; a
// family written in the test (tests/support/toy_family.hpp) gets the registry view, the tuner's
// space and the op path's choice (memo, tuned table, default, misses) from its one struct; the
// database boundary refuses shapes and configs the family does not know; the memo is bounded.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "autotune/tuner.hpp"
#include "cache/tuning/miss_log.hpp"
#include "cache/tuning/sqlite.hpp"
#include "cache/tuning/tuning_db.hpp"
#include "jit/template_tree.hpp"
#include "nvrtc/compiler.hpp"
#include "ops/dispatch.hpp"
#include "ops/family_model.hpp"
#include "ops/lru_memo.hpp"
#include "ops/registry.hpp"
#include "tests/support/isolated_cache.hpp"
#include "tests/support/toy_family.hpp"

namespace kjit::test {
namespace {

using ops::family_of;

std::string closure(const char* embedded) {
  return detail::source_closure(Source::embedded(embedded)).hex();
}

TEST(Registry, ListsEveryFamilyWithItsTemplateHash) {
  std::vector<std::string> names;
  for (const ops::KernelFamily* f : ops::families())
    names.push_back(f->name());
  EXPECT_EQ(names, (std::vector<std::string>{
                       "merge_states", "attention", "attention_backward", "attention_grouped",
                       "attention_grouped_backward", "mla_decode", "moe_router", "moe_align",
                       "moe_permute", "moe_unpermute", "moe_grouped_gemm", "moe_balance",
                       "moe_quantize_fp4", "moe_block_slots", "zigzag_copy"}));
  // The hashes of the templates' include closures, as tuning results were keyed before the
  // families existed: existing databases keep their results.
  EXPECT_EQ(ops::find_family("merge_states")->template_hash(),
            closure("attention/merge_states.cuh"));
  EXPECT_EQ(ops::find_family("attention")->template_hash(),
            closure("attention/flash_forward.cuh") + "+" +
                closure("attention/flash_forward_sm90.cuh") + "+" +
                closure("attention/flash_forward_sm90_ws.cuh"));
  // The grouped families run the same templates: their hashes move with them.
  EXPECT_EQ(ops::find_family("attention_grouped")->template_hash(),
            ops::find_family("attention")->template_hash());
  EXPECT_EQ(ops::find_family("nope"), nullptr);
  std::vector<std::string> shipped;
  for (const ops::ShippedSpecs& s : ops::shipped("sm_90a"))
    shipped.push_back(s.family);
  EXPECT_EQ(shipped,
            (std::vector<std::string>{"samples", "merge_states", "attention", "attention_backward",
                                      "attention_grouped", "attention_grouped_backward",
                                      "mla_decode", "moe_router", "moe_align", "moe_permute",
                                      "moe_unpermute", "moe_grouped_gemm", "moe_balance",
                                      "moe_quantize_fp4", "moe_block_slots", "zigzag_copy"}));
}

TEST(Registry, PresetsNameRealProblems) {
  for (const ops::KernelFamily* f : ops::families()) {
    for (const ops::NamedCases& preset : f->presets()) {
      EXPECT_FALSE(preset.cases.empty()) << preset.name;
      for (const ops::TuneCase& c : preset.cases)
        EXPECT_NO_THROW(f->check(c)) << preset.name << " " << tuning::problem_key(c.shape);
    }
  }
}

TEST(FamilyBoundary, ShapesAndConfigsFollowTheFamily) {
  const ops::KernelFamily& toy = family_of<ToyScale>();
  EXPECT_EQ(toy.name(), "toy_scale");
  EXPECT_EQ(toy.template_hash(), toy.template_hash());
  EXPECT_EQ(toy.template_hash(),
            detail::source_closure(Source::string("toy/scale.cuh", kToyTemplate)).hex());
  ASSERT_EQ(toy.dimensions().size(), 1u);
  EXPECT_EQ(toy.dimensions()[0].bucket, tuning::Bucket::Pow2);
  EXPECT_NO_THROW(toy.check({{{"n", 5}}, DType::Float32}));
  auto error = [&](const ops::TuneCase& c) {
    try {
      toy.check(c);
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error({{{"n", 5}, {"m", 1}}, DType::Float32}).find("shape must be exactly n"),
            std::string::npos);
  EXPECT_NE(error({{}, DType::Float32}).find("shape must be exactly n"), std::string::npos);
  EXPECT_NE(error({{{"n", -1}}, DType::Float32}).find("n must not be negative"), std::string::npos);
  EXPECT_NE(error({{{"n", 5}}, DType::BFloat16}).find("dtype must be one of fp32"),
            std::string::npos);
  // Attention's rules reach the boundary too: a bool field takes 0 or 1 only.
  const ops::KernelFamily& attention = *ops::find_family("attention");
  tuning::Shape shape{{"B", 1},   {"Hq", 8},  {"Hk", 8},    {"D", 128},
                      {"Sq", 64}, {"Sk", 64}, {"causal", 1}};
  EXPECT_NO_THROW(attention.check({shape, DType::BFloat16}));
  shape["causal"] = 7;
  EXPECT_THROW(attention.check({shape, DType::BFloat16}), InvalidArgument);
  shape["causal"] = 0;
  shape["D"] = 80;
  EXPECT_THROW(attention.check({shape, DType::BFloat16}), InvalidArgument);

  EXPECT_TRUE(toy.well_formed({{"threads", 128}}));
  EXPECT_FALSE(toy.well_formed({{"foo", 1}}));
  EXPECT_FALSE(toy.well_formed({{"threads", 128}, {"extra", 1}}));
  EXPECT_FALSE(toy.valid({{"foo", 1}}, {{{"n", 5}}, DType::Float32}, "sm_90a"));
  EXPECT_THROW(toy.spec({{"foo", 1}}, {{{"n", 5}}, DType::Float32}, "sm_90a"), InvalidArgument);
}

TEST(FamilyBoundary, TheTunerSeesTheFamilysSpace) {
  const autotune::Candidates c =
      autotune::enumerate(family_of<ToyScale>(), {{{"n", 1 << 20}}, DType::Float32}, "sm_90a");
  EXPECT_EQ(c.space, 4);
  EXPECT_EQ(c.valid, 3);  // 2048 threads is not a block
  ASSERT_FALSE(c.configs.empty());
  EXPECT_EQ(c.configs.front(), (tuning::Config{{"threads", 128}}));  // the default first
  ASSERT_EQ(family_of<ToyScale>().presets().size(), 1u);
  EXPECT_EQ(family_of<ToyScale>().presets()[0].cases[0].shape, (tuning::Shape{{"n", 1 << 20}}));
}

class ToyFamilyPrecompile : public IsolatedCache {};

TEST_F(ToyFamilyPrecompile, ShippedSpecsCompileForEveryArch) {
  for (const char* arch : {"sm_80", "sm_90a"}) {
    const std::vector<KernelSpec> specs = family_of<ToyScale>().shipped(arch);
    ASSERT_EQ(specs.size(), 1u);
    const std::vector<PrecompileResult> r = precompile(specs, 1);
    ASSERT_TRUE(r[0].ok) << r[0].error;
    EXPECT_EQ(r[0].program.kernels[0].name_expression, "toy::scale<128>");
  }
}

// The op path's choice, without a GPU: KJIT_TUNING_DB points at a fresh database per test.
class ToyDispatch : public ::testing::Test {
 protected:
  void SetUp() override { reload_tuning(); }
  void TearDown() override { reload_tuning(); }
  std::string path() const { return (dir_.path() / "tuning.sqlite").string(); }
  ToyScale::Config choose(std::int64_t n) {
    return ops::Dispatcher<ToyScale>::instance().choose({DType::Float32, n}, "sm_90a");
  }
  void store(std::int64_t n, std::int64_t threads, double median_us = 1) {
    store_config(n, {{"threads", threads}}, median_us);
  }
  void store_config(std::int64_t n, const tuning::Config& config, double median_us = 1) {
    tuning::Best b;
    b.key = {"toy_scale",
             family_of<ToyScale>().template_hash(),
             "n=" + std::to_string(n),
             "fp32",
             "sm_90a",
             nvrtc::version_text()};
    b.config = tuning::config_json(config);
    b.median_us = median_us;
    b.provenance.origin = "tune";
    tuning::TuningDb(path(), tuning::TuningDb::Mode::ReadWrite).upsert_best(b, 0.03);
  }
  TempDir dir_;
  ScopedEnv env_{"KJIT_TUNING_DB", path()};
};

TEST_F(ToyDispatch, DefaultWithoutADatabaseAndNoDatabaseCreated) {
  EXPECT_EQ(choose(1000).threads, 128);
  tuning::flush_misses();
  EXPECT_FALSE(std::filesystem::exists(path())) << "recording a miss must not create a database";
}

TEST_F(ToyDispatch, TunedBucketThenNearestThenDefaultAndOneRead) {
  store(1024, 256);
  store(1 << 20, 64);
  store(4096, 2048);  // not a block: never chosen
  const std::uint64_t opens = sql::Database::opens();
  EXPECT_EQ(choose(1024).threads, 256);    // exact
  EXPECT_EQ(choose(1000).threads, 256);    // bucket 1024
  EXPECT_EQ(choose(3000).threads, 256);    // bucket 4096 holds an invalid config: nearest 1024
  EXPECT_EQ(choose(1 << 19).threads, 64);  // nearest 2^20
  for (std::int64_t n = 1; n < 100000; n += 7)
    choose(n);
  EXPECT_EQ(sql::Database::opens() - opens, 1u) << "the table is read once; the rest is memory";
  EXPECT_LE(ops::Dispatcher<ToyScale>::instance().memo_size(), 20u) << "one entry per bucket";
  // Misses are the buckets served without an exact result, written at flush.
  tuning::flush_misses();
  std::vector<std::string> keys;
  for (const tuning::Miss& m : tuning::TuningDb(path(), tuning::TuningDb::Mode::ReadOnly).misses())
    keys.push_back(m.key.problem_key);
  EXPECT_NE(std::find(keys.begin(), keys.end(), "n=4096"), keys.end());
  EXPECT_EQ(std::find(keys.begin(), keys.end(), "n=1024"), keys.end()) << "1024 was exact";
}

TEST_F(ToyDispatch, WritingMissesDoesNotMakeTheTablesReadAgain) {
  store(1024, 256);
  EXPECT_EQ(choose(1000).threads, 256);
  EXPECT_EQ(choose(3000).threads, 256);  // a miss (nearest)
  tuning::flush_misses();                // changes the file, not the results
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // past the table's next check
  const std::uint64_t opens = sql::Database::opens();
  EXPECT_EQ(choose(70000).threads, 256);
  EXPECT_EQ(sql::Database::opens(), opens) << "the miss write made the table read the file again";
}

TEST_F(ToyDispatch, AStoredConfigTheFamilyDoesNotKnowIsSkippedWithOneWarning) {
  store(1024, 256);
  store_config(2048, {{"foo", 1}});
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(choose(2048).threads, 256) << "the bad exact row must not be half-read";
  EXPECT_EQ(choose(1500).threads, 256);
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("skipped 1 toy_scale result"), std::string::npos) << err;
  EXPECT_EQ(err.find("skipped"), err.rfind("skipped")) << "more than one warning: " << err;
}

TEST_F(ToyDispatch, ReloadMakesTheChoicesAgain) {
  store(1024, 256);
  EXPECT_EQ(choose(1024).threads, 256);
  store(1024, 64, 0.5);  // a faster result: replaces the row
  EXPECT_EQ(choose(1024).threads, 256) << "memoised";
  reload_tuning();
  EXPECT_EQ(choose(1024).threads, 64);
}

TEST(LruMemo, ForgetsTheLeastRecentlyUsed) {
  ops::LruMemo<int, int, std::hash<int>> memo(3);
  for (int i = 0; i < 3; ++i)
    memo.put(i, i * 10);
  EXPECT_EQ(memo.get(0), 0);  // 0 is now the most recent
  memo.put(3, 30);            // evicts 1
  EXPECT_EQ(memo.size(), 3u);
  EXPECT_FALSE(memo.get(1));
  EXPECT_EQ(memo.get(0), 0);
  EXPECT_EQ(memo.get(2), 20);
  EXPECT_EQ(memo.get(3), 30);
  memo.put(3, 31);
  EXPECT_EQ(memo.get(3), 31);
  EXPECT_EQ(memo.size(), 3u);
}

}  // namespace
}  // namespace kjit::test

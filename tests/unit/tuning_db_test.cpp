// The tuning database and the run-time lookup chain: migrations, upsert rules, exact -> bucket
// -> nearest -> default, concurrent writers, and graceful degradation (corrupt, read-only and
// locked databases fall back to defaults with one warning).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "cache/tuning/miss_log.hpp"
#include "cache/tuning/sqlite.hpp"
#include "cache/tuning/tuning_db.hpp"
#include "cache/tuning/tuning_table.hpp"
#include "tests/support/isolated_cache.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/write_file.hpp"

namespace kjit::tuning {
namespace {

using test::ScopedEnv;
using test::TempDir;

TuningKey key(const std::string& problem = "D=512;N=4;rows=65536") {
  return TuningKey{"merge_states", "tmplhash", problem, "bf16", "sm_90a", "13.0"};
}

Best best_row(const TuningKey& k, const Config& c, double median,
              const std::string& origin = "tune") {
  Best b;
  b.key = k;
  b.config = config_json(c);
  b.median_us = median;
  b.default_us = median * 1.2;
  b.verified = true;
  b.provenance = {"NVIDIA H100", "580", "0.1.0", "events", origin};
  return b;
}

TEST(TuningKeyText, CanonicalForms) {
  EXPECT_EQ(problem_key({{"rows", 65536}, {"D", 512}, {"N", 4}}), "D=512;N=4;rows=65536");
  EXPECT_EQ(parse_problem_key("D=512;N=4")->at("N"), 4);
  EXPECT_FALSE(parse_problem_key("D=5x"));
  EXPECT_FALSE(parse_problem_key("=3"));
  EXPECT_EQ(config_json({{"vec", 8}, {"rows", 2}}), R"({"rows":2,"vec":8})");
  EXPECT_EQ(parse_config_json(R"({"vec":8})")->at("vec"), 8);
  EXPECT_FALSE(parse_config_json("{not json"));
}

class TuningDbTest : public ::testing::Test {
 protected:
  std::string path() const { return (dir_.path() / "tuning.sqlite").string(); }
  TempDir dir_;
};

TEST_F(TuningDbTest, MigratesAnEmptyDatabase) {
  TuningDb db(path(), TuningDb::Mode::ReadWrite);
  EXPECT_EQ(db.schema_version(), kSchemaVersion);
  EXPECT_EQ(db.stats().best, 0);
  db.record_misses({Miss{key(), "default", 1}});
  EXPECT_EQ(db.misses().size(), 1u);
}

TEST_F(TuningDbTest, MigratesAVersionOneDatabaseKeepingItsRows) {
  {
    sql::Database raw(path(), sql::Database::Access::ReadWrite, 1000);
    raw.exec(migration_sql(0));
    raw.exec("PRAGMA user_version = 1");
    raw.exec(
        "INSERT INTO best (op, template_hash, problem_key, dtype, sm_arch, nvrtc, config, "
        "median_us, origin, updated_at) VALUES ('merge_states', 'tmplhash', "
        "'D=512;N=4;rows=65536', 'bf16', 'sm_90a', '13.0', '{\"vec\":8}', 12.5, 'tune', 1)");
  }
  TuningDb db(path(), TuningDb::Mode::ReadWrite);
  EXPECT_EQ(db.schema_version(), kSchemaVersion);
  const std::optional<Best> b = db.best(key());
  ASSERT_TRUE(b);
  EXPECT_EQ(b->median_us, 12.5);
  db.record_misses({Miss{key("D=64;N=2;rows=8"), "nearest", 3}});
  EXPECT_EQ(db.misses().at(0).hits, 3);
}

TEST_F(TuningDbTest, MigratesAVersionTwoPinIntoItsOwnFlag) {
  {
    sql::Database raw(path(), sql::Database::Access::ReadWrite, 1000);
    raw.exec(migration_sql(0));
    raw.exec(migration_sql(1));
    raw.exec("PRAGMA user_version = 2");
    raw.exec(
        "INSERT INTO best (op, template_hash, problem_key, dtype, sm_arch, nvrtc, config, "
        "median_us, state, origin, updated_at) VALUES ('merge_states', 'tmplhash', "
        "'D=512;N=4;rows=65536', 'bf16', 'sm_90a', '13.0', '{\"vec\":8}', 12.5, 'pinned', "
        "'tune', 1)");
  }
  TuningDb db(path(), TuningDb::Mode::ReadWrite);
  const std::optional<Best> b = db.best(key());
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->pinned);
  EXPECT_EQ(b->state, "valid");
}

TEST_F(TuningDbTest, RefusesANewerSchema) {
  {
    sql::Database(path(), sql::Database::Access::ReadWrite, 1000).exec("PRAGMA user_version = 99");
  }
  EXPECT_THROW(TuningDb(path(), TuningDb::Mode::ReadWrite), Error);
}

TEST_F(TuningDbTest, UpsertKeepsTheIncumbentWithinTheMargin) {
  TuningDb db(path(), TuningDb::Mode::ReadWrite);
  EXPECT_EQ(db.upsert_best(best_row(key(), {{"vec", 8}}, 10.0), 0.03), Upsert::Inserted);
  EXPECT_EQ(db.upsert_best(best_row(key(), {{"vec", 4}}, 9.8), 0.03), Upsert::KeptIncumbent);
  EXPECT_EQ(db.best(key())->config, R"({"vec":8})");
  EXPECT_EQ(db.upsert_best(best_row(key(), {{"vec", 4}}, 9.0), 0.03), Upsert::Replaced);
  EXPECT_EQ(db.best(key())->config, R"({"vec":4})");
  // The same config re-measured refreshes its figures even when slower.
  EXPECT_EQ(db.upsert_best(best_row(key(), {{"vec", 4}}, 9.5), 0.03), Upsert::Replaced);
  EXPECT_EQ(db.best(key())->median_us, 9.5);
}

TEST_F(TuningDbTest, PinnedIsNeverReplacedStaleAlwaysIs) {
  TuningDb db(path(), TuningDb::Mode::ReadWrite);
  db.upsert_best(best_row(key(), {{"vec", 8}}, 10.0), 0.03);
  const std::int64_t id = db.best(key())->id;
  ASSERT_TRUE(db.set_pinned(id, true));
  EXPECT_EQ(db.upsert_best(best_row(key(), {{"vec", 4}}, 1.0), 0.03), Upsert::KeptPinned);
  EXPECT_EQ(db.best(key())->config, R"({"vec":8})");
  ASSERT_TRUE(db.set_pinned(id, false));
  ASSERT_TRUE(db.invalidate(id));
  EXPECT_EQ(db.upsert_best(best_row(key(), {{"vec", 4}}, 50.0), 0.03), Upsert::Replaced);
  EXPECT_EQ(db.best(key())->state, "valid");
  EXPECT_FALSE(db.set_pinned(424242, true));
}

TEST_F(TuningDbTest, ImportedRowsLoseToLocalMeasurements) {
  TuningDb db(path(), TuningDb::Mode::ReadWrite);
  EXPECT_EQ(db.import_best(best_row(key(), {{"vec", 2}}, 5.0, "import:x.json")), Upsert::Inserted);
  // A local result replaces an imported one whatever the margin.
  EXPECT_EQ(db.upsert_best(best_row(key(), {{"vec", 8}}, 6.0), 0.03), Upsert::Replaced);
  EXPECT_EQ(db.import_best(best_row(key(), {{"vec", 1}}, 1.0, "import:y.json")), Upsert::KeptLocal);
  EXPECT_EQ(db.best(key())->config, R"({"vec":8})");
}

TEST_F(TuningDbTest, PruneStaleRemovesOtherTemplateVersions) {
  TuningDb db(path(), TuningDb::Mode::ReadWrite);
  TuningKey old = key();
  old.template_hash = "old";
  db.upsert_best(best_row(old, {{"vec", 8}}, 10.0), 0.03);
  db.upsert_best(best_row(key(), {{"vec", 8}}, 10.0), 0.03);
  EXPECT_EQ(db.prune_stale("merge_states", "tmplhash"), 1);
  EXPECT_FALSE(db.best(old));
  EXPECT_TRUE(db.best(key()));
}

TEST_F(TuningDbTest, FilterValuesAreBoundNotSpliced) {
  TuningDb db(path(), TuningDb::Mode::ReadWrite);
  db.upsert_best(best_row(key(), {{"vec", 8}}, 10.0), 0.03);
  EXPECT_TRUE(db.list({"' OR '1'='1", "", ""}).empty());
  EXPECT_TRUE(db.list({"merge_states'; DROP TABLE best; --", "", ""}).empty());
  EXPECT_EQ(db.list({"merge_states", "", ""}).size(), 1u);
}

TEST_F(TuningDbTest, EightProcessesWritingTrialsLoseNothing) {
  constexpr int kProcesses = 8, kTrials = 40;
  TuningDb(path(), TuningDb::Mode::ReadWrite);  // created and migrated once, as `kjit tune` does
  std::vector<std::unique_ptr<test::Subprocess>> procs;
  for (int i = 0; i < kProcesses; ++i) {
    procs.push_back(std::make_unique<test::Subprocess>(std::vector<std::string>{
        test::test_helper_path(), "trials", path(), std::to_string(i), std::to_string(kTrials)}));
  }
  for (auto& p : procs) {
    const test::ProcessResult r = p->wait();
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err.find("locked"), std::string::npos) << r.err;
  }
  EXPECT_EQ(TuningDb(path(), TuningDb::Mode::ReadOnly).stats().trials, kProcesses * kTrials);
}

// The lookup chain, through a TuningTable with KJIT_TUNING_DB pointing at a test database.
// Misses are queued as the op path queues them (dispatch.hpp: every source but "exact").
class LookupTest : public TuningDbTest {
 protected:
  void SetUp() override { env_ = std::make_unique<ScopedEnv>("KJIT_TUNING_DB", path()); }
  TuningTable table_{{"merge_states", "tmplhash", "sm_90a", "13.0"},
                     {{"D", Bucket::Exact}, {"N", Bucket::Exact}, {"rows", Bucket::Pow2}},
                     [](const Config&) { return true; }};
  Choice choose(
      const Shape& s,
      std::function<bool(const Config&)> valid = [](const Config&) { return true; }) {
    std::optional<Choice> c = table_.find(s, "bf16", valid);
    if (!c) c = Choice{Config{{"vec", 1}}, "default"};
    if (c->source != "exact") record_miss({key(problem_key(s)), c->source, 1});
    return *c;
  }
  std::unique_ptr<ScopedEnv> env_;
};

TEST_F(LookupTest, NoDatabaseMeansDefaultsSilently) {
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(choose({{"D", 512}, {"N", 4}, {"rows", 100}}).source, "default");
  flush_misses();
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  EXPECT_FALSE(std::filesystem::exists(path())) << "recording a miss must not create a database";
}

TEST_F(LookupTest, ExactThenBucketThenNearestThenDefault) {
  {
    TuningDb db(path(), TuningDb::Mode::ReadWrite);
    db.upsert_best(best_row(key("D=512;N=4;rows=65536"), {{"vec", 8}}, 10), 0.03);
    db.upsert_best(best_row(key("D=512;N=4;rows=1024"), {{"vec", 4}}, 10), 0.03);
    db.upsert_best(best_row(key("D=256;N=4;rows=70000"), {{"vec", 2}}, 10), 0.03);
  }
  Choice c = choose({{"D", 512}, {"N", 4}, {"rows", 65536}});
  EXPECT_EQ(c.source, "exact");
  EXPECT_EQ(c.config.at("vec"), 8);
  c = choose({{"D", 512}, {"N", 4}, {"rows", 40000}});  // pow2 bucket 65536
  EXPECT_EQ(c.source, "bucket");
  EXPECT_EQ(c.config.at("vec"), 8);
  c = choose({{"D", 512}, {"N", 4}, {"rows", 1500}});  // bucket 2048: none; nearest 1024
  EXPECT_EQ(c.source, "nearest");
  EXPECT_EQ(c.config.at("vec"), 4);
  c = choose({{"D", 512}, {"N", 8}, {"rows", 65536}});  // N is exact: no neighbour applies
  EXPECT_EQ(c.source, "default");
  // A stored config that cannot run the shape is passed over.
  c = choose({{"D", 512}, {"N", 4}, {"rows", 65537}},
             [](const Config& cfg) { return cfg.at("vec") != 8; });
  EXPECT_EQ(c.source, "nearest");
  EXPECT_EQ(c.config.at("vec"), 4);
  flush_misses();
  EXPECT_EQ(TuningDb(path(), TuningDb::Mode::ReadOnly).misses().size(), 4u);
}

// A Pow2Only field shares a result within its power-of-two bucket only (MLA's batch and length:
// a split count tuned for one is no guide for another).
TEST_F(LookupTest, Pow2OnlySharesItsBucketButNoNeighbour) {
  TuningDb(path(), TuningDb::Mode::ReadWrite)
      .upsert_best(best_row(key("D=512;N=4;rows=3000"), {{"vec", 4}}, 10), 0.03);
  TuningTable table{{"merge_states", "tmplhash", "sm_90a", "13.0"},
                    {{"D", Bucket::Exact}, {"N", Bucket::Exact}, {"rows", Bucket::Pow2Only}},
                    [](const Config&) { return true; }};
  const auto find = [&](std::int64_t rows) {
    return table.find({{"D", 512}, {"N", 4}, {"rows", rows}}, "bf16",
                      [](const Config&) { return true; });
  };
  ASSERT_TRUE(find(3000));
  EXPECT_EQ(find(3000)->source, "exact");
  for (std::int64_t rows : {2049, 4096}) {  // bucket 4096, another value
    ASSERT_TRUE(find(rows)) << rows;
    EXPECT_EQ(find(rows)->source, "nearest") << rows;
    EXPECT_EQ(find(rows)->config.at("vec"), 4) << rows;
  }
  EXPECT_FALSE(find(2048));  // bucket 2048: a Pow2 field would take 3000's result as nearest
  EXPECT_FALSE(find(4097));  // bucket 8192
  EXPECT_FALSE(find(65536));
}

TEST_F(LookupTest, ReadOnceThenServedFromMemory) {
  {
    TuningDb(path(), TuningDb::Mode::ReadWrite)
        .upsert_best(best_row(key(), {{"vec", 8}}, 10), 0.03);
  }
  const std::uint64_t opens = sql::Database::opens();
  EXPECT_EQ(choose({{"D", 512}, {"N", 4}, {"rows", 65536}}).source, "exact");
  for (std::int64_t rows = 1; rows < 2000; ++rows)
    choose({{"D", 512}, {"N", 4}, {"rows", rows}});
  EXPECT_EQ(sql::Database::opens() - opens, 1u) << "one read, then every lookup in memory";
  std::filesystem::remove(path());  // the rows answer without the database
  EXPECT_EQ(choose({{"D", 512}, {"N", 4}, {"rows", 65536}}).source, "exact");
}

TEST_F(LookupTest, ReadsAgainWhenTheDatabaseChangesOrOnReload) {
  const Shape shape{{"D", 512}, {"N", 4}, {"rows", 65536}};
  { TuningDb(path(), TuningDb::Mode::ReadWrite); }
  EXPECT_EQ(choose(shape).source, "default");
  {
    TuningDb(path(), TuningDb::Mode::ReadWrite)
        .upsert_best(best_row(key(), {{"vec", 8}}, 10), 0.03);
  }
  table_.reload();
  EXPECT_EQ(choose(shape).source, "exact");
  {
    TuningDb(path(), TuningDb::Mode::ReadWrite).upsert_best(best_row(key(), {{"vec", 4}}, 5), 0.03);
  }
  // Without reload(): the file changed, which the table notices at its next check (once a second).
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  EXPECT_EQ(choose(shape).config.at("vec"), 4);
}

TEST_F(LookupTest, CorruptDatabaseFallsBackWithOneWarning) {
  test::write_file(path(), std::string(4096, 'x'));
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(choose({{"D", 512}, {"N", 4}, {"rows", 1}}).source, "default");
  EXPECT_EQ(choose({{"D", 512}, {"N", 4}, {"rows", 2}}).source, "default");
  flush_misses();
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("unusable"), std::string::npos) << err;
  EXPECT_EQ(err.find("unusable"), err.rfind("unusable")) << "more than one warning: " << err;
}

TEST_F(LookupTest, ReadOnlyDatabaseServesResultsAndWarnsOnceAboutMisses) {
  {
    TuningDb(path(), TuningDb::Mode::ReadWrite)
        .upsert_best(best_row(key(), {{"vec", 8}}, 10), 0.03);
  }
  {
    // Leave WAL mode so the read-only file needs no side files.
    sql::Database raw(path(), sql::Database::Access::ReadWrite, 1000);
    raw.exec("PRAGMA journal_mode=DELETE");
  }
  // Root ignores file modes: make the file immutable instead where that is possible.
  const bool root = ::geteuid() == 0;
  const std::string immutable = "chattr +i '" + path() + "' 2>/dev/null";
  if (root && std::system(immutable.c_str()) != 0) {
    GTEST_SKIP() << "running as root and chattr +i is unavailable: cannot make a read-only file";
  }
  if (!root) ::chmod(path().c_str(), 0444);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(choose({{"D", 512}, {"N", 4}, {"rows", 65536}}).source, "exact");
  EXPECT_EQ(choose({{"D", 512}, {"N", 8}, {"rows", 3}}).source, "default");
  EXPECT_EQ(choose({{"D", 512}, {"N", 8}, {"rows", 5}}).source, "default");
  flush_misses();
  const std::string err = ::testing::internal::GetCapturedStderr();
  if (root) std::system(("chattr -i '" + path() + "'").c_str());
  EXPECT_NE(err.find("unusable"), std::string::npos) << err;
  EXPECT_EQ(err.find("unusable"), err.rfind("unusable")) << err;
}

TEST_F(LookupTest, LockedDatabaseFallsBackWithoutStalling) {
  {
    TuningDb(path(), TuningDb::Mode::ReadWrite)
        .upsert_best(best_row(key(), {{"vec", 8}}, 10), 0.03);
  }
  const std::string marker = (dir_.path() / "locked").string();
  test::Subprocess holder({test::test_helper_path(), "lock", path(), marker});
  for (int i = 0; i < 500 && !std::filesystem::exists(marker); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(std::filesystem::exists(marker)) << "the lock holder did not start";
  ::testing::internal::CaptureStderr();
  const auto start = std::chrono::steady_clock::now();
  const Choice c = choose({{"D", 512}, {"N", 4}, {"rows", 65536}});
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  const std::string err = ::testing::internal::GetCapturedStderr();
  test::write_file(marker + ".release", "");
  EXPECT_EQ(holder.wait().exit_code, 0);
  EXPECT_EQ(c.source, "default");
  EXPECT_LT(ms, 1000) << "a locked database must not stall the lookup";
  EXPECT_NE(err.find("unusable"), std::string::npos) << err;
}

}  // namespace
}  // namespace kjit::tuning

// `kjit cache` on the tuning database and `kjit tune` without a GPU, run as separate processes
// against a database built here.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cache/tuning/tuning_db.hpp"
#include "ops/registry.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/write_file.hpp"

namespace kjit::test {
namespace {

using tuning::Best;
using tuning::TuningDb;

class TuningCli : public ::testing::Test {
 protected:
  void SetUp() override {
    TuningDb db(path(), TuningDb::Mode::ReadWrite);
    db.upsert_best(
        row("D=512;N=4;rows=65536", R"({"rows_per_block":4,"threads_per_row":32,"vec":8})", 100.0),
        0.03);
    db.upsert_best(
        row("D=128;N=2;rows=8192", R"({"rows_per_block":8,"threads_per_row":16,"vec":8})", 20.0),
        0.03);
    Best old = row("D=64;N=2;rows=8", R"({"rows_per_block":8,"threads_per_row":8,"vec":8})", 1.0);
    old.key.template_hash = "0123456789abcdef0123456789abcdef";  // an older template
    db.upsert_best(old, 0.03);
    tuning::Trial t;
    t.key = row("D=512;N=4;rows=65536", "", 0).key;
    t.config = R"({"rows_per_block":4,"threads_per_row":32,"vec":8})";
    t.status = "ok";
    t.median_us = 100.0;
    t.p20_us = 99.0;
    t.p80_us = 101.5;
    t.samples = 50;
    db.record_trial(t, {"NVIDIA H100 80GB HBM3", "13000", "0.1.0", "events", "tune"});
    t.config = R"({"rows_per_block":1,"threads_per_row":4,"vec":2})";
    t.status = "verify_fail";
    t.error = "differs";
    db.record_trial(t, {"NVIDIA H100 80GB HBM3", "13000", "0.1.0", "events", "tune"});
  }
  static Best row(const std::string& shape, const std::string& config, double us) {
    Best b;
    b.key = {"merge_states", ops::find_family("merge_states")->template_hash(),
             shape,          "bf16",
             "sm_90a",       "13.0"};
    b.config = config;
    b.median_us = us;
    b.default_us = us * 1.25;
    b.runner_up_us = us * 1.1;
    b.verified = true;
    b.provenance = {"NVIDIA H100 80GB HBM3", "13000", "0.1.0", "events", "tune"};
    return b;
  }
  std::string path() const { return (dir_.path() / "t.sqlite").string(); }
  ProcessResult kjit(std::vector<std::string> args, const std::string& db = "") {
    args.insert(args.begin(), cli_path());
    return run_process(args, {{"KJIT_TUNING_DB", db.empty() ? path() : db},
                              {"KJIT_CACHE_DIR", (dir_.path() / "kernels").string()},
                              {"KJIT_LIBCUDA", "/nonexistent/libcuda.so.1"}});
  }
  TempDir dir_;
};

TEST_F(TuningCli, LsPrintsAnAlignedTable) {
  const ProcessResult r = kjit({"cache", "ls", "--op", "merge_states", "--arch", "sm_90a"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string expected =
      "  id  op            dtype shape                    arch    config                          "
      "                            us  speedup  state   origin\n"
      "   2  merge_states  bf16  D=128;N=2;rows=8192      sm_90a  "
      "{\"rows_per_block\":8,\"threads_per_row\":16,\"vec\":8}        20.00    1.25x  valid   "
      "tune\n"
      "   1  merge_states  bf16  D=512;N=4;rows=65536     sm_90a  "
      "{\"rows_per_block\":4,\"threads_per_row\":32,\"vec\":8}       100.00    1.25x  valid   "
      "tune\n"
      "   3  merge_states  bf16  D=64;N=2;rows=8          sm_90a  "
      "{\"rows_per_block\":8,\"threads_per_row\":8,\"vec\":8}          1.00    1.25x  valid   "
      "tune\n";
  EXPECT_EQ(r.out, expected);
}

TEST_F(TuningCli, LsJsonAndFilters) {
  ProcessResult r = kjit({"cache", "ls", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 3u);
  EXPECT_EQ(j[0]["config"]["threads_per_row"], 16);
  EXPECT_EQ(j[0]["gpu_name"], "NVIDIA H100 80GB HBM3");
  r = kjit({"cache", "ls", "--json", "--arch", "sm_80"});
  EXPECT_EQ(nlohmann::json::parse(r.out).size(), 0u);
}

TEST_F(TuningCli, InjectionAttemptsInFiltersAreInert) {
  for (const char* evil : {"' OR '1'='1", "x'; DROP TABLE best; --", "%", "merge_states' --"}) {
    const ProcessResult r = kjit({"cache", "ls", "--json", "--op", evil});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out).size(), 0u) << evil;
  }
  EXPECT_EQ(TuningDb(path(), TuningDb::Mode::ReadOnly).stats().best, 3);
}

TEST_F(TuningCli, ShowListsTheTrials) {
  const ProcessResult r = kjit({"cache", "show", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("measured on NVIDIA H100 80GB HBM3 (driver 13000, kjit 0.1.0), events; "
                       "runner-up 110.00 us, default 125.00 us"),
            std::string::npos)
      << r.out;
  EXPECT_NE(
      r.out.find("{\"rows_per_block\":4,\"threads_per_row\":32,\"vec\":8}    ok                "
                 "100.00     99.00    101.50      50"),
      std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("verify_fail"), std::string::npos);
  EXPECT_EQ(kjit({"cache", "show", "99"}).exit_code, 1);
  EXPECT_EQ(kjit({"cache", "show", "1; DROP TABLE best"}).exit_code, 1);
}

TEST_F(TuningCli, PinAndUnpin) {
  EXPECT_EQ(kjit({"cache", "pin", "1"}).out, "result 1 pinned\n");
  TuningDb db(path(), TuningDb::Mode::ReadWrite);
  EXPECT_TRUE(db.best_by_id(1)->pinned);
  EXPECT_EQ(db.upsert_best(row("D=512;N=4;rows=65536", "{}", 1.0), 0.03),
            tuning::Upsert::KeptPinned);
  const auto pinned =
      nlohmann::json::parse(kjit({"cache", "ls", "--json", "--state", "pinned"}).out);
  ASSERT_EQ(pinned.size(), 1u);
  EXPECT_EQ(pinned[0]["id"], 1);
  EXPECT_EQ(kjit({"cache", "unpin", "1"}).out, "result 1 unpinned\n");
  EXPECT_FALSE(TuningDb(path(), TuningDb::Mode::ReadOnly).best_by_id(1)->pinned);
  EXPECT_EQ(kjit({"cache", "pin", "77"}).exit_code, 1);
  EXPECT_EQ(kjit({"cache", "invalidate", "1"}).out, "result 1 marked stale\n");
  TuningDb after(path(), TuningDb::Mode::ReadWrite);
  EXPECT_EQ(after.best_by_id(1)->state, "stale");
  EXPECT_EQ(after.upsert_best(row("D=512;N=4;rows=65536", "{}", 500.0), 0.03),
            tuning::Upsert::Replaced);
}

TEST_F(TuningCli, ExportImportRoundTrip) {
  const std::string file = (dir_.path() / "export.json").string();
  ProcessResult r = kjit({"cache", "export", file});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "exported 3 result(s) to " + file + "\n");
  const std::string other = (dir_.path() / "other.sqlite").string();
  r = kjit({"cache", "import", file}, other);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(
      r.out,
      "imported 3 result(s): 3 new, 0 replacing older imports, 0 kept (local, pinned or faster)\n");
  TuningDb db(other, TuningDb::Mode::ReadWrite);
  ASSERT_EQ(db.stats().best, 3);
  const auto rows = db.list({});
  EXPECT_EQ(rows[1].provenance.origin, "import:export.json");
  EXPECT_EQ(rows[1].config, R"({"rows_per_block":4,"threads_per_row":32,"vec":8})");
  EXPECT_EQ(rows[1].provenance.gpu_name, "NVIDIA H100 80GB HBM3");
  // Importing into the source database keeps every local row.
  r = kjit({"cache", "import", file});
  EXPECT_EQ(
      r.out,
      "imported 3 result(s): 0 new, 0 replacing older imports, 3 kept (local, pinned or faster)\n");
  test::write_file(dir_.path() / "bad.json", "{\"format\": \"something else\"}");
  EXPECT_EQ(kjit({"cache", "import", (dir_.path() / "bad.json").string()}).exit_code, 1);
}

TEST_F(TuningCli, PruneStaleRemovesOldTemplateResults) {
  const ProcessResult r = kjit({"cache", "prune", "--stale"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "removed 1 stale result(s) and 0 this kjit cannot read\n");
  EXPECT_EQ(TuningDb(path(), TuningDb::Mode::ReadOnly).stats().best, 2);
}

// A result or miss of a known op whose shape this kjit does not read (another version's: a
// dimension more or less), or whose config is not the op's, goes too; another op's stays.
TEST_F(TuningCli, PruneStaleRemovesWhatThisKjitCannotRead) {
  {
    TuningDb db(path(), TuningDb::Mode::ReadWrite);
    db.upsert_best(row("D=512;N=4", R"({"rows_per_block":4,"threads_per_row":32,"vec":8})", 50.0),
                   0.03);
    db.upsert_best(row("D=512;N=4;rows=4096", R"({"tile":4})", 50.0), 0.03);
    Best other = row("D=512;N=4", R"({"tile":4})", 50.0);
    other.key.op = "an_op_of_another_kjit";
    db.upsert_best(other, 0.03);
    db.record_misses({{row("D=512;N=8", "", 0).key, "default", 1},
                      {row("D=512;N=8;rows=100", "", 0).key, "default", 1}});
  }
  const ProcessResult r = kjit({"cache", "prune", "--stale"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "removed 1 stale result(s) and 2 this kjit cannot read\n");
  TuningDb db(path(), TuningDb::Mode::ReadOnly);
  EXPECT_EQ(db.stats().best, 3);  // the two readable merge_states rows and the other op's
  const std::vector<tuning::Miss> misses = db.misses();
  ASSERT_EQ(misses.size(), 1u);
  EXPECT_EQ(misses[0].key.problem_key, "D=512;N=8;rows=100");
}

TEST_F(TuningCli, MissesAndStats) {
  {
    TuningDb db(path(), TuningDb::Mode::ReadWrite);
    db.record_misses({{row("D=512;N=8;rows=100", "", 0).key, "default", 1}});
    db.record_misses({{row("D=512;N=8;rows=100", "", 0).key, "default", 2}});
  }
  ProcessResult r = kjit({"cache", "misses"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "op            shape                    dtype arch    served     hits\n"
            "merge_states  D=512;N=8;rows=100       bf16  sm_90a  default       3\n");
  r = kjit({"cache", "stats", "--json"});
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["tuning_db"]["results"], 3);
  EXPECT_EQ(j["tuning_db"]["trials"], 2);
  EXPECT_EQ(j["tuning_db"]["failed_trials"], 1);
  EXPECT_EQ(j["tuning_db"]["misses"], 1);
  EXPECT_EQ(j["tuning_db"]["schema"], tuning::kSchemaVersion);
}

TEST_F(TuningCli, TuneWithoutAGpuSaysSoButDryRunWorks) {
  ProcessResult r = kjit({"tune", "--preset", "merge_states-quick"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("kjit tune needs a CUDA GPU"), std::string::npos) << r.err;
  r = kjit({"tune", "--shape", "D=512,N=4,rows=65536", "--dry-run"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("pass --arch"), std::string::npos) << r.err;
  r = kjit({"tune", "--shape", "D=512,N=4,rows=65536", "--dry-run", "--arch", "sm_90a"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("merge_states D=512;N=4;rows=65536 bf16: 75 configs in the space, 18 pruned "
                       "by constraints, 57 to compile and time"),
            std::string::npos)
      << r.out;
  // Attention's space depends on the arch: wgmma tiles only for sm_90a, less shared memory on
  // sm_80 (hd 128: 18 mma.sync + 4 wgmma + 14 warp-specialised configs valid on sm_90a: 64, 80,
  // 112 and 128 keys for loops 91, 92 and 93, 176 for 92 and 93; 14 mma.sync on sm_80).
  const std::pair<const char*, const char*> expected[] = {
      {"sm_90a",
       "52 configs in the space, 16 pruned by constraints, 36 to compile and time; default "
       "{\"block_m\":128,\"block_n\":128,\"m_tiles\":1,\"mainloop\":93}"},
      {"sm_80",
       "18 configs in the space, 4 pruned by constraints, 14 to compile and time; default "
       "{\"block_m\":128,\"block_n\":64,\"m_tiles\":1,\"mainloop\":80}"}};
  for (const auto& [arch, line] : expected) {
    r = kjit({"tune", "--op", "attention", "--shape",
              "B=2,Hq=32,Hk=8,D=128,Sq=8192,Sk=8192,causal=1", "--dry-run", "--arch", arch});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find(line), std::string::npos) << r.out;
  }
  r = kjit(
      {"tune", "--op", "attention", "--shape", "D=128,Sq=8192", "--dry-run", "--arch", "sm_90a"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("shape must be exactly B, Hq, Hk, D, Sq, Sk, causal"), std::string::npos)
      << r.err;
  EXPECT_EQ(kjit({"tune", "--preset", "nope", "--dry-run", "--arch", "sm_90a"}).exit_code, 1);
  EXPECT_EQ(
      kjit({"tune", "--op", "nope", "--shape", "D=1", "--dry-run", "--arch", "sm_90a"}).exit_code,
      1);
}

}  // namespace
}  // namespace kjit::test

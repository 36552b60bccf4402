// The tuning database and its commands under hostile or careless conditions (issue 8): imports
// that are half bad, exports that cannot be written, names that are not UTF-8, configs an op does
// not know, pins of stale rows, broken and foreign files, read-only folders, unsafe locations.
// Permission cases run the CLI as an unprivileged user (nobody) when the suite runs as root.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "cache/tuning/sqlite.hpp"
#include "cache/tuning/tuning_db.hpp"
#include "ops/registry.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/write_file.hpp"

namespace kjit::test {
namespace fs = std::filesystem;
namespace {

using tuning::Best;
using tuning::TuningDb;

constexpr const char* kConfig = R"({"rows_per_block":4,"threads_per_row":32,"vec":8})";

nlohmann::json export_row(const std::string& shape, const nlohmann::json& config, double us) {
  return {{"op", "merge_states"},
          {"template_hash", ops::find_family("merge_states")->template_hash()},
          {"problem_key", shape},
          {"dtype", "bf16"},
          {"sm_arch", "sm_90a"},
          {"nvrtc", "13.0"},
          {"config", config},
          {"median_us", us},
          {"gpu_name", "NVIDIA H100"}};
}

std::string export_file(const fs::path& path, const std::vector<nlohmann::json>& rows) {
  write_file(path,
             nlohmann::json{
                 {"format", "kjit-tuning-results"}, {"version", 1}, {"rows", nlohmann::json(rows)}}
                 .dump());
  return path.string();
}

// Runs `kjit` as nobody when this process is root (permissions mean nothing to root).
std::vector<std::string> unprivileged(std::vector<std::string> args) {
  if (::geteuid() == 0) {
    args.insert(args.begin(),
                {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"});
  }
  return args;
}

class TuningSafety : public ::testing::Test {
 protected:
  std::string path() const { return (dir_.path() / "t.sqlite").string(); }
  ProcessResult kjit(std::vector<std::string> args, const std::string& db = "",
                     std::vector<std::pair<std::string, std::string>> env = {}) {
    args.insert(args.begin(), cli_path());
    env.emplace_back("KJIT_TUNING_DB", db.empty() ? path() : db);
    env.emplace_back("KJIT_CACHE_DIR", (dir_.path() / "kernels").string());
    env.emplace_back("KJIT_LIBCUDA", "/nonexistent/libcuda.so.1");
    return run_process(args, env);
  }
  std::int64_t rows() { return TuningDb(path(), TuningDb::Mode::ReadOnly).stats().best; }
  void store_one() {
    TuningDb db(path(), TuningDb::Mode::ReadWrite);
    Best b;
    b.key = {"merge_states", "h", "D=512;N=4;rows=1024", "bf16", "sm_90a", "13.0"};
    b.config = kConfig;
    b.median_us = 1;
    b.provenance.origin = "tune";
    db.upsert_best(b, 0.03);
  }

  TempDir dir_;
};

TEST_F(TuningSafety, ImportIsAllOrNothing) {
  const std::string file =
      export_file(dir_.path() / "partial.json",
                  {export_row("D=512;N=4;rows=1024", nlohmann::json::parse(kConfig), 5.0),
                   export_row("D=512;N=4;rows=2048", nlohmann::json::parse(kConfig), 5.0)});
  nlohmann::json doc = nlohmann::json::parse(read_file(file));
  doc["rows"][1]["median_us"] = nullptr;
  write_file(file, doc.dump());
  { TuningDb(path(), TuningDb::Mode::ReadWrite); }
  const ProcessResult r = kjit({"cache", "import", file});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("row 2"), std::string::npos) << r.err;
  EXPECT_EQ(rows(), 0) << "row 1 was committed before row 2 failed";
}

TEST_F(TuningSafety, ImportRefusesWhatTheOpCannotRun) {
  { TuningDb(path(), TuningDb::Mode::ReadWrite); }
  const nlohmann::json good = export_row("D=512;N=4;rows=1024", nlohmann::json::parse(kConfig), 5);
  struct Bad {
    const char* what;
    nlohmann::json row;
    const char* says;
  };
  std::vector<Bad> bad;
  bad.push_back({"unknown key", good, "not a config of merge_states"});
  bad.back().row["config"] = {{"foo", 1}};
  bad.push_back({"huge", good, "cannot run"});
  bad.back().row["config"] = {
      {"vec", 8}, {"threads_per_row", 1099511627776LL}, {"rows_per_block", -3}};
  bad.push_back({"negative time", good, "a time of -1 us"});
  bad.back().row["median_us"] = -1;
  bad.push_back({"unknown op", good, "unknown op"});
  bad.back().row["op"] = "nope";
  bad.push_back({"bad arch", good, "not a real architecture"});
  bad.back().row["sm_arch"] = "sm_x";
  bad.push_back({"bad shape", good, "head dim"});
  bad.back().row["problem_key"] = "D=48;N=4;rows=1024";
  bad.push_back({"control characters", good, "control characters"});
  bad.back().row["gpu_name"] = "\x1b[2J";
  for (const Bad& b : bad) {
    const ProcessResult r =
        kjit({"cache", "import", export_file(dir_.path() / "bad.json", {good, b.row})});
    EXPECT_EQ(r.exit_code, 1) << b.what << ": " << r.out;
    EXPECT_NE(r.err.find("row 2 refused"), std::string::npos) << b.what << ": " << r.err;
    EXPECT_NE(r.err.find(b.says), std::string::npos) << b.what << ": " << r.err;
  }
  EXPECT_EQ(rows(), 0);
  // Whole-file problems: one line, exit 1 (not "internal error").
  write_file(dir_.path() / "norows.json", R"({"format": "kjit-tuning-results", "version": 1})");
  write_file(dir_.path() / "v99.json",
             R"({"format": "kjit-tuning-results", "version": 99, "rows": []})");
  for (const std::string& f :
       {(dir_.path() / "norows.json").string(), (dir_.path() / "v99.json").string(), dir_.str()}) {
    const ProcessResult r = kjit({"cache", "import", f});
    EXPECT_EQ(r.exit_code, 1) << f << ": " << r.err;
    EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
  }
}

TEST_F(TuningSafety, ABadRowAlreadyInTheDatabaseCostsOneWarning) {
  {
    TuningDb db(path(), TuningDb::Mode::ReadWrite);
    Best b;
    b.key = {"merge_states",
             ops::find_family("merge_states")->template_hash(),
             "D=512;N=4;rows=1024",
             "bf16",
             "sm_90a",
             "13.0"};
    b.config = R"({"foo":1})";
    b.median_us = 1;
    b.provenance.origin = "hand";
    db.upsert_best(b, 0.03);
  }
  const ProcessResult r = kjit({"precompile", "--arch", "sm_90a", "--family", "tuned", "--list"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("skipped 1 tuned result"), std::string::npos) << r.err;
}

TEST_F(TuningSafety, AFailedExportKeepsThePreviousFileAndNonUtf8NamesStayReadable) {
  { TuningDb(path(), TuningDb::Mode::ReadWrite); }
  // A file whose name is Latin-1, as the probe used.
  const std::string latin1 = (dir_.path() / "r\xe9sultats.json").string();
  std::vector<nlohmann::json> many;
  for (int rows = 1024; rows <= 65536; rows *= 2)
    many.push_back(
        export_row("D=512;N=4;rows=" + std::to_string(rows), nlohmann::json::parse(kConfig), 5.0));
  export_file(latin1, many);
  ASSERT_EQ(kjit({"cache", "import", latin1}).exit_code, 0);
  {
    // Out of WAL mode: reading the database then needs no -shm file of 32 KiB (the file-size
    // limit below would refuse it).
    sql::Database raw(path(), sql::Database::Access::ReadWrite, 1000);
    raw.exec("PRAGMA journal_mode=DELETE");
  }
  ProcessResult r = kjit({"cache", "ls", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).at(0)["origin"], "import:r\\xe9sultats.json");
  // The disk fills up mid-export (a 1 KiB file-size limit): the previous export stays whole.
  const std::string previous = (dir_.path() / "prev.json").string();
  write_file(previous, R"({"precious":1})");
  r = run_process({"/bin/sh", "-c", "ulimit -f 1; trap '' XFSZ; exec \"$0\" cache export \"$1\"",
                   cli_path(), previous},
                  {{"KJIT_TUNING_DB", path()}});
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.err.find("cannot write"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(previous), R"({"precious":1})") << "a failed export touched the old file";
  r = kjit({"cache", "export", previous});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(read_file(previous))["rows"].size(), many.size());
}

TEST_F(TuningSafety, UnpinKeepsAStaleResultStale) {
  store_one();
  EXPECT_EQ(kjit({"cache", "pin", "1"}).exit_code, 0);
  EXPECT_EQ(kjit({"cache", "invalidate", "1"}).exit_code, 0);
  EXPECT_EQ(kjit({"cache", "unpin", "1"}).exit_code, 0);
  const auto stale = nlohmann::json::parse(kjit({"cache", "ls", "--json", "--state", "stale"}).out);
  ASSERT_EQ(stale.size(), 1u) << "unpin revived a stale result";
  EXPECT_FALSE(stale[0]["pinned"].get<bool>());
  EXPECT_EQ(kjit({"cache", "ls", "--state", "bogus"}).exit_code, 1);
}

TEST_F(TuningSafety, ChangingCommandsNeverCreateADatabase) {
  const std::string missing = (dir_.path() / "none" / "t.sqlite").string();
  for (const char* verb : {"pin", "unpin", "invalidate"}) {
    const ProcessResult r = kjit({"cache", verb, "5"}, missing);
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("no tuning database"), std::string::npos) << r.err;
  }
  EXPECT_FALSE(fs::exists(dir_.path() / "none"));
}

TEST_F(TuningSafety, BrokenDatabasesDegradePrecompileAndEmptyOnesReadAsEmpty) {
  write_file(dir_.path() / "random.sqlite", std::string(4096, 'x'));
  fs::create_directories(dir_.path() / "dir.sqlite");
  write_file(dir_.path() / "zero.sqlite", "");
  for (const char* name : {"random.sqlite", "dir.sqlite", "zero.sqlite"}) {
    const std::string db = (dir_.path() / name).string();
    const ProcessResult r = kjit({"precompile", "--arch", "sm_90a", "--list"}, db);
    EXPECT_EQ(r.exit_code, 0) << name << ": " << r.err;
    EXPECT_NE(r.out.find("samples"), std::string::npos) << name;
  }
  for (std::vector<std::string> cmd :
       {std::vector<std::string>{"cache", "stats"}, {"cache", "ls"}, {"cache", "misses"}}) {
    const ProcessResult r = kjit(cmd, (dir_.path() / "zero.sqlite").string());
    EXPECT_EQ(r.exit_code, 0) << cmd[1] << ": " << r.err;
  }
}

TEST_F(TuningSafety, AForeignSchemaIsOneLine) {
  {
    sql::Database raw(path(), sql::Database::Access::ReadWrite, 1000);
    raw.exec("CREATE TABLE best (x INTEGER); CREATE TABLE other (y TEXT)");
  }
  for (const char* verb : {"import", "ls"}) {
    const std::string file =
        export_file(dir_.path() / "ok.json",
                    {export_row("D=512;N=4;rows=1024", nlohmann::json::parse(kConfig), 5)});
    const ProcessResult r =
        std::string(verb) == "ls" ? kjit({"cache", "ls"}) : kjit({"cache", "import", file});
    EXPECT_EQ(r.exit_code, 1) << verb;
    EXPECT_NE(r.err.find("is not a kjit tuning database"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

TEST_F(TuningSafety, AShippedReadOnlyDatabaseIsRead) {
  store_one();  // in WAL mode
  // A read-only folder holding the database and nothing else, as a container image ships it.
  const fs::path ro = dir_.path() / "ro";
  fs::create_directories(ro);
  fs::copy_file(path(), ro / "t.sqlite");
  ::chmod((ro / "t.sqlite").c_str(), 0444);
  ::chmod(ro.c_str(), 0555);
  ::chmod(dir_.path().c_str(), 0755);
  if (::geteuid() == 0) ::chown((ro / "t.sqlite").c_str(), 0, 0);
  const ProcessResult r =
      run_process(unprivileged({cli_path(), "cache", "ls", "--json"}),
                  {{"KJIT_TUNING_DB", (ro / "t.sqlite").string()}, {"HOME", dir_.str()}});
  ::chmod(ro.c_str(), 0755);
  ::chmod(dir_.path().c_str(), 0700);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out).size(), 1u);
}

TEST_F(TuningSafety, TheDefaultDatabaseIsPrivateAndNeverInTmp) {
  const fs::path home = dir_.path() / "home";
  fs::create_directories(home);
  const std::string file =
      export_file(dir_.path() / "ok.json",
                  {export_row("D=512;N=4;rows=1024", nlohmann::json::parse(kConfig), 5)});
  ProcessResult r = run_process({cli_path(), "cache", "import", file},
                                {{"HOME", home.string()}, {"XDG_DATA_HOME", "relative/data"}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const fs::path db = home / ".local/share/kjit/tuning.sqlite";  // a relative XDG value is ignored
  ASSERT_TRUE(fs::exists(db));
  struct stat st {};
  ::stat(db.parent_path().c_str(), &st);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ::stat(db.c_str(), &st);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Without HOME the home comes from the password database, never /tmp.
  r = run_process({"/usr/bin/env", "-u", "HOME", "-u", "XDG_DATA_HOME", "-u", "KJIT_TUNING_DB",
                   cli_path(), "cache", "stats", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string where = nlohmann::json::parse(r.out)["tuning_db"]["path"];
  EXPECT_EQ(where.rfind("/tmp", 0), std::string::npos) << where;
  // A database folder others can write is refused for writing.
  const fs::path shared = dir_.path() / "shared";
  fs::create_directories(shared);
  ::chmod(shared.c_str(), 0777);
  r = kjit({"cache", "import", file}, (shared / "t.sqlite").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("writable by other users"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(shared / "t.sqlite"));
}

TEST_F(TuningSafety, SettingsAndArchErrorsAreOneLineOnce) {
  for (const auto& [name, value] : std::vector<std::pair<std::string, std::string>>{
           {"KJIT_CACHE", "garbage"}, {"KJIT_DEBUG", "bogus"}, {"KJIT_NO_JIT", "maybe"}}) {
    const ProcessResult r =
        kjit({"precompile", "--arch", "sm_90a", "--family", "samples"}, "", {{name, value}});
    EXPECT_EQ(r.exit_code, 1) << name;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << name << ": " << r.err;
  }
  for (const char* arch : {"sm_99999999999", "sm_12"}) {
    for (std::vector<std::string> cmd :
         {std::vector<std::string>{"precompile", "--family", "samples", "--arch", arch},
          {"tune", "--dry-run", "--preset", "merge_states-quick", "--arch", arch}}) {
      const ProcessResult r = kjit(cmd);
      EXPECT_EQ(r.exit_code, 1) << arch << ": " << r.err;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
      EXPECT_EQ(r.out, "") << "nothing printed before the error";
    }
  }
  const ProcessResult r =
      kjit({"tune", "--dry-run", "--arch", "sm_90a", "--shapes-file", dir_.str()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  const ProcessResult help = kjit({"precompile", "--help"});
  for (const ops::KernelFamily* f : ops::families())
    EXPECT_NE(help.out.find(f->name()), std::string::npos) << help.out;
}

}  // namespace
}  // namespace kjit::test

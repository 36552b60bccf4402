// Host cost of the op path's choice of a config (no GPU needed): attention problems of 100,000
// distinct varlen shapes (B, max Sq, max Sk), as a serving loop sees them, against a tuning
// database of 40 Llama-3-8B prefill results (counting the SQLite connections opened meanwhile),
// and the first choice against a database of 100,000 results.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <stdexcept>

#include <fmt/format.h>

#include "cache/tuning/sqlite.hpp"
#include "cache/tuning/tuning_db.hpp"
#include "nvrtc/compiler.hpp"
#include "ops/attention/flash_forward.hpp"
#include "ops/dispatch.hpp"
#include "ops/registry.hpp"

namespace {

using kjit::ops::FlashForward;

// A private scratch folder (the tuning database refuses folders others can write, such as /tmp).
std::string scratch_database(const char* name) {
  static const std::string dir = [] {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "kjit-choice-cost-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    return pattern;
  }();
  return dir + "/" + name;
}
constexpr int kShapes = 100000;

std::vector<FlashForward::Problem> distinct_varlen_problems() {
  std::mt19937 rng(1);
  std::vector<FlashForward::Problem> out;
  for (int i = 0; i < kShapes; ++i) {
    const std::int64_t b = 1 + rng() % 16, sq = 1 + rng() % 16384, sk = sq + rng() % 64;
    out.push_back({kjit::DType::BFloat16, b, 32, 8, 128, sq, sk, true});
  }
  return out;
}

// A tuned attention result (hd 128, Hk 8, bf16, sm_90a) for the given shape fields.
kjit::tuning::Best attention_result(int b, int hq, int s, int causal, const char* origin) {
  static const std::string hash = kjit::ops::find_family("attention")->template_hash();
  kjit::tuning::Best r;
  r.key = {"attention",
           hash,
           fmt::format("B={};D=128;Hk=8;Hq={};Sk={};Sq={};causal={}", b, hq, s, s, causal),
           "bf16",
           "sm_90a",
           kjit::nvrtc::version_text()};
  r.config = R"({"block_m":128,"block_n":128,"m_tiles":1,"mainloop":90})";
  r.median_us = 10;
  r.provenance.origin = origin;
  return r;
}

void write_database(const std::string& path) {
  std::filesystem::remove(path);
  kjit::tuning::TuningDb db(path, kjit::tuning::TuningDb::Mode::ReadWrite);
  for (int s : {2048, 4096, 8192, 16384, 32768}) {
    for (int b : {1, 2, 4, 8}) {
      for (int causal : {0, 1}) {
        db.upsert_best(attention_result(b, 32, s, causal, "tune"), 0.03);
      }
    }
  }
}

// One iteration = one call with a shape never seen before in this process.
void ChooseDistinctVarlenShapes(benchmark::State& state) {
  const std::string path = scratch_database("choice-cost.sqlite");
  write_database(path);
  ::setenv("KJIT_TUNING_DB", path.c_str(), 1);
  const std::vector<FlashForward::Problem> problems = distinct_varlen_problems();
  kjit::reload_tuning();
  const std::uint64_t opens = kjit::sql::Database::opens();
  auto& dispatcher = kjit::ops::Dispatcher<FlashForward>::instance();
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(dispatcher.choose(problems[i++ % problems.size()], "sm_90a"));
  }
  kjit::reload_tuning();  // writes the queued misses: counted too
  state.counters["sqlite_opens"] = static_cast<double>(kjit::sql::Database::opens() - opens);
  state.counters["memo_entries"] = static_cast<double>(dispatcher.memo_size());
  std::filesystem::remove(path);
}
BENCHMARK(ChooseDistinctVarlenShapes)->Iterations(kShapes)->Unit(benchmark::kMicrosecond);

// The first choice of a process against a database of 100,000 attention results (the probe's
// worst case: before, 240-320 ms for every new shape under the lookup's lock): one read of the
// family's rows, then an in-memory search. Each iteration starts from a reload.
void FirstChoiceWith100kResults(benchmark::State& state) {
  const std::string path = scratch_database("choice-cost-100k.sqlite");
  std::filesystem::remove(path);
  {
    std::vector<kjit::tuning::Best> rows;
    for (int i = 0; rows.size() < 100000; ++i) {
      const int hq = 8 * (1 + i % 16), s = 64 * (1 + (i / 16) % 512), b = 1 + (i / 8192) % 16;
      rows.push_back(attention_result(b, hq, s, i % 2, "import:bench"));
    }
    kjit::tuning::TuningDb(path, kjit::tuning::TuningDb::Mode::ReadWrite).import_all(rows);
  }
  ::setenv("KJIT_TUNING_DB", path.c_str(), 1);
  auto& dispatcher = kjit::ops::Dispatcher<FlashForward>::instance();
  const FlashForward::Problem p{kjit::DType::BFloat16, 3, 40, 8, 128, 5000, 5000, true};
  for (auto _ : state) {
    kjit::reload_tuning();
    benchmark::DoNotOptimize(dispatcher.choose(p, "sm_90a"));
  }
  kjit::reload_tuning();
  std::filesystem::remove_all(std::filesystem::path(path).parent_path());
}
BENCHMARK(FirstChoiceWith100kResults)->Iterations(5)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();

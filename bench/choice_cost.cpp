// Host cost of the op path's choice of a config (no GPU needed): attention problems of 100,000
// distinct varlen shapes (B, max Sq, max Sk), as a serving loop sees them, against a tuning
// database of 40 Llama-3-8B prefill results. Counts the SQLite connections opened meanwhile.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <random>

#include <fmt/format.h>

#include "cache/tuning/sqlite.hpp"
#include "cache/tuning/tuning_db.hpp"
#include "ops/attention/flash_forward.hpp"
#include "ops/dispatch.hpp"
#include "ops/registry.hpp"

namespace {

using kjit::ops::FlashForward;
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

void write_database(const std::string& path) {
  std::filesystem::remove(path);
  kjit::tuning::TuningDb db(path, kjit::tuning::TuningDb::Mode::ReadWrite);
  const std::string hash = kjit::ops::find_family("attention")->template_hash();
  const auto [major, minor] = kjit::nvrtc_version();
  for (int s : {2048, 4096, 8192, 16384, 32768}) {
    for (int b : {1, 2, 4, 8}) {
      for (int causal : {0, 1}) {
        kjit::tuning::Best r;
        r.key = {"attention",
                 hash,
                 fmt::format("B={};D=128;Hk=8;Hq=32;Sk={};Sq={};causal={}", b, s, s, causal),
                 "bf16",
                 "sm_90a",
                 fmt::format("{}.{}", major, minor)};
        r.config = R"({"block_m":128,"block_n":128,"m_tiles":1,"mainloop":90})";
        r.median_us = 10;
        r.provenance.origin = "tune";
        db.upsert_best(r, 0.03);
      }
    }
  }
}

// One iteration = one call with a shape never seen before in this process.
void ChooseDistinctVarlenShapes(benchmark::State& state) {
  const std::string path =
      (std::filesystem::temp_directory_path() / "kjit-choice-cost.sqlite").string();
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

}  // namespace

BENCHMARK_MAIN();

// `kjit tune` end to end on the GPU: killed mid-run it loses nothing and resumes where it
// stopped; the stored winner is validated and not slower than the default beyond the margin;
// the op then uses it.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include <fmt/format.h>
#include "autotune/tuner.hpp"
#include "cache/tuning/tuning_db.hpp"

#include "kjit/error.hpp"
#include "kjit/jit.hpp"
#include "ops/registry.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/temp_dir.hpp"

namespace kjit::test {
namespace {

using tuning::TuningDb;

TEST(Tune, KilledMidRunResumesAndStoresAValidatedWinner) {
  KJIT_REQUIRE_GPU();
  TempDir dir;
  const std::string db_path = (dir.path() / "tuning.sqlite").string();
  const std::vector<std::pair<std::string, std::string>> env{
      {"KJIT_TUNING_DB", db_path}, {"KJIT_CACHE_DIR", (dir.path() / "kernels").string()}};
  const std::vector<std::string> args{cli_path(), "tune", "--shape", "D=128,N=4,rows=8192",
                                      "--dtype",  "bf16"};
  const ops::TuneCase tune_case{{{"D", 128}, {"N", 4}, {"rows", 8192}}, DType::BFloat16};
  const int valid = autotune::enumerate(*ops::find_family("merge_states"), tune_case,
                                        device_info(current_device()).arch())
                        .valid;

  auto trials = [&] {
    try {
      return TuningDb(db_path, TuningDb::Mode::ReadOnly).stats().trials;
    } catch (const Error&) {
      return std::int64_t{0};  // not created yet
    }
  };
  {
    Subprocess first(args, env);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (trials() < 6 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    first.kill();
    const ProcessResult r = first.wait();
    ASSERT_EQ(r.exit_code, 128 + 9)
        << "the run ended before it could be killed: " << r.out << r.err;
  }
  const std::int64_t before = trials();
  ASSERT_GE(before, 6);
  ASSERT_LT(before, valid) << "killed too late to test resuming";

  const ProcessResult r = run_process(args, env);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  std::printf("%s", r.out.c_str());
  // Resumed: the trials of the killed run were kept and not measured again.
  EXPECT_NE(r.out.find(fmt::format("/{}/", before)), std::string::npos) << r.out;
  TuningDb db(db_path, TuningDb::Mode::ReadOnly);
  EXPECT_EQ(db.stats().trials, valid) << "every valid config has exactly one trial";
  const tuning::TuningKey key{"merge_states",
                              ops::find_family("merge_states")->template_hash(),
                              "D=128;N=4;rows=8192",
                              "bf16",
                              device_info(current_device()).arch(),
                              fmt::format("{}.{}", nvrtc_version().first, nvrtc_version().second)};
  const std::optional<tuning::Best> best = db.best(key);
  ASSERT_TRUE(best);
  EXPECT_TRUE(best->verified);
  ASSERT_TRUE(best->default_us);
  EXPECT_LE(best->median_us, *best->default_us * 1.03) << "winner slower than the default";
  for (const tuning::Trial& t : db.trials(key)) {
    if (t.config == best->config) {
      EXPECT_EQ(t.status, "ok");
    }
  }
}

}  // namespace
}  // namespace kjit::test

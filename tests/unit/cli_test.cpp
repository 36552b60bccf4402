// The kjit command line, run as a separate process: output, exit codes and behaviour without a
// CUDA driver (forced with KJIT_LIBCUDA pointing at no library, so it holds on GPU machines too).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "kjit/jit.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/temp_dir.hpp"

namespace kjit::test {
namespace {

class CliTest : public ::testing::Test {
 protected:
  ProcessResult kjit(std::vector<std::string> args,
                     std::vector<std::pair<std::string, std::string>> env = {}) {
    args.insert(args.begin(), cli_path());
    env.emplace_back("KJIT_CACHE_DIR", cache_.str());
    env.emplace_back("KJIT_LIBCUDA", "/nonexistent/libcuda.so.1");
    return run_process(args, env);
  }
  TempDir cache_;
};

TEST_F(CliTest, InfoRunsWithoutADriver) {
  const ProcessResult r = kjit({"info"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("kjit " + kjit::version()), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("NVRTC 13."), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("driver: none (no CUDA driver found"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("kernel store: " + cache_.str() + "/v2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("counters (this process)"), std::string::npos) << r.out;
}

TEST_F(CliTest, InfoJson) {
  const ProcessResult r = kjit({"info", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["kjit"], kjit::version());
  EXPECT_FALSE(j["driver"]["available"].get<bool>());
  EXPECT_EQ(j["kernel_store"]["entries"], 0);
  EXPECT_GE(j["templates"]["embedded"].get<int>(), 5);
}

TEST_F(CliTest, HelpEverywhere) {
  for (auto args : std::vector<std::vector<std::string>>{{"--help"},
                                                         {"info", "--help"},
                                                         {"cache", "--help"},
                                                         {"cache", "stats", "--help"},
                                                         {"precompile", "--help"}}) {
    const ProcessResult r = kjit(args);
    EXPECT_EQ(r.exit_code, 0) << args[0];
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << args[0] << ": " << r.out;
  }
}

TEST_F(CliTest, UserErrorsExitOneWithAReason) {
  ProcessResult r = kjit({"frobnicate"});
  EXPECT_EQ(r.exit_code, 1);
  r = kjit({"precompile"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("pass --arch"), std::string::npos) << r.err;
  r = kjit({"cache", "stats"}, {{"KJIT_CACHE", "sometimes"}});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("KJIT_CACHE=\"sometimes\""), std::string::npos) << r.err;
  r = kjit({"precompile", "--arch", "sm_90a", "--family", "nosuchfamily"});
  EXPECT_EQ(r.exit_code, 1);
}

TEST_F(CliTest, PrecompileThenStatsThenClear) {
  ProcessResult r = kjit({"precompile", "--arch", "sm_90a", "--check", "-j", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("kjit::samples::mma_gemm<__nv_bfloat16"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0 failed"), std::string::npos) << r.out;
  r = kjit({"cache", "stats", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto stats = nlohmann::json::parse(r.out);
  EXPECT_GE(stats["entries"].get<int>(), 6);
  r = kjit({"precompile", "--arch", "sm_90a"});
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("0 compiled"), std::string::npos)
      << "second run is all disk hits: " << r.out;
  r = kjit({"cache", "clear"});
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("removed " + std::to_string(stats["entries"].get<int>())), std::string::npos)
      << r.out;
  r = kjit({"cache", "stats", "--json"});
  EXPECT_EQ(nlohmann::json::parse(r.out)["entries"], 0);
}

}  // namespace
}  // namespace kjit::test

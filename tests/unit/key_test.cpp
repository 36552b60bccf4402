// The cache key changes when any input that changes the compiled bytes changes, and is the same
// across processes for the same inputs.
#include <gtest/gtest.h>

#include "kjit/jit.hpp"
#include "tests/support/isolated_cache.hpp"
#include "tests/support/subprocess.hpp"
#include "tests/support/write_file.hpp"

namespace kjit::test {
namespace {

class KeyTest : public IsolatedCache {
 protected:
  void SetUp() override {
    IsolatedCache::SetUp();
    write_file(tree_.path() / "demo/main.cuh",
               "#include \"demo/dep.cuh\"\ntemplate <int N> __global__ void k(int* p) { p[0] = "
               "N + dep(); }\n");
    write_file(tree_.path() / "demo/dep.cuh", "__device__ int dep() { return 1; }\n");
    set_env("KJIT_TEMPLATE_DIR", tree_.str());
  }
  static KernelSpec spec() {
    KernelSpec s(Source::embedded("demo/main.cuh"), {"k<1>"});
    s.arch = "sm_90a";
    s.defines = {{"A", "1"}, {"B", "2"}};
    s.options = {"-O3"};
    return s;
  }
  TempDir tree_;
};

TEST_F(KeyTest, SameInputsSameKey) {
  EXPECT_EQ(cache_key(spec()), cache_key(spec()));
}

TEST_F(KeyTest, DefineOrderDoesNotMatter) {
  KernelSpec a = spec(), b = spec();
  b.defines = {{"B", "2"}, {"A", "1"}};
  EXPECT_EQ(cache_key(a), cache_key(b));
}

TEST_F(KeyTest, EveryInputChangesTheKey) {
  const CacheKey base = cache_key(spec());
  auto expect_changed = [&](const KernelSpec& s, const char* what) {
    EXPECT_NE(cache_key(s), base) << what;
  };
  KernelSpec s = spec();
  s.arch = "sm_80";
  expect_changed(s, "arch");
  s = spec();
  s.name_expressions = {"k<2>"};
  expect_changed(s, "name expression");
  s = spec();
  s.options = {"-O2"};
  expect_changed(s, "option");
  s = spec();
  s.defines[0].second = "3";
  expect_changed(s, "define value");
  {
    ScopedEnv debug("KJIT_DEBUG", "lineinfo");
    expect_changed(spec(), "KJIT_DEBUG");
  }
  const std::string main_text = read_file(tree_.path() / "demo/main.cuh");
  write_file(tree_.path() / "demo/main.cuh", main_text + " ");
  expect_changed(spec(), "one byte of the template");
  write_file(tree_.path() / "demo/main.cuh", main_text);
  EXPECT_EQ(cache_key(spec()), base) << "restoring the template restores the key";
  write_file(tree_.path() / "demo/dep.cuh", "__device__ int dep() { return 2; }\n");
  expect_changed(spec(), "an included header");
}

TEST_F(KeyTest, RuntimeClosureHashMatchesBuildTimeHash) {
  // With KJIT_TEMPLATE_DIR set the closure is hashed at run time; for the same bytes it must
  // equal the hash computed when the template was embedded, or overriding would always miss.
  KernelSpec s(Source::embedded("samples/saxpy.cuh"), {"kjit::samples::saxpy<float>"});
  s.arch = "sm_90a";
  CacheKey with_override;
  {
    ScopedEnv none("KJIT_TEMPLATE_DIR", std::nullopt);
    with_override = cache_key(s);
  }
  // The demo tree has no samples/: it falls back to the embedded copy, so the key matches.
  EXPECT_EQ(cache_key(s), with_override);
}

TEST_F(KeyTest, IdenticalAcrossProcesses) {
  KernelSpec s(Source::embedded("samples/saxpy.cuh"), {"kjit::samples::saxpy<float>"});
  s.arch = "sm_90a";
  s.defines = {{"A", "1"}};
  ScopedEnv none("KJIT_TEMPLATE_DIR", std::nullopt);
  const std::string expected = cache_key(s).hex();
  for (int i = 0; i < 2; ++i) {
    ProcessResult r = run_process({test_helper_path(), "key"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, expected + "\n");
  }
}

TEST(CacheKeyHex, RoundTrips) {
  const CacheKey k{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  EXPECT_EQ(k.hex(), "0123456789abcdeffedcba9876543210");
  EXPECT_EQ(CacheKey::from_hex(k.hex()), k);
  EXPECT_FALSE(CacheKey::from_hex("xyz"));
  EXPECT_FALSE(CacheKey::from_hex("0123456789ABCDEFfedcba9876543210"));
}

}  // namespace
}  // namespace kjit::test

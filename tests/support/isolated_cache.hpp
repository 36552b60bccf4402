// Test fixtures: IsolatedCache gives each test its own kernel-store folder and default JIT
// settings (the templates of KJIT_TEST_TEMPLATE_DIR where it is set), and starts it with an
// empty in-memory cache. SharedKernelStore, for the op suites, keeps the settings but shares one
// store folder and the in-memory cache across the test program: a parametrised suite then
// compiles each kernel once rather than once a case (the GPU suites' time went to compiling).
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "kjit/jit.hpp"
#include "tests/support/scoped_env.hpp"
#include "tests/support/temp_dir.hpp"

namespace kjit::test {

class IsolatedCache : public ::testing::Test {
 protected:
  IsolatedCache() = default;
  explicit IsolatedCache(const TempDir& shared_store) : shared_store_(&shared_store) {}

  void SetUp() override {
    if (!shared_store_) kjit::clear_memory_cache();
    for (const char* var : {"KJIT_CACHE", "KJIT_NO_JIT", "KJIT_DUMP_DIR", "KJIT_DEBUG",
                            "KJIT_TEMPLATE_DIR", "KJIT_CACHE_MAX_BYTES"}) {
      envs_.push_back(std::make_unique<ScopedEnv>(var, std::nullopt));
    }
    envs_.push_back(std::make_unique<ScopedEnv>(
        "KJIT_CACHE_DIR", (shared_store_ ? *shared_store_ : cache_dir_).str()));
    // A template variant under test (scripts/gpu-ab.sh) reaches every test through this one.
    if (const char* variant = std::getenv("KJIT_TEST_TEMPLATE_DIR"))
      envs_.push_back(std::make_unique<ScopedEnv>("KJIT_TEMPLATE_DIR", std::string(variant)));
  }
  void TearDown() override {
    if (!shared_store_) kjit::clear_memory_cache();
    while (!envs_.empty())
      envs_.pop_back();  // restore in reverse order of setting
  }

  void set_env(const std::string& name, const std::optional<std::string>& value) {
    envs_.push_back(std::make_unique<ScopedEnv>(name, value));
  }

  TempDir cache_dir_;
  std::vector<std::unique_ptr<ScopedEnv>> envs_;

 private:
  const TempDir* shared_store_ = nullptr;
};

class SharedKernelStore : public IsolatedCache {
 protected:
  SharedKernelStore() : IsolatedCache(program_store()) {}

 private:
  static const TempDir& program_store() {
    static const TempDir store;
    return store;
  }
};

}  // namespace kjit::test

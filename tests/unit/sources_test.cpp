// Kernel sources other than the embedded tree: user files with their own headers, strings, and
// KJIT_TEMPLATE_DIR overrides.
#include <gtest/gtest.h>

#include "kjit/jit.hpp"
#include "tests/support/isolated_cache.hpp"
#include "tests/support/write_file.hpp"

namespace kjit::test {
namespace {

class SourcesTest : public IsolatedCache {};

TEST_F(SourcesTest, UserFileWithLocalHeaderAndKjitHeader) {
  TempDir dir;
  write_file(dir.path() / "my_kernel.cu",
             "#include \"my_helpers.h\"\n#include \"common/indexing.cuh\"\n"
             "__global__ void fill(int* p) { p[kjit::global_thread_index()] = helper(); }\n");
  write_file(dir.path() / "my_helpers.h", "__device__ int helper() { return 7; }\n");
  KernelSpec spec(Source::file((dir.path() / "my_kernel.cu").string()), {"fill"});
  spec.arch = "sm_90a";
  const CacheKey before = cache_key(spec);
  const CompiledProgram p = compile(spec);
  EXPECT_EQ(p.kernels.at(0).lowered_name, "_Z4fillPi");
  write_file(dir.path() / "my_helpers.h", "__device__ int helper() { return 8; }\n");
  EXPECT_NE(cache_key(spec), before) << "the user's own header is part of the key";
}

TEST_F(SourcesTest, MissingUserFileIsAClearError) {
  KernelSpec spec(Source::file("/nonexistent/kernel.cu"), {"k"});
  spec.arch = "sm_90a";
  try {
    compile(spec);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/kernel.cu"), std::string::npos);
  }
}

TEST_F(SourcesTest, TemplateDirOverridesOneFileAndFallsBackForTheRest) {
  TempDir tree;
  // Override saxpy.cuh only; its include of common/indexing.cuh still comes from the library.
  write_file(tree.path() / "samples/saxpy.cuh",
             "#include \"common/indexing.cuh\"\nnamespace kjit::samples {\n"
             "template <class T> __global__ void saxpy(long long n, T a, const T* x, T* y) {\n"
             "  long long i = global_thread_index(); if (i < n) y[i] = a * x[i] - y[i]; }\n}\n");
  KernelSpec spec(Source::embedded("samples/saxpy.cuh"), {"kjit::samples::saxpy<float>"});
  spec.arch = "sm_90a";
  const CacheKey embedded_key = cache_key(spec);
  set_env("KJIT_TEMPLATE_DIR", tree.str());
  EXPECT_NE(cache_key(spec), embedded_key);
  TempDir dump;
  set_env("KJIT_DUMP_DIR", dump.str());
  compile(spec);
  const std::string compiled =
      read_file(dump.path() / cache_key(spec).hex() / "source/samples/saxpy.cuh");
  EXPECT_NE(compiled.find("- y[i]"), std::string::npos) << "the override was not compiled";
}

TEST_F(SourcesTest, StringSourceCompiles) {
  KernelSpec spec(Source::string("inline.cu",
                                 "extern \"C\" __global__ void plain(float* p) { "
                                 "p[threadIdx.x] *= 2.f; }\n"),
                  {"plain"});
  spec.arch = "sm_80";
  const CompiledProgram p = compile(spec);
  EXPECT_EQ(p.kernels.at(0).lowered_name, "plain");
}

TEST_F(SourcesTest, SeveralNameExpressionsInOneProgram) {
  KernelSpec spec(Source::embedded("samples/saxpy.cuh"),
                  {"kjit::samples::saxpy<float>", "kjit::samples::saxpy<double>",
                   "kjit::samples::empty_kernel"});
  spec.arch = "sm_90a";
  const CompiledProgram p = compile(spec);
  ASSERT_EQ(p.kernels.size(), 3u);
  EXPECT_EQ(p.kernels[0].parameter_count, 4);
  EXPECT_EQ(p.kernels[2].parameter_count, 0);
  EXPECT_EQ(p.kernels[1].name_expression, "kjit::samples::saxpy<double>");
  EXPECT_NE(p.kernels[0].lowered_name, p.kernels[1].lowered_name);
  EXPECT_EQ(p.kernels[2].lowered_name, "_ZN4kjit7samples12empty_kernelEv");
}

// Every header NVRTC reads is in the key: an edit is a recompile, never a stale disk hit, for
// an absolute quoted include, a quoted include found through the caller's -I, and an angle
// include found there.
TEST_F(SourcesTest, EditedHeadersOutsideTheTreeAreRecompiled) {
  TempDir dir;
  const std::string header = (dir.path() / "inc" / "val.h").string();
  struct Mode {
    const char* name;
    std::string include;
    bool with_dash_i;
  };
  for (const Mode& mode :
       {Mode{"absolute", "\"" + header + "\"", false}, Mode{"quoted via -I", "\"val.h\"", true},
        Mode{"angle via -I", "<val.h>", true}}) {
    KernelSpec spec(Source::string("stale.cu", "#include " + mode.include +
                                                   "\nextern \"C\" __global__ void k(int* o) { "
                                                   "*o = VALUE; }\n"),
                    {"k"});
    spec.arch = "sm_90a";
    if (mode.with_dash_i) spec.options = {"-I" + (dir.path() / "inc").string()};
    for (const std::uint32_t value : {0x11223344u, 0x55667788u}) {
      write_file(header, "#define VALUE " + std::to_string(value) + "\n");
      clear_memory_cache();
      Origin origin{};
      const CompiledProgram p = compile(spec, &origin);
      EXPECT_EQ(origin, Origin::Compiled) << mode.name << ": an edited header served from disk";
      const std::string bytes(reinterpret_cast<const char*>(&value), 4);
      EXPECT_NE(p.cubin.find(bytes), std::string::npos) << mode.name << ": stale value compiled";
    }
  }
}

// A template cannot reach files outside the tree: not with "..", and not through the working
// directory (NVRTC would look there for what kjit does not resolve). Neither is read or quoted.
TEST_F(SourcesTest, TemplatesCannotIncludeFromOutsideTheTreeOrTheWorkingDirectory) {
  TempDir tree, cwd;
  write_file(cwd.path() / "secret.h", "SECRET_MARKER_7f3a\n");
  const std::string up = "../../../../../../../../.." + cwd.str() + "/secret.h";
  write_file(tree.path() / "samples/saxpy.cuh", "#include \"" + up + "\"\n");
  write_file(tree.path() / "samples/shared_reverse.cuh", "#include \"secret.h\"\n");
  set_env("KJIT_TEMPLATE_DIR", tree.str());
  const std::filesystem::path old_cwd = std::filesystem::current_path();
  std::filesystem::current_path(cwd.path());
  for (const char* name : {"samples/saxpy.cuh", "samples/shared_reverse.cuh"}) {
    KernelSpec spec(Source::embedded(name), {"k"});
    spec.arch = "sm_90a";
    try {
      compile(spec);
      ADD_FAILURE() << name << " compiled";
    } catch (const CompileError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("kjit: cannot resolve"), std::string::npos) << what;
      EXPECT_EQ(what.find("SECRET_MARKER"), std::string::npos) << "a file outside was read";
    }
  }
  std::filesystem::current_path(old_cwd);
}

TEST_F(SourcesTest, TwoHeadersUnderOneNameAreRefused) {
  TempDir dir;
  write_file(dir.path() / "a/util.h", "#include \"../b/x.h\"\n#define A 1\n");
  write_file(dir.path() / "b/x.h", "#include \"util.h\"\n");
  write_file(dir.path() / "b/util.h", "#define B 2\n");
  write_file(dir.path() / "k.cu", "#include \"a/util.h\"\n#include \"util.h\"\n");
  write_file(dir.path() / "util.h", "#define C 3\n");
  KernelSpec spec(Source::file((dir.path() / "k.cu").string()), {"k"});
  spec.arch = "sm_90a";
  try {
    cache_key(spec);
    FAIL() << "two util.h accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("two different headers are included as \"util.h\""),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace kjit::test

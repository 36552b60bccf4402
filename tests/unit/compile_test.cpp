// NVRTC compilation without a GPU: every shipped specialisation for sm_80 and sm_90a within the
// resource rules, compile errors with their structured parts, the ptxas report parser.
#include <gtest/gtest.h>

#include <cctype>
#include <fstream>
#include <string>

#include "kjit/jit.hpp"
#include "nvrtc/compiler.hpp"
#include "nvrtc/ptxas_report.hpp"
#include "ops/attention/flash_forward.hpp"
#include "ops/attention/flash_grouped_forward.hpp"
#include "ops/registry.hpp"
#include "tests/support/isolated_cache.hpp"

namespace kjit::test {
namespace {

struct ShippedCase {
  std::string family;
  KernelSpec spec;
};

void PrintTo(const ShippedCase& c, std::ostream* os) {
  *os << c.spec.describe();
}

std::vector<ShippedCase> shipped_cases() {
  std::vector<ShippedCase> out;
  for (const char* arch : {"sm_80", "sm_90a"}) {
    for (ops::ShippedSpecs& f : ops::shipped(arch)) {
      for (KernelSpec& s : f.specs)
        out.push_back({f.family, std::move(s)});
    }
  }
  return out;
}

class ShippedSpecialisation : public IsolatedCache,
                              public ::testing::WithParamInterface<ShippedCase> {};

TEST_P(ShippedSpecialisation, CompilesWithoutSpillsOrStack) {
  const KernelSpec& spec = GetParam().spec;
  Origin origin{};
  const CompiledProgram p = compile(spec, &origin);
  EXPECT_EQ(origin, Origin::Compiled);
  EXPECT_EQ(p.arch, spec.arch);
  ASSERT_EQ(p.kernels.size(), spec.name_expressions.size());
  // A cubin is an ELF file.
  ASSERT_GT(p.cubin.size(), 4u);
  EXPECT_EQ(p.cubin.substr(0, 4),
            "\x7f"
            "ELF");
  for (const CompiledKernel& k : p.kernels) {
    EXPECT_FALSE(k.lowered_name.empty());
    EXPECT_GT(k.resources.registers, 0) << k.name_expression << ": no ptxas report parsed";
    EXPECT_LE(k.resources.registers, 255);
    EXPECT_EQ(k.resources.spill_store_bytes, 0) << k.name_expression;
    EXPECT_EQ(k.resources.spill_load_bytes, 0) << k.name_expression;
    EXPECT_EQ(k.resources.stack_frame_bytes, 0) << k.name_expression;
    EXPECT_EQ(k.resources.serialized_wgmma, 0) << k.name_expression;
  }
}

INSTANTIATE_TEST_SUITE_P(AllArchs, ShippedSpecialisation, ::testing::ValuesIn(shipped_cases()),
                         [](const ::testing::TestParamInfo<ShippedCase>& info) {
                           std::string name = info.param.family + "_" + info.param.spec.arch + "_" +
                                              info.param.spec.name_expressions.front();
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name + "_" + std::to_string(info.index);
                         });

// The warp-specialised forward (the sm_90a default; the shipped specs cover the defaults) and
// its overlap loops (one over persistent blocks): every head dim, both dtypes, causal or not,
// for sm_90a, within the registers the producer gives the consumers (setmaxnreg), with no
// serialised wgmma (hd 256 had both until P V became one wide wgmma a step); in bf16 also every
// other key tile valid() offers (FA3's). The grouped kernel too (the grouped default and the
// overlap), up to hd 192.
class WarpSpecialisedForward : public IsolatedCache {};

// The kernel of `spec` fits its registers: no spills, no stack, no serialised wgmma, and the
// launch share of `threads` (setmaxnreg moves registers within it: 65536 / threads, in
// multiples of 8).
void expect_fits(const KernelSpec& spec, unsigned threads) {
  const CompiledProgram p = compile(spec);
  ASSERT_EQ(p.kernels.size(), 1u);
  const CompiledKernel& k = p.kernels[0];
  EXPECT_EQ(k.resources.spill_store_bytes, 0) << k.name_expression;
  EXPECT_EQ(k.resources.spill_load_bytes, 0) << k.name_expression;
  EXPECT_EQ(k.resources.stack_frame_bytes, 0) << k.name_expression;
  // A branch the compiler cannot prove warp-uniform around a wgmma serialises it (C7520).
  EXPECT_EQ(k.resources.serialized_wgmma, 0) << k.name_expression;
  EXPECT_EQ(k.resources.registers, static_cast<int>(65536 / threads / 8 * 8)) << k.name_expression;
}

TEST_F(WarpSpecialisedForward, CompilesWithoutSpillsOrStack) {
  using ops::FlashForward;
  for (DType dtype : {DType::Float16, DType::BFloat16}) {
    for (std::int64_t d : {64, 128, 192, 256}) {
      for (bool causal : {false, true}) {
        const FlashForward::Problem problem{dtype, 1, 1, 1, d, 1, 1, causal};
        const FlashForward::Config config = FlashForward::warp_specialized_config(problem);
        for (std::int64_t loop :
             {FlashForward::kMainloopWgmmaWs, FlashForward::kMainloopWgmmaWsOverlap,
              FlashForward::kMainloopWgmmaWsPersistent}) {
          for (std::int64_t n : FlashForward::kWsBlockNs) {
            FlashForward::Config tile = config;
            tile.mainloop = loop;
            tile.block_n = n;
            if (n == config.block_n) {
              ASSERT_TRUE(FlashForward::valid(tile, problem, "sm_90a")) << d;
            } else if (dtype == DType::Float16 || !FlashForward::valid(tile, problem, "sm_90a")) {
              continue;
            }
            expect_fits(FlashForward::spec(tile, problem, "sm_90a"), tile.threads());
          }
        }
        // The grouped kernel at the grouped default's tile (two consumer warpgroups, up to hd
        // 192): the overlap loop (the default) and loop 91.
        const ops::GroupedForward::Problem grouped{dtype, 2, 1, 1, 1, d, 1, 1, causal};
        for (std::int64_t loop :
             {FlashForward::kMainloopWgmmaWs, FlashForward::kMainloopWgmmaWsOverlap}) {
          ops::GroupedForward::Config grouped_config =
              ops::GroupedForward::default_config(grouped, "sm_90a");
          grouped_config.mainloop = loop;
          ASSERT_EQ(ops::GroupedForward::valid(grouped_config, grouped, "sm_90a"), d <= 192) << d;
          if (d <= 192) {
            expect_fits(ops::GroupedForward::spec(grouped_config, grouped, "sm_90a"),
                        grouped_config.threads());
          }
        }
      }
    }
  }
}

class CompileErrors : public IsolatedCache {};

TEST_F(CompileErrors, CarryLogOptionsAndNumberedExcerpt) {
  KernelSpec spec(Source::string("broken.cu",
                                 "// line 1\n"
                                 "__global__ void k(int* p) {\n"
                                 "  p[0] = undefined_name;\n"
                                 "}\n"),
                  {"k"});
  spec.arch = "sm_90a";
  const std::uint64_t compiles_before = counters().compiles;
  try {
    compile(spec);
    FAIL() << "a program with an undefined identifier compiled";
  } catch (const CompileError& e) {
    EXPECT_NE(e.log.find("undefined_name"), std::string::npos) << e.log;
    EXPECT_NE(e.log.find("broken.cu(3)"), std::string::npos) << e.log;
    bool has_arch = false;
    for (const std::string& o : e.options)
      has_arch |= o == "--gpu-architecture=sm_90a";
    EXPECT_TRUE(has_arch);
    EXPECT_NE(e.excerpt.find(">     3 |   p[0] = undefined_name;"), std::string::npos) << e.excerpt;
    EXPECT_NE(e.excerpt.find("      2 | __global__"), std::string::npos) << e.excerpt;
    const std::string what = e.what();
    EXPECT_NE(what.find("--- log ---"), std::string::npos);
    EXPECT_NE(what.find("--gpu-architecture=sm_90a"), std::string::npos);
    EXPECT_NE(what.find(">     3 |"), std::string::npos);
  }
  EXPECT_EQ(counters().compiles, compiles_before) << "a failed compile is not counted";
}

TEST_F(CompileErrors, ErrorInAnIncludedHeaderShowsThatHeader) {
  KernelSpec spec(Source::string("uses_header.cu",
                                 "#include \"common/indexing.cuh\"\n"
                                 "#include \"broken/h.cuh\"\n"
                                 "__global__ void k() {}\n"),
                  {"k"});
  spec.arch = "sm_80";
  TempDir tree;
  std::filesystem::create_directories(tree.path() / "broken");
  std::ofstream(tree.path() / "broken/h.cuh") << "// header\nint x = ;\n";
  ScopedEnv dir("KJIT_TEMPLATE_DIR", tree.str());
  try {
    compile(spec);
    FAIL() << "compiled a header with a syntax error";
  } catch (const CompileError& e) {
    EXPECT_NE(e.excerpt.find("broken/h.cuh"), std::string::npos) << e.excerpt;
    EXPECT_NE(e.excerpt.find(">     2 | int x = ;"), std::string::npos) << e.excerpt;
  }
}

TEST_F(CompileErrors, UnknownTemplateListsTheEmbeddedOnes) {
  KernelSpec spec(Source::embedded("nope/missing.cuh"), {"k"});
  spec.arch = "sm_90a";
  try {
    compile(spec);
    FAIL();
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("nope/missing.cuh"), std::string::npos);
    EXPECT_NE(what.find("samples/saxpy.cuh"), std::string::npos);
  }
}

TEST_F(CompileErrors, BadSpecsAreRejectedBeforeNvrtc) {
  KernelSpec no_names(Source::embedded("samples/saxpy.cuh"), {});
  no_names.arch = "sm_90a";
  EXPECT_THROW(compile(no_names), Error);
  KernelSpec bad_arch(Source::embedded("samples/saxpy.cuh"), {"kjit::samples::empty_kernel"});
  bad_arch.arch = "compute_90";
  EXPECT_THROW(compile(bad_arch), Error);
  KernelSpec bad_define = bad_arch;
  bad_define.arch = "sm_90a";
  bad_define.defines = {{"1X", "2"}};
  EXPECT_THROW(compile(bad_define), Error);
}

TEST(PtxasReport, ParsesEntryFunctions) {
  const char* log =
      "ptxas info    : (C7520) Potential Performance Loss: wgmma.mma_async instructions are "
      "serialized due to program dependence on compiler-inserted WG.AR in divergent path in the "
      "function '_Z1kPi'\n"
      "ptxas info    : 0 bytes gmem\n"
      "ptxas info    : Compiling entry function '_Z1kPi' for 'sm_90a'\n"
      "ptxas info    : Function properties for _Z1kPi\n"
      "    16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n"
      "ptxas info    : Used 40 registers, used 1 barriers, 4096 bytes smem, 380 bytes cmem[0]\n"
      "ptxas info    : Function properties for _Z6helperv\n"
      "    32 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
      "ptxas info    : Compiling entry function '_Z1gv' for 'sm_90a'\n"
      "ptxas info    : Function properties for _Z1gv\n"
      "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
      "ptxas info    : Used 8 registers, used 0 barriers, 356 bytes cmem[0]\n";
  const auto report = nvrtc::parse_ptxas_report(log);
  ASSERT_EQ(report.size(), 2u);
  const ResourceUsage& k = report.at("_Z1kPi");
  EXPECT_EQ(k.registers, 40);
  EXPECT_EQ(k.barriers, 1);
  EXPECT_EQ(k.static_shared_bytes, 4096);
  EXPECT_EQ(k.stack_frame_bytes, 16);
  EXPECT_EQ(k.spill_store_bytes, 8);
  EXPECT_EQ(k.spill_load_bytes, 4);
  EXPECT_TRUE(k.spills());
  EXPECT_EQ(k.serialized_wgmma, 1);
  const ResourceUsage& g = report.at("_Z1gv");
  EXPECT_EQ(g.serialized_wgmma, 0);
  EXPECT_EQ(g.registers, 8);
  EXPECT_EQ(g.static_shared_bytes, 0);
  EXPECT_FALSE(g.spills());
}

TEST(NumberedExcerpt, MarksTheLine) {
  EXPECT_EQ(nvrtc::numbered_excerpt("a\nb\nc\nd\n", 2, 1),
            "      1 | a\n>     2 | b\n      3 | c\n");
}

}  // namespace
}  // namespace kjit::test

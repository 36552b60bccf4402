// The MoE GEMM kernels compile for sm_90a without a GPU. The decode kernel
// (templates/moe/grouped_gemm_decode.cuh): for FP4 weights (both formats, every epilogue, both
// layouts, the depths the tuner tries) and 16-bit ones (bf16 likewise, fp16 in two instances),
// with two sets of warps and (fewer instances) one,
// within its launch bounds' registers: no spill, no stack frame (FP4 over the contiguous layout
// up to depth 4 within 85 registers, three blocks an SM, checked; the others within 128, two). The
// 16-bit prefill kernel at 256 columns (templates/moe/grouped_gemm.cuh, 128 accumulators a consumer
// thread, which takes registers from the producer): every epilogue, both layouts, both 16-bit
// types, without spills, stack or serialised wgmma.
#include <gtest/gtest.h>

#include "kjit/jit.hpp"
#include "ops/moe/grouped_gemm.hpp"
#include "tests/support/isolated_cache.hpp"

namespace kjit::test {
namespace {

class MoeGemmKernel : public IsolatedCache {};

// c for p at sm_90a: one kernel, checked for spills, a stack frame and serialised wgmma; its
// resources for a caller's register bound.
ResourceUsage compile_without_spills(const ops::MoeGemm::Config& c,
                                     const ops::MoeGemm::Problem& p) {
  const Arch sm90a("sm_90a");
  EXPECT_TRUE(ops::MoeGemm::valid(c, p, sm90a));
  const CompiledProgram program = compile(ops::MoeGemm::spec(c, p, sm90a), nullptr);
  EXPECT_EQ(program.kernels.size(), 1u);
  if (program.kernels.empty()) return {};
  const ResourceUsage& u = program.kernels[0].resources;
  const std::string& name = program.kernels[0].name_expression;
  EXPECT_FALSE(u.spills()) << name << ": " << u.summary();
  EXPECT_EQ(u.stack_frame_bytes, 0) << name;
  EXPECT_EQ(u.serialized_wgmma, 0) << name;
  return u;
}

TEST_F(MoeGemmKernel, DecodeInstancesCompileForSm90aWithoutSpills) {
  const Arch sm90a("sm_90a");
  int compiled = 0;
  const auto check = [&](DType dtype, std::int64_t weights, std::int64_t epilogue,
                         std::int64_t masked, std::int64_t loads, std::int64_t form = 1) {
    const ops::MoeGemm::Problem p{dtype, 256, 3072, 2048, 64, 64, epilogue, masked, weights};
    const ops::MoeGemm::Config c{64, loads, form};
    ASSERT_TRUE(ops::MoeGemm::valid(c, p, sm90a));
    Origin origin{};
    const CompiledProgram program = compile(ops::MoeGemm::spec(c, p, sm90a), &origin);
    ASSERT_EQ(program.kernels.size(), 1u);
    const ResourceUsage& u = program.kernels[0].resources;
    EXPECT_FALSE(u.spills()) << program.kernels[0].name_expression;
    EXPECT_EQ(u.stack_frame_bytes, 0) << program.kernels[0].name_expression;
    if (weights != ops::MoeGemm::kSameAsX && loads <= 4 && !masked) {
      EXPECT_LE(u.registers, 85) << program.kernels[0].name_expression;
    }
    ++compiled;
  };
  for (std::int64_t weights :
       {ops::MoeGemm::kNvFp4, ops::MoeGemm::kMxFp4, ops::MoeGemm::kSameAsX}) {
    for (std::int64_t epilogue : {0, 1, 2}) {
      for (std::int64_t masked : {0, 1}) {
        if (masked && epilogue == 2) continue;  // no routing weights in the masked layout
        for (std::int64_t loads : {2, 4, 6})
          check(DType::BFloat16, weights, epilogue, masked, loads);
      }
    }
  }
  check(DType::Float16, ops::MoeGemm::kSameAsX, 0, 0, 2);
  check(DType::Float16, ops::MoeGemm::kSameAsX, 1, 1, 3);
  // One set of warps (decode 2), at the depths the tuner tries, within the same registers.
  for (std::int64_t weights :
       {ops::MoeGemm::kNvFp4, ops::MoeGemm::kMxFp4, ops::MoeGemm::kSameAsX}) {
    for (std::int64_t loads : {2, 4, 6})
      check(DType::BFloat16, weights, 1, 0, loads, 2);
  }
  check(DType::BFloat16, ops::MoeGemm::kNvFp4, 2, 0, 2, 2);
  check(DType::BFloat16, ops::MoeGemm::kMxFp4, 0, 1, 2, 2);
  EXPECT_EQ(compiled, 58);
}

TEST_F(MoeGemmKernel, WideAndPersistentTilesCompileForSm90aWithoutSpills) {
  const Arch sm90a("sm_90a");
  int compiled = 0;
  for (DType dtype : {DType::BFloat16, DType::Float16}) {
    for (std::int64_t epilogue : {0, 1, 2}) {
      for (std::int64_t masked : {0, 1}) {
        if (masked && epilogue == 2) continue;  // no routing weights in the masked layout
        for (std::int64_t block_m : {64, 128}) {
          const ops::MoeGemm::Problem p{dtype, 4096, 3072, 2048, 64, block_m, epilogue, masked};
          // 256 columns per tile, and 128 and 256 in the persistent loop.
          for (const ops::MoeGemm::Config c :
               {ops::MoeGemm::Config{256, 4}, {128, 4, 0, 1}, {256, 4, 0, 1}}) {
            compile_without_spills(c, p);
            ++compiled;
          }
        }
      }
    }
  }
  EXPECT_EQ(compiled, 60);
  // FP4 weights take no persistent loop.
  const ops::MoeGemm::Problem fp4{DType::BFloat16,     4096, 3072, 2048, 64, 128, 0, 0,
                                  ops::MoeGemm::kNvFp4};
  EXPECT_FALSE(ops::MoeGemm::valid({128, 4, 0, 1}, fp4, sm90a));
}

// The FP4 prefill kernel at 256 weight rows (four consumer warpgroups, 640 threads at 96 registers,
// the producer's share moved to them through setmaxnreg): the epilogues the layer runs (SwiGLU,
// routing weights) in both formats and both block heights, and the plain one over blocks of 64,
// without spills, stack or serialised wgmma. The plain epilogue over blocks of 128 spills 52 bytes
// at the consumers' 112 registers; it is still the faster default there (kjit_bench_moe_gemm times
// that epilogue: 1.05-1.08x the 128 rows on the H100, docs/perf.md), and no layer path takes it.
TEST_F(MoeGemmKernel, Fp4At256WeightRowsCompilesForSm90aWithoutSpills) {
  int compiled = 0;
  for (std::int64_t weights : {ops::MoeGemm::kNvFp4, ops::MoeGemm::kMxFp4}) {
    for (std::int64_t epilogue : {0, 1, 2}) {
      for (std::int64_t block_m : {64, 128}) {
        if (epilogue == 0 && block_m == 128) continue;
        const ops::MoeGemm::Problem p{DType::BFloat16, 4096,     3072, 2048,   64,
                                      block_m,         epilogue, 0,    weights};
        // The default's 6 stages; the launch's share of registers at 640 threads.
        EXPECT_LE(compile_without_spills({256, 6}, p).registers, 96)
            << "weights " << weights << " epilogue " << epilogue << " block_m " << block_m;
        ++compiled;
      }
    }
  }
  EXPECT_EQ(compiled, 10);
}

// The FP4 prefill kernel over blocks of 64 token rows at 128 weight rows (the layer's GEMMs up to
// 64 pairs an expert, e.g. GLM at T 256 with 16): 384 threads within 80 registers, so that two
// blocks share an SM, every epilogue, both formats. Loading the routing weights of all 8 tiles at
// once took the kernel to 94 registers and the down projection to 0.79-0.81x on the H100
// (docs/perf.md).
TEST_F(MoeGemmKernel, Fp4Over64TokenRowsFitsTwoBlocksAnSm) {
  int compiled = 0;
  for (std::int64_t weights : {ops::MoeGemm::kNvFp4, ops::MoeGemm::kMxFp4}) {
    for (std::int64_t epilogue : {0, 1, 2}) {
      const ops::MoeGemm::Problem p{DType::BFloat16, 4096, 2048,   1536, 64, 64,
                                    epilogue,        0,    weights};
      EXPECT_LE(compile_without_spills({128, 6}, p).registers, 80)
          << "weights " << weights << " epilogue " << epilogue;
      ++compiled;
    }
  }
  EXPECT_EQ(compiled, 6);
}

// The FP4 prefill kernel over 256 token rows (align's blocks of 256; 128 accumulators a consumer
// thread): two consumers at 128 weight rows (384 threads launched at exactly 168 registers, the
// pool that 40 for the producer and 232 each for them through setmaxnreg need), every epilogue,
// both formats, at the default's stages and 4, without spills, stack or serialised wgmma. Other
// widths do not take it (64 weight rows, one consumer at 255 registers without setmaxnreg, spilled
// and serialised its wgmma).
TEST_F(MoeGemmKernel, Fp4Over256TokenRowsCompilesForSm90aWithoutSpills) {
  const Arch sm90a("sm_90a");
  int compiled = 0;
  for (std::int64_t weights : {ops::MoeGemm::kNvFp4, ops::MoeGemm::kMxFp4}) {
    for (std::int64_t epilogue : {0, 1, 2}) {
      const ops::MoeGemm::Problem p{DType::BFloat16, 81920, 3072,   2048, 64, 256,
                                    epilogue,        0,     weights};
      const ops::MoeGemm::Config chosen = ops::MoeGemm::default_config(p, sm90a);
      EXPECT_EQ(chosen.block_n, 128);
      for (const ops::MoeGemm::Config c : {chosen, ops::MoeGemm::Config{128, 4}}) {
        EXPECT_EQ(compile_without_spills(c, p).registers, 168) << "weights " << weights;
        ++compiled;
      }
      EXPECT_FALSE(ops::MoeGemm::valid({64, 4}, p, sm90a));
      EXPECT_FALSE(ops::MoeGemm::valid({256, 4}, p, sm90a));
    }
  }
  EXPECT_EQ(compiled, 12);
}

}  // namespace
}  // namespace kjit::test

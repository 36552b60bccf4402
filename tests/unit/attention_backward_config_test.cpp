// The attention backward on the host: its default config is valid on each arch (or refused with
// the sizes where no tile fits) and is the wgmma loop on sm_90a where that runs, deterministic
// problems never get the dq atomics, the config rules, the workspace sizes, and the validation of
// gradients and lse before any device work.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <string>

#include "driver/tensor_map.hpp"
#include "kjit/error.hpp"
#include "ops/attention/flash_backward.hpp"
#include "ops/attention/flash_forward.hpp"

namespace kjit::test {
namespace {

using ops::FlashBackward;
using Config = FlashBackward::Config;

FlashBackward::Problem problem(std::int64_t head_dim, bool causal, bool deterministic,
                               DType dtype = DType::BFloat16) {
  return {dtype, 2, 8, 2, head_dim, 300, 300, causal, deterministic};
}

TEST(AttentionBackwardConfig, DefaultIsValidOrRefusedWithTheSizes) {
  for (const char* arch : {"sm_80", "sm_86", "sm_90a"}) {
    for (std::int64_t d : ops::FlashForward::kHeadDims) {
      for (bool causal : {false, true}) {
        for (bool deterministic : {false, true}) {
          const FlashBackward::Problem p = problem(d, causal, deterministic);
          if (std::string(arch) == "sm_86" && d == 256) {
            try {
              FlashBackward::default_config(p, arch);
              ADD_FAILURE() << "hd 256 accepted on sm_86";
            } catch (const InvalidArgument& e) {
              EXPECT_NE(std::string(e.what()).find("shared memory"), std::string::npos);
            }
            continue;
          }
          const Config c = FlashBackward::default_config(p, arch);
          EXPECT_TRUE(FlashBackward::valid(c, p, arch)) << arch << " d=" << d;
          if (deterministic) {
            EXPECT_EQ(c.dq_atomic, 0) << arch << " d=" << d;
          }
        }
      }
    }
  }
}

TEST(AttentionBackwardConfig, DefaultIsTheWgmmaLoopWhereItRuns) {
  for (std::int64_t d : ops::FlashForward::kHeadDims) {
    for (bool deterministic : {false, true}) {
      const Config c = FlashBackward::default_config(problem(d, true, deterministic), "sm_90a");
      EXPECT_EQ(c.wgmma(), d == 64 || d == 128 || d == 256) << "d=" << d;
      EXPECT_FALSE(FlashBackward::default_config(problem(d, true, deterministic), "sm_80").wgmma());
    }
  }
}

TEST(AttentionBackwardConfig, Rules) {
  const FlashBackward::Problem p = problem(128, true, false);
  EXPECT_TRUE(FlashBackward::valid({80, 64, 64, 1}, p, "sm_90a"));
  EXPECT_FALSE(FlashBackward::valid({80, 64, 64, 1}, problem(128, true, true), "sm_90a"));
  EXPECT_FALSE(FlashBackward::valid({80, 64, 32, 0}, problem(96, false, false), "sm_90a"));
  EXPECT_FALSE(FlashBackward::valid({80, 32, 64, 0}, p, "sm_90a"));     // eight warps of 16 rows
  EXPECT_FALSE(FlashBackward::valid({80, 64, 64, 0, 2}, p, "sm_90a"));  // mma.sync: one stage
  EXPECT_FALSE(FlashBackward::valid({80, 128, 128, 0}, problem(256, false, false), "sm_90a"));
  // wgmma: sm_90a only; 128 keys (64 a warpgroup) up to hd 128, 64 shared above; 128 query
  // rows at hd 64 only (registers); hd 96 and 192 stay on mma.sync; 2 to 4 stages.
  EXPECT_TRUE(FlashBackward::valid({90, 64, 128, 1, 2}, p, "sm_90a"));
  EXPECT_TRUE(FlashBackward::valid({90, 64, 128, 1, 3}, p, "sm_90a"));
  EXPECT_FALSE(FlashBackward::valid({90, 64, 128, 1, 2}, p, "sm_80"));
  EXPECT_FALSE(FlashBackward::valid({90, 64, 128, 1, 1}, p, "sm_90a"));
  EXPECT_FALSE(FlashBackward::valid({90, 64, 64, 1, 2}, p, "sm_90a"));
  EXPECT_FALSE(FlashBackward::valid({90, 128, 128, 1, 2}, p, "sm_90a"));
  EXPECT_TRUE(FlashBackward::valid({90, 128, 128, 1, 3}, problem(64, true, false), "sm_90a"));
  EXPECT_TRUE(FlashBackward::valid({90, 64, 64, 0, 2}, problem(256, false, true), "sm_90a"));
  EXPECT_FALSE(FlashBackward::valid({90, 64, 64, 0, 3}, problem(256, false, true), "sm_90a"))
      << "three stages of hd 256 exceed 227 KiB";
  EXPECT_FALSE(FlashBackward::valid({90, 64, 128, 1, 2}, problem(96, false, false), "sm_90a"));
  EXPECT_FALSE(FlashBackward::valid({90, 64, 64, 1, 2}, problem(192, false, false), "sm_90a"));
  // Every config of the space fits sm_90a at hd 64.
  for (const Config& c : FlashBackward::space(problem(64, true, false), "sm_90a"))
    EXPECT_TRUE(FlashBackward::valid(c, problem(64, true, false), "sm_90a"));
}

TEST(AttentionBackwardConfig, WorkspaceHoldsStatsAndTheDqAccumulator) {
  // lse2 and dsum: rows x heads fp32 plus 136 floats of slack each; dq: rows x heads x D fp32;
  // each part 256-byte aligned.
  EXPECT_EQ(FlashBackward::workspace_bytes(100, 8, 128, true), 2u * 3840u);
  EXPECT_EQ(FlashBackward::workspace_bytes(100, 8, 128, false), 2u * 3840u + 409600u);
  EXPECT_EQ(FlashBackward::workspace_bytes(0, 8, 128, false), 0u);
  void* fake = reinterpret_cast<void*>(0x300000);
  const TensorView q(fake, DType::BFloat16, {2, 50, 8, 128});
  attention::BackwardOptions o;
  EXPECT_EQ(attention::backward_workspace_bytes(q, o),
            FlashBackward::workspace_bytes(100, 8, 128, false));
  EXPECT_THROW(attention::backward_workspace_bytes(TensorView(fake, DType::BFloat16, {8, 128}), o),
               InvalidArgument);
}

// The wgmma loop's tensor maps refuse, before asking the driver, what the copy engine cannot
// read; a dim of size 1 may carry any stride.
TEST(AttentionBackwardConfig, TensorMapsRefuseWhatTheCopyEngineCannotRead) {
  const auto refused = [](const void* base, std::array<std::uint64_t, 4> dims,
                          std::array<std::int64_t, 3> strides, const char* expected) {
    try {
      driver::tiled_map_16bit(base, dims, strides, {64, 64, 1, 1});
      ADD_FAILURE() << "accepted: " << expected;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    } catch (const Error&) {
      ADD_FAILURE() << "reached the driver: " << expected;
    }
  };
  const auto* base = reinterpret_cast<const void*>(0x10000);
  refused(reinterpret_cast<const void*>(0x10008), {128, 10, 4, 2}, {512, 128, 5120},
          "16-byte aligned");
  refused(base, {128, 10, 4, 2}, {516, 128, 5120}, "stride 1 (516 elements)");
  refused(base, {128, 10, 4, 2}, {512, 0, 5120}, "stride 2 (0 elements)");
  // B = 1 with a batch stride of 0 (packed inputs) passes these checks: only the driver is left,
  // which this machine may not have.
  try {
    driver::tiled_map_16bit(base, {128, 10, 4, 1}, {512, 128, 0}, {64, 64, 1, 1});
  } catch (const InvalidArgument& e) {
    ADD_FAILURE() << e.what();
  } catch (const Error&) {
  }
}

struct Grads {
  void* p = reinterpret_cast<void*>(0x400000);
  TensorView q{p, DType::BFloat16, {2, 100, 8, 128}};
  TensorView k{p, DType::BFloat16, {2, 120, 2, 128}};
  TensorView v{p, DType::BFloat16, {2, 120, 2, 128}};
  TensorView out{p, DType::BFloat16, {2, 100, 8, 128}};
  TensorView dout{p, DType::BFloat16, {2, 100, 8, 128}};
  TensorView lse{p, DType::Float32, {2, 8, 100}};
  TensorView dq{p, DType::BFloat16, {2, 100, 8, 128}};
  TensorView dk{p, DType::BFloat16, {2, 120, 2, 128}};
  TensorView dv{p, DType::BFloat16, {2, 120, 2, 128}};
};

std::string error_of(const Grads& g) {
  try {
    FlashBackward::validate(g.q, g.k, g.v, g.out, g.dout, g.lse, g.dq, g.dk, g.dv, {});
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

TEST(AttentionBackwardValidation, NamesEachBadInput) {
  EXPECT_EQ(error_of(Grads{}), "");
  const auto expect = [](Grads g, const char* needle) {
    const std::string e = error_of(g);
    EXPECT_NE(e.find(needle), std::string::npos) << "expected \"" << needle << "\" in: " << e;
  };
  Grads g;
  g.dq = TensorView(g.p, DType::Float16, {2, 100, 8, 128});
  expect(g, "dq");
  g = Grads{};
  g.dk = TensorView(g.p, DType::BFloat16, {2, 120, 8, 128});
  expect(g, "dk must have k's shape");
  g = Grads{};
  g.dout = TensorView(g.p, DType::BFloat16, {2, 99, 8, 128});
  expect(g, "dout must have out's shape");
  g = Grads{};
  g.lse = TensorView(nullptr, DType::Float32, {2, 8, 100});
  expect(g, "lse");
  g = Grads{};
  g.lse = TensorView(g.p, DType::Float32, {2, 100, 8});
  expect(g, "lse must be the forward's");
  g = Grads{};
  g.dv = TensorView(g.p, DType::BFloat16, {2, 120, 2, 128}, {30720, 256, 128, 2});
  expect(g, "dv");  // head dim not contiguous
}

TEST(AttentionBackwardValidation, FillsTheProblem) {
  attention::BackwardOptions o;
  o.causal = true;
  o.deterministic = true;
  const Grads g;
  const auto call =
      FlashBackward::validate(g.q, g.k, g.v, g.out, g.dout, g.lse, g.dq, g.dk, g.dv, o);
  EXPECT_EQ(call.problem.heads_q, 8);
  EXPECT_EQ(call.problem.heads_k, 2);
  EXPECT_EQ(call.args.group, 4);
  EXPECT_TRUE(call.problem.causal);
  EXPECT_TRUE(call.problem.deterministic);
  EXPECT_FLOAT_EQ(call.args.scale, 1.f / std::sqrt(128.f));
}

}  // namespace
}  // namespace kjit::test

// The input rules of the MoE router, of the tokens' permutation into the dispatch layout and back,
// of the experts' grouped GEMM and of the balance statistics, on the host (fake device pointers:
// validation does no device work): shapes, dtypes, alignment, top-k and group rules, each refusal
// naming what is wrong.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "kjit/error.hpp"
#include "ops/moe/align.hpp"
#include "ops/moe/balance.hpp"
#include "ops/moe/grouped_gemm.hpp"
#include "ops/moe/permute.hpp"
#include "ops/moe/router.hpp"

namespace kjit::test {
namespace {

void* fake(std::uintptr_t offset = 0) {
  return reinterpret_cast<void*>(0x200000 + offset);
}

struct Route {
  TensorView logits{fake(), DType::Float32, {10, 64}};
  TensorView bias{fake(), DType::Float32, {64}};
  TensorView ids{fake(), DType::Int32, {10, 4}};
  TensorView weights{fake(), DType::Float32, {10, 4}};
  moe::RouterOptions options{true, 4, 1, 1, true, 1.8f};
  ops::Call<ops::MoeRouter> check() const {
    return ops::MoeRouter::validate(logits, bias, ids, weights, options);
  }
};

// Case: anything with a check() that validates.
template <class Case>
void expect_refused(const Case& r, const std::string& says) {
  try {
    r.check();
    ADD_FAILURE() << "accepted; expected an error saying \"" << says << "\"";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
  }
}

TEST(MoeRouterValidation, AcceptsGlmAndDeepSeekRouters) {
  Route r;
  const auto call = r.check();
  EXPECT_EQ(call.problem.experts, 64);
  EXPECT_EQ(call.problem.top_k, 4);
  EXPECT_TRUE(call.problem.sigmoid);
  EXPECT_FLOAT_EQ(call.args.scaling, 1.8f);
  Route d;
  d.logits = TensorView(fake(), DType::BFloat16, {10, 256});
  d.bias = TensorView(fake(), DType::Float32, {256});
  d.ids = TensorView(fake(), DType::Int32, {10, 8});
  d.weights = TensorView(fake(), DType::Float32, {10, 8});
  d.options = {true, 8, 8, 4, true, 2.5f};
  EXPECT_NO_THROW(d.check());
  d.bias = TensorView();  // no bias
  EXPECT_NO_THROW(d.check());
}

TEST(MoeRouterValidation, RefusesBadTopKGroupsAndTensors) {
  Route r;
  r.options.top_k = 65;
  r.ids = TensorView(fake(), DType::Int32, {10, 65});
  r.weights = TensorView(fake(), DType::Float32, {10, 65});
  expect_refused(r, "top_k must be 1 to min(32, E = 64)");
  r = Route();
  r.options.groups = 3;
  expect_refused(r, "groups (3) must divide E (64)");
  r = Route();
  r.options.groups = 8;
  r.options.topk_groups = 9;
  expect_refused(r, "topk_groups (9)");
  r = Route();
  r.options.groups = 16;
  r.options.topk_groups = 1;  // 4 experts allowed, top-4: fine; top-5 is not
  EXPECT_NO_THROW(r.check());
  r.options.top_k = 5;
  r.ids = TensorView(fake(), DType::Int32, {10, 5});
  r.weights = TensorView(fake(), DType::Float32, {10, 5});
  expect_refused(r, "top_k 5 is more than the 4 experts of the 1 kept groups");
  r = Route();
  r.ids = TensorView(fake(), DType::Int64, {10, 4});
  expect_refused(r, "ids must be int32 [10, 4]");
  r = Route();
  r.weights = TensorView(fake(), DType::Float32, {9, 4});
  expect_refused(r, "weights must be fp32 [10, 4]");
  r = Route();
  r.bias = TensorView(fake(), DType::Float32, {63});
  expect_refused(r, "bias must be contiguous fp32 [64]");
  r = Route();
  r.logits = TensorView(fake(), DType::Int32, {10, 64});
  expect_refused(r, "logits must be fp32, bf16 or fp16");
  r = Route();
  r.logits = TensorView(fake(), DType::Float32, {10, 2000});
  expect_refused(r, "1 to 1024");
  r = Route();
  r.options.scaling = std::numeric_limits<float>::infinity();
  expect_refused(r, "scaling must be finite");
}

// align_capacity is the most rows any routing of the pairs pads to: reached when min(E, pairs)
// experts hold a pair and one of them all the rest, and never passed by random routings.
TEST(MoeAlignCapacity, IsTheWorstRoutingsPaddedTotal) {
  EXPECT_EQ(moe::align_capacity(40, 0, 64), 0);  // no experts: nothing to lay out
  std::mt19937 rng(5);
  for (int experts : {1, 8, 64, 256}) {
    for (int block : {1, 16, 64, 128}) {
      for (std::int64_t pairs : {0, 1, 4, 63, 64, 65, 256, 1000, 16384}) {
        const std::int64_t capacity = moe::align_capacity(pairs, experts, block);
        const auto padded = [&](std::int64_t c) { return (c + block - 1) / block * block; };
        const std::int64_t m = std::min<std::int64_t>(experts, pairs);
        EXPECT_EQ(capacity, pairs == 0 ? 0 : (m - 1) * block + padded(pairs - m + 1))
            << pairs << " pairs, " << experts << " experts, block " << block;
        for (int trial = 0; trial < 20; ++trial) {
          std::vector<std::int64_t> counts(experts, 0);
          const int hot = static_cast<int>(rng() % experts);  // skewed toward one expert
          for (std::int64_t i = 0; i < pairs; ++i)
            ++counts[rng() % 2 ? hot : static_cast<int>(rng() % experts)];
          std::int64_t total = 0;
          for (std::int64_t c : counts)
            total += padded(c);
          ASSERT_LE(total, capacity) << pairs << " pairs, " << experts << " experts";
        }
      }
    }
  }
}

// GLM-4.7-Flash's 10 tokens, top 4 of 64 experts, into a layout of `rows` rows of 64-row blocks.
struct Align {
  std::int64_t rows = moe::align_capacity(40, 64, 64);
  TensorView ids{fake(), DType::Int32, {10, 4}};
  ops::Call<ops::MoeAlign> check() const {
    return ops::MoeAlign::validate(
        ids, 64, 64,
        {TensorView(fake(), DType::Int32, {rows}), TensorView(fake(), DType::Int32, {rows / 64}),
         TensorView(fake(), DType::Int32, {64}), TensorView(fake(), DType::Int32, {65}),
         TensorView(fake(), DType::Int32, {1})});
  }
};

TEST(MoeAlignValidation, TakesAtLeastTheCapacityInWholeBlocks) {
  Align a;
  EXPECT_EQ(a.rows, 40 * 64);  // 40 pairs, each on its own expert at worst
  EXPECT_EQ(a.check().args.blocks, 40);
  // A layout sized once for more tokens (a CUDA graph's): padded to its end.
  a.rows = 64 * 64;
  EXPECT_EQ(a.check().args.blocks, 64);
  a.rows = 39 * 64;
  expect_refused(a, "sorted must hold at least align_capacity = 2560 rows for 40 pairs");
  a.rows = 40 * 64 + 10;
  expect_refused(a, "in whole blocks of 64");
  // A cluster's threads step by up to 8192 rows: the last step must not pass 2^31 - 1.
  a.rows = (1ll << 31) - 8192 - 64;
  EXPECT_EQ(a.check().args.blocks, a.rows / 64);
  a.rows = (1ll << 31) - 8192;
  expect_refused(a, "below 2^31 - 8192");
}

// GLM-4.7-Flash: 10 tokens, top 4 of 64 experts, hidden 2048, 64-row blocks.
struct Permute {
  std::int64_t rows = moe::align_capacity(40, 64, 64);
  TensorView x{fake(), DType::BFloat16, {10, 2048}};
  TensorView sorted{fake(), DType::Int32, {rows}};
  int top_k = 4;
  TensorView x_sorted{fake(), DType::BFloat16, {rows, 2048}};
  TensorView positions{fake(), DType::Int32, {40}};
  ops::Call<ops::MoePermute> check() const {
    return ops::MoePermute::validate(x, sorted, top_k, x_sorted, positions, true);
  }
};

struct Unpermute {
  std::int64_t rows = moe::align_capacity(40, 64, 64);
  TensorView y{fake(), DType::BFloat16, {rows, 2048}};
  TensorView positions{fake(), DType::Int32, {40}};
  int top_k = 4;
  TensorView weights{fake(), DType::Float32, {10, 4}};
  TensorView shared{fake(), DType::BFloat16, {10, 2048}};
  TensorView out{fake(), DType::BFloat16, {10, 2048}};
  ops::Call<ops::MoeUnpermute> check() const {
    return ops::MoeUnpermute::validate(y, positions, top_k, weights, shared, out);
  }
};

TEST(MoePermuteValidation, AcceptsTheDispatchLayout) {
  const auto call = Permute().check();
  EXPECT_EQ(call.args.pairs, 40);
  EXPECT_EQ(call.args.vectors, 256);
  EXPECT_EQ(call.args.rows, Permute().rows);
  Unpermute u;
  EXPECT_EQ(u.check().args.rows, u.rows);
  u.weights = TensorView();  // weights applied by the down projection
  u.shared = TensorView();   // no shared expert
  const auto plain = u.check();
  EXPECT_EQ(plain.args.weights, nullptr);
  EXPECT_EQ(plain.args.shared, nullptr);
  u = Unpermute();
  u.out = TensorView(fake(), DType::BFloat16, {10, 2048}, {2056, 1});  // wider rows, aligned
  EXPECT_EQ(u.check().args.out_row_stride, 2056);
}

TEST(MoePermuteValidation, RefusesBadShapesDtypesAndAlignment) {
  Permute p;
  p.x = TensorView(fake(), DType::BFloat16, {10, 2044});
  p.x_sorted = TensorView(fake(), DType::BFloat16, {p.rows, 2044});
  expect_refused(p, "multiple of 8");
  p = Permute();
  p.x = TensorView(fake(), DType::Float32, {10, 2048});
  expect_refused(p, "bf16 or fp16");
  p = Permute();
  p.positions = TensorView(fake(), DType::Int32, {39});
  expect_refused(p, "positions must be contiguous int32 [40]");
  p = Permute();
  p.x_sorted = TensorView(fake(), DType::Float16, {p.rows, 2048});
  expect_refused(p, "x_sorted must be bf16");
  p = Permute();
  p.x = TensorView(fake(2), DType::BFloat16, {10, 2048});
  expect_refused(p, "x must be 16-byte aligned");
  p = Permute();
  p.top_k = 0;
  expect_refused(p, "top_k must be 1 to 32");
  Unpermute u;
  u.weights = TensorView(fake(), DType::Float32, {10, 3});
  expect_refused(u, "weights must be contiguous fp32 [10, 4]");
  u = Unpermute();
  u.shared = TensorView(fake(), DType::BFloat16, {9, 2048});
  expect_refused(u, "shared must be bf16 [10, 2048]");
  u = Unpermute();
  u.y = TensorView(fake(), DType::Float16, {u.rows, 2048});
  expect_refused(u, "y_sorted must be bf16");
  u = Unpermute();
  u.out = TensorView(fake(), DType::BFloat16, {10, 2048}, {2052, 1});  // rows not 16-byte aligned
  expect_refused(u, "out's stride 0 (2052 elements) is not a multiple of 16 bytes");
}

// GLM-4.7-Flash's gate/up projection over 1024 rows of the layout, blocks of 128.
struct Gemm {
  TensorView x{fake(), DType::BFloat16, {1024, 2048}};
  TensorView blocks{fake(), DType::Int32, {8}};
  int block = 128;
  ops::MoeGemm::Weights w{TensorView(fake(), DType::BFloat16, {64, 3072, 2048})};
  TensorView y{fake(), DType::BFloat16, {1024, 3072}};
  moe::GemmEpilogue epilogue;
  ops::Call<ops::MoeGemm> check() const {
    return ops::MoeGemm::validate(x, blocks, block, w, y, epilogue);
  }
};

TEST(MoeGemmValidation, AcceptsTheLayoutAndPicksAConfigPerArch) {
  const auto call = Gemm().check();
  EXPECT_EQ(call.problem.experts, 64);
  EXPECT_EQ(call.problem.n, 3072);
  EXPECT_EQ(call.args.w_expert_stride, 3072 * 2048);
  const Arch sm90a("sm_90a"), sm80("sm_80");
  const ops::MoeGemm::Config c = ops::MoeGemm::default_config(call.problem, sm90a);
  EXPECT_TRUE(ops::MoeGemm::valid(c, call.problem, sm90a));
  EXPECT_FALSE(ops::MoeGemm::valid(c, call.problem, sm80));  // no mma.sync path yet
  EXPECT_TRUE(ops::MoeGemm::space(call.problem, sm80).empty());
  ops::MoeGemm::Problem n192 = call.problem;
  n192.n = 192;
  EXPECT_EQ(ops::MoeGemm::default_config(n192, sm90a).block_n, 64);
}

TEST(MoeGemmValidation, RefusesBadShapes) {
  Gemm g;
  g.block = 32;
  g.blocks = TensorView(fake(), DType::Int32, {32});
  expect_refused(g, "block (align's) must be 64 or 128 rows, or 256 with FP4 weights, got 32");
  g = Gemm();
  g.x = TensorView(fake(), DType::BFloat16, {1024, 2048});
  g.block = 256;
  g.blocks = TensorView(fake(), DType::Int32, {4});
  expect_refused(g, "or 256 with FP4 weights, got 256");  // 16-bit weights
  g = Gemm();
  g.x = TensorView(fake(), DType::BFloat16, {1000, 2048});
  expect_refused(g, "whole blocks of 128");
  g = Gemm();
  g.x = TensorView(fake(), DType::BFloat16, {1024, 2000});
  g.w = TensorView(fake(), DType::BFloat16, {64, 3072, 2000});
  expect_refused(g, "K must be a positive multiple of 64");
  g = Gemm();
  g.w = TensorView(fake(), DType::BFloat16, {64, 3072, 1024});
  expect_refused(g, "w must be [E, N, 2048] (x's K)");
  g = Gemm();
  g.w = TensorView(fake(), DType::Float16, {64, 3072, 2048});
  expect_refused(g, "w must be bf16");
  g = Gemm();
  g.y = TensorView(fake(), DType::BFloat16, {1024, 2048});
  expect_refused(g, "y must be [1024, 3072]");
  g = Gemm();
  g.blocks = TensorView(fake(), DType::Int32, {16});
  expect_refused(g, "block_expert must be contiguous int32 [8]");
  g = Gemm();
  g.w = TensorView(fake(), DType::BFloat16, {64, 3000, 2048});
  g.y = TensorView(fake(), DType::BFloat16, {1024, 3000});
  expect_refused(g, "N must be a positive multiple of 64");
  g = Gemm();
  g.block = 64;
  g.x = TensorView(fake(), DType::BFloat16, {64 * 65536, 2048});
  g.blocks = TensorView(fake(), DType::Int32, {65536});
  g.y = TensorView(fake(), DType::BFloat16, {64 * 65536, 3072});
  expect_refused(g, "more than 65535 blocks of 64");
}

TEST(MoeLayerValidation, RefusesWeightsThatDisagreeBeforeAnyDeviceWork) {
  const TensorView x(fake(), DType::BFloat16, {10, 2048}), logits(fake(), DType::Float32, {10, 64}),
      gate_up(fake(), DType::BFloat16, {64, 3072, 2048}), out = x;
  moe::LayerOptions options;
  options.router = {true, 4, 1, 1, true, 1.8f};
  // down's intermediate (1024) is not half of gate_up's 3072 rows.
  const TensorView down(fake(), DType::BFloat16, {64, 2048, 1024});
  try {
    moe::layer(x, logits, {gate_up, down, TensorView()}, TensorView(), options, out, nullptr);
    ADD_FAILURE() << "accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("disagree"), std::string::npos) << e.what();
  }
}

// GLM-4.7-Flash's gate/up weights in NVFP4 (a tensor scale per expert) and MXFP4.
moe::Fp4Weights nvfp4_weights() {
  return {moe::Fp4Format::kNvFp4, TensorView(fake(), DType::UInt8, {64, 3072, 1024}),
          TensorView(fake(), DType::UInt8, {64, 3072, 128}),
          TensorView(fake(), DType::Float32, {64})};
}

// The FP4 layer runs the GEMMs' weight checks before any device work (fake pointers: reaching the
// device would fail differently).
TEST(MoeLayerValidation, RefusesBadFp4WeightsBeforeAnyDeviceWork) {
  const TensorView x(fake(), DType::BFloat16, {10, 2048}), logits(fake(), DType::Float32, {10, 64});
  moe::LayerOptions options;
  options.router = {true, 4, 1, 1, true, 1.8f};
  moe::Fp4LayerWeights w{
      nvfp4_weights(),
      {moe::Fp4Format::kNvFp4, TensorView(fake(), DType::UInt8, {64, 2048, 768}),
       TensorView(fake(), DType::UInt8, {64, 2048, 96}), TensorView(fake(), DType::Float32, {64})},
      TensorView()};
  w.down.scales = TensorView(fake(), DType::UInt8, {64, 2048, 48});  // MXFP4's count for NVFP4
  try {
    moe::layer(x, logits, w, TensorView(), options, x, nullptr);
    ADD_FAILURE() << "accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("w's scales must be uint8 [64, 2048, 96]"),
              std::string::npos)
        << e.what();
  }
}

TEST(MoeGemmValidation, MaskedLayoutShapesAndBlocks) {
  const TensorView x(fake(), DType::BFloat16, {64, 40, 2048}), counts(fake(), DType::Int32, {64}),
      w(fake(), DType::BFloat16, {64, 3072, 2048}), y(fake(), DType::BFloat16, {64, 40, 1536});
  const auto call =
      ops::MoeGemm::validate_masked(x, counts, 8, w, y, moe::GemmEpilogue::Kind::kSwiGLU);
  EXPECT_EQ(call.problem.masked, 1);
  EXPECT_EQ(call.problem.block_m, 64);  // a few rows an expert
  EXPECT_EQ(call.args.y_expert_stride, 40 * 1536);
  EXPECT_EQ(ops::MoeGemm::validate_masked(x, counts, 0, w, y, moe::GemmEpilogue::Kind::kSwiGLU)
                .problem.block_m,
            128);
  EXPECT_THROW(
      ops::MoeGemm::validate_masked(x, counts, 8, w, y, moe::GemmEpilogue::Kind::kRoutingWeights),
      InvalidArgument);
  EXPECT_THROW(ops::MoeGemm::validate_masked(x, counts, 8, w, y, moe::GemmEpilogue::Kind::kPlain),
               InvalidArgument);  // y has N / 2 columns
  EXPECT_THROW(ops::MoeGemm::validate_masked(x, TensorView(fake(), DType::Int32, {63}), 8, w, y,
                                             moe::GemmEpilogue::Kind::kSwiGLU),
               InvalidArgument);
}

TEST(MoeGemmValidation, ChecksTheEpiloguesOperands) {
  Gemm g;
  g.epilogue.kind = moe::GemmEpilogue::Kind::kSwiGLU;
  expect_refused(g, "y must be [1024, 1536] (rows, N / 2 after SwiGLU)");
  g.y = TensorView(fake(), DType::BFloat16, {1024, 1536});
  EXPECT_EQ(g.check().problem.epilogue, 1);
  g = Gemm();
  g.epilogue.kind = moe::GemmEpilogue::Kind::kRoutingWeights;
  g.epilogue.sorted = TensorView(fake(), DType::Int32, {1024});
  g.epilogue.weights = TensorView(fake(), DType::Float32, {100, 4});
  const auto call = g.check();
  EXPECT_EQ(call.args.pairs, 400);
  EXPECT_NE(call.args.sorted, nullptr);
  g.epilogue.sorted = TensorView(fake(), DType::Int32, {1000});
  expect_refused(g, "the epilogue's sorted must be contiguous int32 [1024]");
  g.epilogue.sorted = TensorView(fake(), DType::Int32, {1024});
  g.epilogue.weights = TensorView(fake(), DType::BFloat16, {100, 4});
  expect_refused(g, "the epilogue's weights must be contiguous fp32 [T, k]");
}

// Decode or not is told from the exact rows, not their bucket: GLM-4.7-Flash's layouts at T k 256
// (4 pairs an expert) and T k 1024 (16) both round up to 8192 rows of 64.
TEST(MoeGemmValidation, TellsDecodeFromTheExactRows) {
  const Arch sm90a("sm_90a");
  const auto layout = [](std::int64_t pairs) {
    Gemm g;
    g.block = 64;
    const std::int64_t rows = moe::align_capacity(pairs, 64, 64);
    g.x = TensorView(fake(), DType::BFloat16, {rows, 2048});
    g.blocks = TensorView(fake(), DType::Int32, {rows / 64});
    g.y = TensorView(fake(), DType::BFloat16, {rows, 3072});
    g.w = nvfp4_weights();
    return g.check().problem;
  };
  const ops::MoeGemm::Problem few = layout(256), many = layout(1024);
  EXPECT_EQ(ops::bucketed<ops::MoeGemm>(few).rows, 8192);
  EXPECT_EQ(ops::bucketed<ops::MoeGemm>(many).rows, 8192);
  EXPECT_EQ(few.decode, 1);
  EXPECT_EQ(many.decode, 0);
  EXPECT_EQ(ops::MoeGemm::default_config(ops::bucketed<ops::MoeGemm>(few), sm90a).decode, 1);
  EXPECT_EQ(ops::MoeGemm::default_config(ops::bucketed<ops::MoeGemm>(many), sm90a).decode, 0);
  EXPECT_NE(ops::shape_of<ops::MoeGemm>(few), ops::shape_of<ops::MoeGemm>(many));
  ops::MoeGemm::Problem two = few;
  two.decode = 2;  // as a tuning shape might name it
  EXPECT_THROW(ops::MoeGemm::check(two), InvalidArgument);
}

TEST(MoeGemmValidation, AcceptsFp4WeightsWithTheirScales) {
  Gemm g;
  g.w = nvfp4_weights();
  const auto call = g.check();
  EXPECT_EQ(call.problem.weights, ops::MoeGemm::kNvFp4);
  EXPECT_EQ(call.problem.n, 3072);
  EXPECT_EQ(call.args.w_expert_stride, 3072 * 1024);  // bytes
  EXPECT_EQ(call.args.scale_row_stride, 128);
  EXPECT_EQ(call.args.scale_expert_stride, 3072 * 128);
  EXPECT_EQ(call.args.tensor_scale_stride, 1);
  const Arch sm90a("sm_90a"), sm80("sm_80");
  const ops::MoeGemm::Config c = ops::MoeGemm::default_config(call.problem, sm90a);
  EXPECT_TRUE(ops::MoeGemm::valid(c, call.problem, sm90a));
  EXPECT_FALSE(ops::MoeGemm::valid(c, call.problem, sm80));
  // Decode (8 blocks of rows): the decode kernel, 2 steps in flight, also in the tuner's space (4
  // and 6 too); the masked layout's decode takes the pipeline's 64 weight rows a block, a
  // prefill-sized layout its 256 (four consumer warpgroups).
  const ops::MoeGemm::Config decode{64, 4, 1};
  EXPECT_EQ(c.decode, 1);
  EXPECT_EQ(c.block_n, 64);
  EXPECT_EQ(c.stages, 2);
  const std::vector<ops::MoeGemm::Config> space = ops::MoeGemm::space(call.problem, sm90a);
  EXPECT_TRUE(std::any_of(space.begin(), space.end(), [](const auto& s) { return s.decode == 1; }));
  EXPECT_TRUE(ops::MoeGemm::valid(decode, call.problem, sm90a));
  ops::MoeGemm::Problem masked = call.problem;
  masked.masked = 1;
  masked.rows = 16;
  ops::MoeGemm::classify(masked);
  EXPECT_EQ(ops::MoeGemm::default_config(masked, sm90a).decode, 0);
  EXPECT_EQ(ops::MoeGemm::default_config(masked, sm90a).block_n, 64);
  ops::MoeGemm::Problem prefill = call.problem;
  prefill.rows = 64 * 1024;
  ops::MoeGemm::classify(prefill);
  EXPECT_EQ(ops::MoeGemm::default_config(prefill, sm90a).decode, 0);
  EXPECT_EQ(ops::MoeGemm::default_config(prefill, sm90a).block_n, 256);  // four consumers
  // FP4 stages hold a quarter of the weight bytes.
  ops::MoeGemm::Problem bf16 = call.problem;
  bf16.weights = ops::MoeGemm::kSameAsX;
  // 16-bit weights in decode take the decode kernel too; over the masked layout, the pipeline.
  EXPECT_EQ(ops::MoeGemm::default_config(bf16, sm90a).decode, 1);
  EXPECT_EQ(ops::MoeGemm::default_config(bf16, sm90a).stages, 2);
  // FP4 weights with K under 2048 (GLM's down) take one set of warps over every K step; 16-bit
  // weights keep two.
  ops::MoeGemm::Problem down = call.problem;
  down.n = 2048;
  down.k = 1536;
  EXPECT_EQ(ops::MoeGemm::default_config(down, sm90a).decode, 2);
  down.weights = ops::MoeGemm::kSameAsX;
  EXPECT_EQ(ops::MoeGemm::default_config(down, sm90a).decode, 1);
  ops::MoeGemm::Problem bf16_masked = masked;
  bf16_masked.weights = ops::MoeGemm::kSameAsX;
  EXPECT_EQ(ops::MoeGemm::default_config(bf16_masked, sm90a).decode, 0);
  const ops::MoeGemm::Config pipeline{64, 4};
  EXPECT_LT(ops::MoeGemm::shared_bytes(pipeline, call.problem),
            ops::MoeGemm::shared_bytes(pipeline, bf16));
  // The decode kernel takes 64 weight rows a block, K in steps of 64 (16-bit weights) or 128
  // (FP4), on sm_90a.
  EXPECT_TRUE(ops::MoeGemm::valid(decode, bf16, sm90a));
  EXPECT_FALSE(ops::MoeGemm::valid(decode, call.problem, sm80));
  EXPECT_FALSE(ops::MoeGemm::valid({128, 2, 1}, call.problem, sm90a));
  EXPECT_FALSE(ops::MoeGemm::valid({64, 7, 1}, call.problem, sm90a));
  EXPECT_FALSE(ops::MoeGemm::valid({64, 1, 1}, call.problem, sm90a));
  EXPECT_TRUE(ops::MoeGemm::valid({64, 2, 2}, call.problem, sm90a));  // one set of warps
  EXPECT_FALSE(ops::MoeGemm::valid({64, 2, 3}, call.problem, sm90a));
  ops::MoeGemm::Problem k_1984 = call.problem;
  k_1984.k = 1984;
  EXPECT_FALSE(ops::MoeGemm::valid(decode, k_1984, sm90a));
  k_1984.weights = ops::MoeGemm::kSameAsX;
  EXPECT_TRUE(ops::MoeGemm::valid(decode, k_1984, sm90a));

  // The epilogue's zero_padding reaches the kernels (default: padding rows written as zeros).
  EXPECT_EQ(call.args.zero_padding, 1);
  g.epilogue.zero_padding = false;
  EXPECT_EQ(g.check().args.zero_padding, 0);
  g.epilogue.zero_padding = true;

  moe::Fp4Weights one_scale = nvfp4_weights();
  one_scale.tensor_scale = TensorView(fake(), DType::Float32, {1});
  g.w = one_scale;
  EXPECT_EQ(g.check().args.tensor_scale_stride, 0);
  one_scale.tensor_scale = TensorView(fake(), DType::Float32, std::vector<std::int64_t>{});
  g.w = one_scale;  // 0-d, as torch.tensor(s)
  EXPECT_EQ(g.check().args.tensor_scale_stride, 0);
  moe::Fp4Weights strided = nvfp4_weights();  // every other float of a [64, 2] buffer
  strided.tensor_scale = TensorView(fake(), DType::Float32, {64}, {2});
  g.w = strided;
  EXPECT_EQ(g.check().args.tensor_scale_stride, 2);
  strided.tensor_scale = TensorView(fake(2), DType::Float32, {64});
  g.w = strided;
  expect_refused(g, "w's tensor_scale must be 4-byte aligned");
  g.w = moe::Fp4Weights{moe::Fp4Format::kMxFp4, TensorView(fake(), DType::UInt8, {64, 3072, 1024}),
                        TensorView(fake(), DType::UInt8, {64, 3072, 64}), TensorView()};
  EXPECT_EQ(g.check().problem.weights, ops::MoeGemm::kMxFp4);  // no tensor scale read
}

// The tuner's workload looks like align's layout of the problem's size: at T 1 (top 4 of 64,
// blocks of 64) one pair a block, its first row, the others padding with zero rows of x_sorted;
// in prefill most rows. The same values in every input set (a function of the index).
TEST(MoeGemmValidation, TunerWorkloadIsShapedLikeTheLayout) {
  const auto spec = [](const std::vector<ops::TensorSpec>& t, const std::string& name) {
    return *std::find_if(t.begin(), t.end(), [&](const auto& s) { return s.name == name; });
  };
  const std::int64_t decode_rows = moe::align_capacity(4, 64, 64);
  const ops::MoeGemm::Problem decode{DType::BFloat16,     decode_rows, 3072, 2048, 64, 64, 1, 0,
                                     ops::MoeGemm::kNvFp4};
  const std::vector<ops::TensorSpec> t = ops::MoeGemm::tensors(decode);
  const ops::TensorSpec sorted = spec(t, "sorted"), x = spec(t, "x_sorted");
  ASSERT_TRUE(sorted.value && x.value);
  for (std::int64_t row = 0; row < decode_rows; ++row) {
    const bool first = row % 64 == 0;
    EXPECT_EQ(sorted.value(row), first ? static_cast<float>(row) : static_cast<float>(decode_rows))
        << row;
    const float v = x.value(row * 2048 + 7);
    if (first) {
      EXPECT_LE(std::abs(v), 0.1f);
    } else {
      EXPECT_EQ(v, 0.f) << row;
    }
  }
  EXPECT_NE(x.value(0), x.value(1));  // a hash, not a constant

  // Prefill, T 16384: the layout's 575 blocks hold 65472 to 65536 pairs, the worst routing's
  // padding spread over them (114 of each block's 128 rows).
  const std::int64_t prefill_rows = moe::align_capacity(16384 * 4, 64, 128);
  const ops::MoeGemm::Problem prefill{DType::BFloat16, prefill_rows, 3072, 2048, 64, 128, 1};
  const ops::TensorSpec spread = spec(ops::MoeGemm::tensors(prefill), "sorted");
  std::int64_t held = 0;
  for (std::int64_t row = 0; row < prefill_rows; ++row)
    held += spread.value(row) == static_cast<float>(row);
  EXPECT_GE(held, 64 + (prefill_rows / 128 - 64) * 128);
  EXPECT_LT(held, 16384 * 4 + prefill_rows / 128);
  EXPECT_EQ(spread.value(113), 113.f);
  EXPECT_EQ(spread.value(114), static_cast<float>(prefill_rows));
  // The decode kernel is tried for decode-sized layouts only (in prefill it would pass over the
  // weights once every 8 tokens).
  ops::MoeGemm::Problem prefill_fp4 = prefill;
  prefill_fp4.weights = ops::MoeGemm::kNvFp4;
  ops::MoeGemm::classify(prefill_fp4);
  const Arch sm90a("sm_90a");
  for (const auto& c : ops::MoeGemm::space(prefill_fp4, sm90a))
    EXPECT_EQ(c.decode, 0);
  ops::MoeGemm::Problem decode_fp4 = decode;
  decode_fp4.weights = ops::MoeGemm::kNvFp4;
  ops::MoeGemm::classify(decode_fp4);
  const std::vector<ops::MoeGemm::Config> decode_space = ops::MoeGemm::space(decode_fp4, sm90a);
  for (std::int64_t form : {1, 2}) {  // two sets of warps and one, each at three depths
    EXPECT_EQ(std::count_if(decode_space.begin(), decode_space.end(),
                            [&](const auto& c) { return c.decode == form; }),
              3);
  }
  // A decode shape of a bucket's rows (as the miss log stores it: T k 256's 4288 rows as 8192)
  // is timed on at most the pairs decode allows, not on the 4160 pairs 8192 rows could hold.
  ops::MoeGemm::Problem bucket = decode_fp4;
  bucket.rows = 8192;
  bucket.decode = 1;
  const ops::TensorSpec bucket_sorted = spec(ops::MoeGemm::tensors(bucket), "sorted");
  std::int64_t bucket_held = 0;
  for (std::int64_t row = 0; row < 8192; ++row)
    bucket_held += bucket_sorted.value(row) == static_cast<float>(row);
  EXPECT_GE(bucket_held, (64 * 64 - 1) / 4);
  EXPECT_LE(bucket_held, (64 * 64 - 1) / 4 + 8192 / 64);
  // The masked layout: every expert holds all its rows, and every config's y is compared.
  const ops::MoeGemm::Problem masked{DType::BFloat16,     16, 3072, 2048, 64, 64, 1, 1,
                                     ops::MoeGemm::kNvFp4};
  const std::vector<ops::TensorSpec> m = ops::MoeGemm::tensors(masked);
  EXPECT_EQ(spec(m, "masked_m").value(3), 16.f);
  EXPECT_EQ(spec(m, "y").role, ops::TensorSpec::Role::Output);
}

TEST(MoeGemmValidation, RefusesBadFp4Weights) {
  Gemm g;
  g.w = nvfp4_weights();
  g.x = TensorView(fake(), DType::Float16, {1024, 2048});
  g.y = TensorView(fake(), DType::Float16, {1024, 3072});
  expect_refused(g, "FP4 weights take bf16 activations");
  g = Gemm();
  moe::Fp4Weights w = nvfp4_weights();
  w.codes = TensorView(fake(), DType::UInt8, {64, 3072, 2048});
  g.w = w;
  expect_refused(g, "w's codes must be [E, N, 1024] (x's K / 2)");
  w = nvfp4_weights();
  w.codes = TensorView(fake(), DType::BFloat16, {64, 3072, 1024});
  g.w = w;
  expect_refused(g, "w's codes must be uint8");
  w = nvfp4_weights();
  w.scales = TensorView(fake(), DType::UInt8, {64, 3072, 64});  // MXFP4's blocks
  g.w = w;
  expect_refused(g, "w's scales must be uint8 [64, 3072, 128] (E, N, K / 16)");
  w = nvfp4_weights();
  w.scales = TensorView(fake(), DType::UInt8, {64, 3072, 128}, {3072 * 130, 130, 1});
  g.w = w;
  expect_refused(g, "w's scales's stride 1 (130 elements) is not a multiple of 4 bytes");
  w = nvfp4_weights();
  w.tensor_scale = TensorView(fake(), DType::Float32, {3});
  g.w = w;
  expect_refused(g, "NVFP4 w's tensor_scale must be fp32 [64] (one per expert), [1] or a scalar");
  w.tensor_scale = TensorView();
  g.w = w;
  expect_refused(g, "NVFP4 w's tensor_scale must be");
  // Blocks of 256 rows: FP4 over N multiples of 128.
  g = Gemm();
  g.block = 256;
  g.blocks = TensorView(fake(), DType::Int32, {4});
  g.w = nvfp4_weights();
  g.check();
  w = nvfp4_weights();
  w.codes = TensorView(fake(), DType::UInt8, {64, 192, 1024});
  w.scales = TensorView(fake(), DType::UInt8, {64, 192, 128});
  g.w = w;
  g.y = TensorView(fake(), DType::BFloat16, {1024, 192});
  expect_refused(g, "blocks of 256 rows take N a multiple of 128");
  // The masked layout checks the same, against x's experts.
  const TensorView x(fake(), DType::BFloat16, {32, 40, 2048}), counts(fake(), DType::Int32, {32}),
      y(fake(), DType::BFloat16, {32, 40, 1536});
  try {
    ops::MoeGemm::validate_masked(x, counts, 8, nvfp4_weights(), y,
                                  moe::GemmEpilogue::Kind::kSwiGLU);
    ADD_FAILURE() << "accepted 64 experts' weights for 32 experts' rows";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("w's codes must be [32, N, 1024] (x's E and K / 2)"),
              std::string::npos)
        << e.what();
  }
}

// GLM-4.7-Flash's router statistics over 100 tokens in 3 sequences, with a bias to update.
struct Balance {
  TensorView ids{fake(), DType::Int32, {100, 4}};
  TensorView probs{fake(), DType::Float32, {100, 64}};
  TensorView logits{fake(), DType::BFloat16, {100, 64}};
  TensorView cu_seqlens{fake(), DType::Int32, {4}};
  int max_seqlen = 60;
  TensorView bias{fake(), DType::Float32, {64}};
  moe::BalanceOptions options;
  moe::BalanceStats stats{
      TensorView(fake(), DType::Int32, {64}), TensorView(fake(), DType::Float32, {64}),
      TensorView(fake(), DType::Float32, {64}), TensorView(fake(), DType::Float32, {4})};
  ops::Call<ops::MoeBalance> check() const {
    return ops::MoeBalance::validate(ids, probs, logits, cu_seqlens, max_seqlen, bias, options,
                                     stats);
  }
};

TEST(MoeBalanceValidation, AcceptsSequencesLogitsAndABias) {
  const auto call = Balance().check();
  EXPECT_EQ(call.problem.sequences, 3);
  EXPECT_EQ(call.problem.longest, 60);
  EXPECT_EQ(call.problem.dtype, DType::BFloat16);
  Balance plain;
  plain.logits = plain.cu_seqlens = plain.bias = TensorView();
  const auto p = plain.check();
  EXPECT_EQ(p.problem.sequences, 1);
  EXPECT_EQ(p.problem.longest, 100);
  EXPECT_EQ(p.args.bias, nullptr);
  EXPECT_EQ(p.args.logits, nullptr);
}

TEST(MoeBalanceValidation, RefusesBadShapesAndOptions) {
  Balance b;
  b.probs = TensorView(fake(), DType::BFloat16, {100, 64});
  expect_refused(b, "probs must be fp32");
  b = Balance();
  b.logits = TensorView(fake(), DType::BFloat16, {100, 32});
  expect_refused(b, "logits must be [100, 64] (T, E)");
  b = Balance();
  b.max_seqlen = 101;
  expect_refused(b, "max_seqlen 0 to T");
  b = Balance();
  b.ids = TensorView(fake(), DType::Int32, {100, 65});
  expect_refused(b, "top_k must be 1 to E = 64");
  b = Balance();
  b.stats.losses = TensorView(fake(), DType::Float32, {3});
  expect_refused(b, "losses must be contiguous fp32 [4]");
  b = Balance();
  b.bias = TensorView(fake(), DType::Float32, {63});
  expect_refused(b, "bias must be contiguous fp32 [64]");
  b = Balance();
  b.options.bias_rate = std::numeric_limits<float>::quiet_NaN();
  expect_refused(b, "bias_rate must be finite");
}

// The 16-bit default on the problems the dispatcher gives it (each bucket's: rows rounded up to a
// power of 2), at the benchmark's balanced layouts (blocks of 128): 256 columns past 2^26 routed
// outputs, 3 stages past 2^27, the H100's best of the measured configs (docs/perf.md).
TEST(MoeGemmDefault, WideTilesForLargeProductsOnTheirBucket) {
  const Arch sm90a("sm_90a");
  const auto pick = [&](std::int64_t pairs, std::int64_t experts, std::int64_t n, std::int64_t k) {
    ops::MoeGemm::Problem p{DType::BFloat16,
                            moe::align_capacity(pairs, static_cast<int>(experts), 128),
                            n,
                            k,
                            experts,
                            128};
    const ops::MoeGemm::Config c =
        ops::MoeGemm::default_config(ops::bucketed<ops::MoeGemm>(p), sm90a);
    return std::pair<std::int64_t, std::int64_t>{c.block_n, c.stages};
  };
  using Pick = std::pair<std::int64_t, std::int64_t>;
  EXPECT_EQ(pick(16384, 64, 1536, 2048), Pick(128, 6));  // torch's anchor
  EXPECT_EQ(pick(4096, 64, 3072, 2048), Pick(128, 6));   // GLM gate/up
  EXPECT_EQ(pick(16384, 64, 3072, 2048), Pick(256, 4));
  EXPECT_EQ(pick(65536, 64, 3072, 2048), Pick(256, 3));
  EXPECT_EQ(pick(4096, 64, 2048, 1536), Pick(128, 6));  // GLM down
  EXPECT_EQ(pick(16384, 64, 2048, 1536), Pick(128, 6));
  EXPECT_EQ(pick(65536, 64, 2048, 1536), Pick(256, 3));
  EXPECT_EQ(pick(32768, 8, 4096, 7168), Pick(256, 3));  // DeepGEMM's
  EXPECT_EQ(pick(65536, 64, 1984, 2048).first, 64);     // N not a multiple of 128 or 256
}

// The NVFP4 default for `pairs` over 64 experts in align's blocks of `block` rows, on the bucket
// the dispatcher gives it (valid there).
ops::MoeGemm::Config nvfp4_default(std::int64_t pairs, std::int64_t n, std::int64_t k,
                                   std::int64_t block) {
  const Arch sm90a("sm_90a");
  ops::MoeGemm::Problem p{
      DType::BFloat16, moe::align_capacity(pairs, 64, static_cast<int>(block)), n, k, 64, block};
  p.weights = ops::MoeGemm::kNvFp4;
  ops::MoeGemm::classify(p);
  const ops::MoeGemm::Problem bucket = ops::bucketed<ops::MoeGemm>(p);
  const ops::MoeGemm::Config c = ops::MoeGemm::default_config(bucket, sm90a);
  EXPECT_TRUE(ops::MoeGemm::valid(c, bucket, sm90a));
  return c;
}

// FP4 weights in prefill: 256 weight rows past 2^25 routed outputs on the bucket (GLM down over 16k
// rows: 24640 pairs of the 32768-row bucket, x 2048), 6 stages; 128 below.
TEST(MoeGemmDefault, Fp4WideFromTwoToTheTwentyFiveOutputs) {
  const auto pick = [&](std::int64_t pairs, std::int64_t n, std::int64_t k) {
    const ops::MoeGemm::Config c = nvfp4_default(pairs, n, k, 128);
    return std::pair<std::int64_t, std::int64_t>{c.block_n, c.stages};
  };
  using Pick = std::pair<std::int64_t, std::int64_t>;
  EXPECT_EQ(pick(4096, 3072, 2048), Pick(128, 6));  // GLM gate/up
  EXPECT_EQ(pick(16384, 3072, 2048), Pick(256, 6));
  EXPECT_EQ(pick(65536, 3072, 2048), Pick(256, 6));
  EXPECT_EQ(pick(4096, 2048, 1536), Pick(128, 6));  // GLM down
  EXPECT_EQ(pick(16384, 2048, 1536), Pick(256, 6));
}

// The layer's block of rows: 64 while the experts average 64 pairs or fewer, 256 for FP4 weights
// from 1024 an expert on (GLM's T 16384), else 128.
TEST(MoeGemmDefault, LayoutBlockFromPairsAnExpert) {
  const auto glm_block = [](std::int64_t pairs, bool fp4) {  // over GLM's 64 experts, H and I
    const std::int64_t w = fp4 ? ops::MoeGemm::kNvFp4 : ops::MoeGemm::kSameAsX;
    return ops::MoeGemm::layout_block(pairs, 64, 2048, 1536, w, w);
  };
  EXPECT_EQ(glm_block(4, true), 64);
  EXPECT_EQ(glm_block(4096, true), 64);
  EXPECT_EQ(glm_block(4097, false), 128);
  EXPECT_EQ(glm_block(16384, true), 128);  // GLM's T 4096
  EXPECT_EQ(glm_block(65535, true), 128);
  EXPECT_EQ(glm_block(65536, true), 256);  // T 16384
  EXPECT_EQ(glm_block(65536, false), 128);
}

// Blocks of 256 rows where FP4 weights run in them: N a multiple of 128, and two stages of 128
// weight rows beside a row's scales within sm_90a's shared memory (NVFP4's K up to about 19k,
// MXFP4's twice that); never 16-bit weights.
TEST(MoeGemmDefault, TakesBlocksOf256RowsWhereTheyFit) {
  using G = ops::MoeGemm;
  EXPECT_TRUE(G::takes_256_rows(G::kNvFp4, 3072, 2048));  // GLM gate/up
  EXPECT_TRUE(G::takes_256_rows(G::kMxFp4, 2048, 1536));  // GLM down
  EXPECT_FALSE(G::takes_256_rows(G::kNvFp4, 192, 2048));
  EXPECT_FALSE(G::takes_256_rows(G::kSameAsX, 3072, 2048));
  EXPECT_TRUE(G::takes_256_rows(G::kNvFp4, 2048, 16384));
  EXPECT_FALSE(G::takes_256_rows(G::kNvFp4, 2048, 32768));
  EXPECT_TRUE(G::takes_256_rows(G::kMxFp4, 2048, 32768));
  EXPECT_FALSE(G::takes_256_rows(G::kMxFp4, 2048, 65536));
}

// FP4 over 256 token rows: 128 weight rows (the only width that takes them), as many stages as
// fit; in decode too (few pairs in blocks of 256), the decode kernel being for blocks up to 128.
TEST(MoeGemmDefault, Fp4Over256TokenRows) {
  const auto pick = [&](std::int64_t pairs, std::int64_t n, std::int64_t k) {
    const ops::MoeGemm::Config c = nvfp4_default(pairs, n, k, 256);
    EXPECT_EQ(c.decode, 0);
    return c.block_n;
  };
  EXPECT_EQ(pick(16384, 3072, 2048), 128);  // GLM gate/up at T 4096
  EXPECT_EQ(pick(65536, 3072, 2048), 128);
  EXPECT_EQ(pick(65536, 2048, 1536), 128);  // GLM down
  EXPECT_EQ(pick(64, 3072, 2048), 128);     // decode's few pairs
}

}  // namespace
}  // namespace kjit::test

// The MoE grouped GEMM on the GPU over the layout the align and permute ops build, against a fp64
// product per routed row: within atol 2e-2 on inputs of deviation 0.1 (vLLM's test) and within one
// unit in the last place plus 1e-5 of the sum of |terms| (fp32 accumulation, one rounding),
// through each epilogue (plain, SwiGLU over interleaved gate/up rows, routing weights). Padding
// rows give exact zeros (or keep their poison where the epilogue lets them go unwritten); blocks
// with no expert keep their poison. The op's config and forced ones
// (64 columns, 2 and 8 stages); both dtypes and both blocks of rows. FP4 weights (NVFP4, MXFP4:
// quantised per expert by the CPU reference) against the same fp64 product over their dequantised
// values, which bf16 holds exactly, with the same bounds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kjit/c_api.h"
#include "kjit/jit.hpp"
#include "kjit/moe.hpp"
#include "ops/moe/grouped_gemm.hpp"
#include "tests/reference/moe_reference.hpp"
#include "tests/support/device_bytes.hpp"
#include "tests/support/dl_tensor.hpp"
#include "tests/support/dtype_bits.hpp"
#include "tests/support/expert_weights.hpp"
#include "tests/support/forced_launch.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/isolated_cache.hpp"
#include "tests/support/moe_layout.hpp"
#include "tests/support/splitmix.hpp"

namespace kjit::test {
namespace {

using Kind = moe::GemmEpilogue::Kind;
using Format = ops::MoeGemm::WeightFormat;

// Output column `col` of one row x (K values) through expert e's weights and the epilogue (kPlain
// with `scale` 1, kRoutingWeights with the pair's weight, kSwiGLU), in fp64, and the bound on a
// result accumulated in fp32 and rounded once beyond one ulp: 1e-5 of the terms' magnitudes,
// carried through silu (slope at most 1.1) and the product, plus fp32's exp.
struct Expected {
  double want, bound;
};
Expected expected(const double* x, const ExpertWeights& w, int e, int n, int k, int col, Kind kind,
                  double scale) {
  const auto product = [&](int row, double& magnitude) {
    const std::size_t wr = (static_cast<std::size_t>(e) * n + row) * k;
    double sum = 0;
    magnitude = 0;
    for (int i = 0; i < k; ++i) {
      const double term = x[i] * w.at(wr + i);
      sum += term;
      magnitude += std::abs(term);
    }
    return sum;
  };
  if (kind == Kind::kSwiGLU) {
    double gate_magnitude = 0, up_magnitude = 0;
    const double gate = product(2 * col, gate_magnitude), up = product(2 * col + 1, up_magnitude);
    const double silu = gate / (1 + std::exp(-gate)), want = silu * up;
    return {want, 1e-5 * (1.1 * std::abs(up) * gate_magnitude + std::abs(silu) * up_magnitude) +
                      1e-6 * std::abs(want)};
  }
  double magnitude = 0;
  const double want = scale * product(col, magnitude);
  return {want, 1e-5 * scale * magnitude};
}

struct GemmCase {
  const char* name;
  DType dtype;
  int tokens, top_k, experts, n, k, block;
  bool skewed = false;  // most pairs to expert 1: long runs, empty experts
  Kind epilogue = Kind::kPlain;
  std::int64_t block_n = 0, stages = 0;  // forced through the family when set
  Format weights = Format::kSameAsX;
  bool pass_sorted = false;     // align's sorted and the weights with a plain or SwiGLU epilogue
  std::int64_t decode = 0;      // forced: the decode kernel (block_n 64, stages its loads)
  std::int64_t persistent = 0;  // forced: one block an SM over the tiles
  bool zero_padding = true;     // false: padding rows may keep their poison
};

void PrintTo(const GemmCase& c, std::ostream* os) {
  *os << c.name;
}

class MoeGemmTest : public SharedKernelStore, public ::testing::WithParamInterface<GemmCase> {};

TEST_P(MoeGemmTest, MatchesDoublePerRoutedRow) {
  KJIT_REQUIRE_GPU();
  if (!arch::current().has_wgmma())
    GTEST_SKIP() << "the grouped GEMM needs sm_90a so far; this card is " << arch::current().name();
  const GemmCase& c = GetParam();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "input seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 0.1);
  std::uniform_int_distribution<int> expert(0, c.experts - 1);
  const int pairs = c.tokens * c.top_k;
  std::vector<int> ids(static_cast<std::size_t>(pairs));
  for (int& e : ids)
    e = c.skewed && rng() % 4 != 0 ? std::min(1, c.experts - 1) : expert(rng);

  // The layout (align) and the rows in it (permute).
  const DeviceAlignment alignment(pairs, c.experts, c.block);
  const std::int64_t rows = alignment.rows, blocks = rows / c.block;
  DeviceBuffer dids(std::max<std::size_t>(ids.size() * 4, 4)), positions(std::max(pairs, 1) * 4);
  if (!ids.empty()) dids.upload(ids.data(), ids.size() * 4);
  Stream stream;
  alignment.align(TensorView(dids.data(), DType::Int32, {c.tokens, c.top_k}), stream.handle());
  // Inputs ~ N(0, 0.1) for the tokens, the weights of the same deviation.
  std::vector<std::uint16_t> x(static_cast<std::size_t>(c.tokens) * c.k);
  for (auto& e : x)
    e = to_bits(c.dtype, normal(rng));
  const ExpertWeights w(c.weights, c.dtype, c.experts, c.n, c.k, rng());
  std::vector<float> pair_weights(static_cast<std::size_t>(pairs));
  std::uniform_real_distribution<float> unit(0.f, 1.f);
  for (float& v : pair_weights)
    v = unit(rng);
  const int y_cols = c.epilogue == Kind::kSwiGLU ? c.n / 2 : c.n;
  DeviceBuffer dx(std::max<std::size_t>(x.size() * 2, 16)), dx_sorted(rows * c.k * 2 + 16),
      dy(rows * y_cols * 2 + 16), dweights(std::max<std::size_t>(pair_weights.size() * 4, 4));
  if (!x.empty()) dx.upload(x.data(), x.size() * 2);
  if (!pair_weights.empty()) dweights.upload(pair_weights.data(), pair_weights.size() * 4);
  dy.fill_bytes(0xff);
  const TensorView vx_sorted(dx_sorted.data(), c.dtype, {rows, c.k});
  moe::permute(TensorView(dx.data(), c.dtype, {c.tokens, c.k}), alignment.sorted_view(), c.top_k,
               vx_sorted, TensorView(positions.data(), DType::Int32, {pairs}), stream.handle());

  const TensorView vblocks = alignment.blocks_view(), vy(dy.data(), c.dtype, {rows, y_cols});
  moe::GemmEpilogue epilogue;
  epilogue.kind = c.epilogue;
  epilogue.zero_padding = c.zero_padding;
  if (c.epilogue == Kind::kRoutingWeights || c.pass_sorted) {
    epilogue.sorted = alignment.sorted_view();
    epilogue.weights = TensorView(dweights.data(), DType::Float32, {c.tokens, c.top_k});
  }
  if (c.block_n) {
    const ops::Call<ops::MoeGemm> call =
        ops::MoeGemm::validate(vx_sorted, vblocks, c.block, w.view(), vy, epilogue);
    const ops::MoeGemm::Config config{c.block_n, c.stages, c.decode, c.persistent};
    ASSERT_TRUE(ops::MoeGemm::valid(config, call.problem, arch::current()));
    launch_forced(config, call, stream.handle());
  } else if (c.weights == Format::kSameAsX) {
    moe::grouped_gemm(vx_sorted, vblocks, c.block, w.view().codes, vy, epilogue, stream.handle());
  } else {
    moe::grouped_gemm(vx_sorted, vblocks, c.block, w.fp4(), vy, epilogue, stream.handle());
  }
  stream.synchronize();
  std::vector<int> layout(static_cast<std::size_t>(rows)),
      experts_of(static_cast<std::size_t>(blocks));
  std::vector<std::uint16_t> y(static_cast<std::size_t>(rows) * y_cols);
  alignment.sorted.download(layout.data(), layout.size() * 4);
  if (blocks > 0) alignment.block_expert.download(experts_of.data(), experts_of.size() * 4);
  dy.download(y.data(), y.size() * 2);

  std::vector<double> xf(x.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    xf[i] = from_bits(c.dtype, x[i]);
  double max_err = 0;
  int checked = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    const int e = experts_of[r / c.block], pair = layout[r];
    const std::uint16_t* got = &y[static_cast<std::size_t>(r) * y_cols];
    if (e < 0) {  // no expert: never written
      for (int col = 0; col < y_cols; ++col)
        ASSERT_EQ(got[col], 0xffff) << "row " << r << " of a block with no expert, col " << col;
      continue;
    }
    if (pair < 0 || pair >= pairs) {  // padding: a row of zeros (or a zero weight), or unwritten
      for (int col = 0; col < y_cols; ++col) {
        if (c.decode && !c.zero_padding) {  // the decode kernel told to leave them: untouched
          ASSERT_EQ(got[col], 0xffff) << "padding row " << r << " col " << col << " written";
        } else if (c.zero_padding || got[col] != 0xffff) {
          ASSERT_EQ(from_bits(c.dtype, got[col]), 0.0) << "padding row " << r << " col " << col;
        }
      }
      continue;
    }
    ASSERT_EQ(ids[pair], e) << "row " << r << " (pair " << pair << ") in expert " << e << "'s run";
    const double* xr = &xf[static_cast<std::size_t>(pair / c.top_k) * c.k];
    const double scale = c.epilogue == Kind::kRoutingWeights ? pair_weights[pair] : 1.0;
    for (int col = 0; col < y_cols; ++col) {
      const auto [want, bound] = expected(xr, w, e, c.n, c.k, col, c.epilogue, scale);
      const double err = std::abs(from_bits(c.dtype, got[col]) - want);
      max_err = std::max(max_err, err);
      ASSERT_LE(err, 2e-2) << "row " << r << " col " << col << " want " << want;
      ASSERT_LE(err, ulp(c.dtype, want) + bound)
          << "row " << r << " col " << col << " want " << want;
    }
    ++checked;
  }
  EXPECT_EQ(checked, pairs);
  std::printf("[ moe gemm ] %s: %d routed rows of %lld, max |err| %.3g\n", c.name, checked,
              static_cast<long long>(rows), max_err);
}

std::vector<GemmCase> cases() {
  const DType bf16 = DType::BFloat16, fp16 = DType::Float16;
  return {
      {"glm_gate_up", bf16, 24, 4, 64, 3072, 2048, 128},
      {"glm_down_block64", bf16, 40, 4, 16, 1024, 1536, 64},
      {"skewed_fp16", fp16, 200, 2, 8, 256, 512, 64, true},
      {"n_192_one_slot", bf16, 50, 1, 4, 192, 128, 128},
      {"forced_64_columns_2_stages", bf16, 64, 2, 8, 256, 256, 128, false, Kind::kPlain, 64, 2},
      {"forced_8_stages", fp16, 30, 4, 8, 128, 1024, 64, false, Kind::kPlain, 128, 8},
      {"no_tokens", bf16, 0, 4, 8, 128, 128, 128},
      {"glm_gate_up_swiglu", bf16, 24, 4, 64, 3072, 2048, 128, false, Kind::kSwiGLU},
      {"swiglu_64_columns_fp16", fp16, 40, 2, 8, 192, 256, 64, false, Kind::kSwiGLU},
      {"glm_down_routing_weights", bf16, 24, 4, 64, 2048, 1536, 128, false, Kind::kRoutingWeights},
      {"routing_weights_forced", fp16, 50, 2, 8, 256, 512, 64, true, Kind::kRoutingWeights, 64, 3},
      // 256 columns a block (two consumers of 128 accumulators a thread, registers rebalanced;
      // one of 256 over blocks of 64 rows): each epilogue.
      {"forced_256_columns", bf16, 300, 4, 8, 768, 1024, 128, false, Kind::kPlain, 256, 4},
      {"swiglu_256_columns_fp16_block64", fp16, 90, 2, 8, 512, 320, 64, false, Kind::kSwiGLU, 256,
       3},
      {"routing_weights_256_columns_skewed", bf16, 200, 2, 8, 512, 2048, 128, true,
       Kind::kRoutingWeights, 256, 2},
      // Persistent blocks (one an SM walking the tiles; more tiles than SMs, blocks of no expert
      // past the padded total and empty experts skipped on the way): each epilogue, 128 and 256
      // columns, blocks of 64 and 128 rows.
      {"persistent_256_columns", bf16, 3000, 4, 8, 768, 512, 128, false, Kind::kPlain, 256, 4,
       Format::kSameAsX, false, 0, 1},
      {"persistent_swiglu_skewed_fp16", fp16, 2000, 2, 8, 512, 320, 64, true, Kind::kSwiGLU, 128, 3,
       Format::kSameAsX, false, 0, 1},
      {"persistent_routing_weights_256_columns", bf16, 2500, 4, 16, 1024, 256, 128, true,
       Kind::kRoutingWeights, 256, 2, Format::kSameAsX, false, 0, 1},
      {"nvfp4_glm_gate_up_swiglu", bf16, 24, 4, 8, 3072, 2048, 64, false, Kind::kSwiGLU, 0, 0,
       Format::kNvFp4},
      {"nvfp4_glm_down_routing_weights", bf16, 40, 4, 8, 2048, 1536, 128, true,
       Kind::kRoutingWeights, 0, 0, Format::kNvFp4},
      {"mxfp4_plain_block128", bf16, 60, 2, 8, 384, 512, 128, false, Kind::kPlain, 0, 0,
       Format::kMxFp4},
      {"mxfp4_swiglu_skewed", bf16, 100, 2, 6, 256, 1024, 64, true, Kind::kSwiGLU, 0, 0,
       Format::kMxFp4},
      {"nvfp4_forced_128_rows_8_stages", bf16, 70, 2, 4, 256, 768, 128, false, Kind::kPlain, 128, 8,
       Format::kNvFp4},
      {"nvfp4_forced_64_rows_2_stages", bf16, 30, 4, 8, 128, 256, 64, true, Kind::kRoutingWeights,
       64, 2, Format::kNvFp4},
      {"nvfp4_no_tokens", bf16, 0, 4, 8, 128, 128, 64, false, Kind::kPlain, 0, 0, Format::kNvFp4},
      // Given align's sorted, the FP4 kernel multiplies 8, 16 or 32 token columns of a block.
      {"nvfp4_decode_8_columns_swiglu", bf16, 3, 4, 64, 512, 1024, 64, false, Kind::kSwiGLU, 0, 0,
       Format::kNvFp4, true},
      {"mxfp4_16_columns", bf16, 40, 2, 6, 256, 512, 64, false, Kind::kPlain, 0, 0, Format::kMxFp4,
       true},
      {"nvfp4_32_columns_block128", bf16, 100, 2, 8, 256, 512, 128, false, Kind::kPlain, 0, 0,
       Format::kNvFp4, true},
      {"nvfp4_skewed_columns_vary", bf16, 150, 2, 8, 384, 256, 64, true, Kind::kSwiGLU, 0, 0,
       Format::kNvFp4, true},
      {"bf16_sorted_given", bf16, 40, 2, 8, 256, 512, 64, false, Kind::kPlain, 0, 0,
       Format::kSameAsX, true},
      // The prefill kernel over 1, 3 and 5 k-blocks (over 128 rows its fragment sets alternate
      // from the second one on an odd count).
      {"nvfp4_k_64_one_k_block", bf16, 50, 2, 4, 256, 64, 128, false, Kind::kPlain, 128, 3,
       Format::kNvFp4},
      {"mxfp4_k_192_three_k_blocks", bf16, 60, 2, 4, 256, 192, 64, true, Kind::kSwiGLU, 128, 2,
       Format::kMxFp4},
      {"nvfp4_k_320_five_k_blocks", bf16, 80, 2, 6, 128, 320, 128, false, Kind::kRoutingWeights,
       128, 4, Format::kNvFp4},
      // 256 weight rows a block (four consumer warpgroups, registers from the producer): each
      // epilogue, both formats, blocks of 64 and 128 rows, one k-block.
      {"nvfp4_256_columns_swiglu", bf16, 300, 4, 8, 768, 1024, 128, false, Kind::kSwiGLU, 256, 4,
       Format::kNvFp4},
      {"mxfp4_256_columns_routing_skewed_block64", bf16, 200, 2, 8, 512, 320, 64, true,
       Kind::kRoutingWeights, 256, 3, Format::kMxFp4},
      {"nvfp4_256_columns_k_64", bf16, 90, 2, 6, 256, 64, 128, false, Kind::kPlain, 256, 2,
       Format::kNvFp4},
      // 256 token rows a block (FP4 prefill's, 128 accumulators a consumer thread, 128 weight
      // rows): the default and forced stages, each epilogue, both formats; given sorted, a run's
      // last block of 128 rows or fewer in half the products and decode's few pairs in 8; one,
      // three (all 256 columns: no sorted) and five k-blocks.
      {"nvfp4_block256_swiglu", bf16, 600, 4, 8, 768, 1024, 256, false, Kind::kSwiGLU, 0, 0,
       Format::kNvFp4, true},
      {"mxfp4_block256_routing_skewed", bf16, 500, 2, 8, 512, 2048, 256, true,
       Kind::kRoutingWeights, 128, 4, Format::kMxFp4},
      {"nvfp4_block256_k_320_3_stages", bf16, 300, 2, 6, 256, 320, 256, false, Kind::kPlain, 128, 3,
       Format::kNvFp4, true},
      {"nvfp4_block256_k_64_no_sorted", bf16, 200, 4, 4, 256, 64, 256, false, Kind::kPlain, 128, 5,
       Format::kNvFp4},
      {"mxfp4_block256_k_192_full_width", bf16, 400, 2, 2, 384, 192, 256, false, Kind::kSwiGLU, 128,
       4, Format::kMxFp4},
      {"mxfp4_block256_few_pairs", bf16, 3, 4, 64, 512, 1024, 256, false, Kind::kSwiGLU, 0, 0,
       Format::kMxFp4, true},
      // K 320: MXFP4 scale rows of 10 bytes, aligned to 2 only (the 2-byte scale copies).
      {"mxfp4_k_320_two_byte_scale_rows", bf16, 20, 4, 8, 128, 320, 64, false, Kind::kSwiGLU, 0, 0,
       Format::kMxFp4, true},
      // The decode kernel forced, FP4: GLM's gate/up at T 1; blocks of more than 8 tokens
      // (several passes; no sorted: every row of a block of 128); K of 3 steps (the two sets of
      // warps uneven) and of 1 (the second set idle); the rings refilling at depths 4 and 6 (K of
      // 12 steps: 6 a set; of 14: 7 a set).
      {"nvfp4_decode_kernel_glm_gate_up", bf16, 1, 4, 64, 3072, 2048, 64, false, Kind::kSwiGLU, 64,
       3, Format::kNvFp4, true, 1},
      {"nvfp4_decode_kernel_swiglu", bf16, 3, 4, 64, 512, 1024, 64, false, Kind::kSwiGLU, 64, 2,
       Format::kNvFp4, true, 1},
      {"mxfp4_decode_kernel_passes", bf16, 40, 2, 4, 192, 256, 64, false, Kind::kPlain, 64, 3,
       Format::kMxFp4, true, 1},
      {"mxfp4_decode_kernel_skewed_k_384", bf16, 60, 2, 8, 256, 384, 64, true,
       Kind::kRoutingWeights, 64, 2, Format::kMxFp4, false, 1},
      {"nvfp4_decode_kernel_k_128_block128_depth_6", bf16, 40, 2, 8, 128, 128, 128, false,
       Kind::kPlain, 64, 6, Format::kNvFp4, false, 1},
      {"nvfp4_decode_kernel_glm_down_routing_weights", bf16, 4, 4, 64, 2048, 1536, 64, false,
       Kind::kRoutingWeights, 64, 2, Format::kNvFp4, false, 1},
      {"nvfp4_decode_kernel_k_1536_depth_4", bf16, 4, 4, 16, 256, 1536, 64, false, Kind::kPlain, 64,
       4, Format::kNvFp4, true, 1},
      {"mxfp4_decode_kernel_k_1792_depth_6", bf16, 3, 4, 16, 128, 1792, 64, true, Kind::kSwiGLU, 64,
       6, Format::kMxFp4, true, 1},
      // The decode kernel with 16-bit weights: GLM's gate/up at T 1, fp16 skewed with routing
      // weights (several passes; K of 5 steps of 64), bf16 over blocks of 128 with no sorted.
      {"bf16_decode_kernel_glm_gate_up", bf16, 1, 4, 64, 3072, 2048, 64, false, Kind::kSwiGLU, 64,
       2, Format::kSameAsX, true, 1},
      {"fp16_decode_kernel_skewed_k_320", fp16, 60, 2, 8, 256, 320, 64, true, Kind::kRoutingWeights,
       64, 3, Format::kSameAsX, false, 1},
      {"bf16_decode_kernel_block128", bf16, 40, 2, 8, 128, 192, 128, false, Kind::kPlain, 64, 2,
       Format::kSameAsX, false, 1},
      // ... K of 11 steps at depths 3 and 4 (the rings refill: 6 and 5 steps), and of one step.
      {"fp16_decode_kernel_k_704_depth_3", fp16, 5, 4, 16, 128, 704, 64, false, Kind::kSwiGLU, 64,
       3, Format::kSameAsX, true, 1},
      {"bf16_decode_kernel_k_704_depth_4", bf16, 5, 4, 16, 128, 704, 64, true, Kind::kPlain, 64, 4,
       Format::kSameAsX, true, 1},
      {"bf16_decode_kernel_k_64", bf16, 20, 2, 8, 192, 64, 64, false, Kind::kPlain, 64, 2,
       Format::kSameAsX, true, 1},
      // Padding rows left unwritten (the layer's GEMMs): the decode kernel, FP4 and 16-bit, and
      // the op's choice over a prefill-sized layout (the pipeline writes them anyway).
      {"nvfp4_decode_kernel_padding_unwritten", bf16, 3, 4, 16, 256, 1024, 64, false, Kind::kSwiGLU,
       64, 2, Format::kNvFp4, true, 1, 0, false},
      {"bf16_decode_kernel_padding_unwritten", bf16, 4, 4, 16, 2048, 512, 64, false,
       Kind::kRoutingWeights, 64, 2, Format::kSameAsX, false, 1, 0, false},
      {"bf16_padding_unwritten_op_choice", bf16, 300, 4, 8, 256, 512, 128, false,
       Kind::kRoutingWeights, 0, 0, Format::kSameAsX, false, 0, 0, false},
      // One set of warps over every K step (decode 2): GLM's gate/up at T 1, MXFP4 skewed with
      // routing weights (several passes, K of 3 steps at depth 4), bf16 K 704 (11 steps, the ring
      // refilling), fp16 over blocks of 128 with no sorted.
      {"nvfp4_decode_one_set_glm_gate_up", bf16, 1, 4, 64, 3072, 2048, 64, false, Kind::kSwiGLU, 64,
       2, Format::kNvFp4, true, 2},
      {"mxfp4_decode_one_set_skewed_k_384", bf16, 60, 2, 8, 256, 384, 64, true,
       Kind::kRoutingWeights, 64, 4, Format::kMxFp4, false, 2},
      {"bf16_decode_one_set_k_704", bf16, 5, 4, 16, 128, 704, 64, true, Kind::kPlain, 64, 2,
       Format::kSameAsX, true, 2},
      {"fp16_decode_one_set_block128", fp16, 40, 2, 8, 128, 192, 128, false, Kind::kPlain, 64, 4,
       Format::kSameAsX, false, 2},
      {"mxfp4_decode_one_set_padding_unwritten", bf16, 3, 4, 16, 256, 1024, 64, false,
       Kind::kSwiGLU, 64, 2, Format::kMxFp4, true, 2, 0, false}};
}

INSTANTIATE_TEST_SUITE_P(All, MoeGemmTest, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return std::string(info.param.name); });

// The masked layout: x [E, M, K] with device counts (0, M, past M, in between), against fp64 per
// held row; rows past an expert's count keep their poison. 16-bit and FP4 weights.
struct MaskedCase {
  const char* name;
  DType dtype;
  int experts, max_m, n, k, expected_m;
  Kind epilogue = Kind::kPlain;
  Format weights = Format::kSameAsX;
  ops::MoeGemm::Config forced{0};  // block_n 0: the op's choice
};

void PrintTo(const MaskedCase& c, std::ostream* os) {
  *os << c.name;
}

class MoeGemmMaskedTest : public SharedKernelStore,
                          public ::testing::WithParamInterface<MaskedCase> {};

TEST_P(MoeGemmMaskedTest, MatchesDoublePerHeldRow) {
  KJIT_REQUIRE_GPU();
  if (!arch::current().has_wgmma())
    GTEST_SKIP() << "the grouped GEMM needs sm_90a so far; this card is " << arch::current().name();
  const MaskedCase& c = GetParam();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "input seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 0.1);
  std::uniform_int_distribution<int> count(1, c.max_m - 1);
  std::vector<int> counts(static_cast<std::size_t>(c.experts));
  for (int e = 0; e < c.experts; ++e)
    counts[e] = e == 0 ? 0 : e == 1 ? c.max_m : e == 2 ? c.max_m + 50 : count(rng);
  std::vector<std::uint16_t> x(static_cast<std::size_t>(c.experts) * c.max_m * c.k);
  for (auto& e : x)
    e = to_bits(c.dtype, normal(rng));
  const ExpertWeights w(c.weights, c.dtype, c.experts, c.n, c.k, rng());
  const int y_cols = c.epilogue == Kind::kSwiGLU ? c.n / 2 : c.n;
  DeviceBuffer dx(x.size() * 2), dcounts(counts.size() * 4),
      dy(static_cast<std::size_t>(c.experts) * c.max_m * y_cols * 2);
  dx.upload(x.data(), x.size() * 2);
  dcounts.upload(counts.data(), counts.size() * 4);
  dy.fill_bytes(0xff);
  Stream stream;
  const TensorView vx(dx.data(), c.dtype, {c.experts, c.max_m, c.k}),
      vcounts(dcounts.data(), DType::Int32, {c.experts}),
      vy(dy.data(), c.dtype, {c.experts, c.max_m, y_cols});
  if (c.forced.block_n) {
    const ops::Call<ops::MoeGemm> call =
        ops::MoeGemm::validate_masked(vx, vcounts, c.expected_m, w.view(), vy, c.epilogue);
    ASSERT_TRUE(ops::MoeGemm::valid(c.forced, call.problem, arch::current()));
    launch_forced(c.forced, call, stream.handle());
  } else if (c.weights == Format::kSameAsX) {
    moe::grouped_gemm_masked(vx, vcounts, c.expected_m, w.view().codes, vy, c.epilogue,
                             stream.handle());
  } else {
    moe::grouped_gemm_masked(vx, vcounts, c.expected_m, w.fp4(), vy, c.epilogue, stream.handle());
  }
  stream.synchronize();
  std::vector<std::uint16_t> y(dy.size() / 2);
  dy.download(y.data(), dy.size());
  std::vector<double> xf(x.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    xf[i] = from_bits(c.dtype, x[i]);
  for (int e = 0; e < c.experts; ++e) {
    for (int r = 0; r < c.max_m; ++r) {
      const std::uint16_t* got = &y[(static_cast<std::size_t>(e) * c.max_m + r) * y_cols];
      if (r >= std::min(counts[e], c.max_m)) {
        for (int col = 0; col < y_cols; ++col)
          ASSERT_EQ(got[col], 0xffff) << "expert " << e << " row " << r << " past its count";
        continue;
      }
      const double* xr = &xf[(static_cast<std::size_t>(e) * c.max_m + r) * c.k];
      for (int col = 0; col < y_cols; ++col) {
        const auto [want, bound] = expected(xr, w, e, c.n, c.k, col, c.epilogue, 1.0);
        const double err = std::abs(from_bits(c.dtype, got[col]) - want);
        ASSERT_LE(err, 2e-2) << "expert " << e << " row " << r << " col " << col;
        ASSERT_LE(err, ulp(c.dtype, want) + bound)
            << "expert " << e << " row " << r << " col " << col << " want " << want;
      }
    }
  }
}

std::vector<MaskedCase> masked_cases() {
  const DType bf16 = DType::BFloat16, fp16 = DType::Float16;
  return {{"decode_bf16_block64", bf16, 8, 48, 256, 512, 16},
          {"decode_fp16_block128_swiglu", fp16, 6, 150, 192, 256, 0, Kind::kSwiGLU},
          {"glm_gate_up_swiglu", bf16, 8, 24, 3072, 2048, 8, Kind::kSwiGLU},
          {"nvfp4_glm_gate_up_swiglu", bf16, 8, 24, 3072, 2048, 8, Kind::kSwiGLU, Format::kNvFp4},
          {"mxfp4_glm_down_block128", bf16, 6, 150, 2048, 1536, 0, Kind::kPlain, Format::kMxFp4},
          {"nvfp4_block128_swiglu", bf16, 5, 140, 512, 1024, 0, Kind::kSwiGLU, Format::kNvFp4},
          // The decode kernel forced: MXFP4 K 640 (5 steps), and GLM's gate/up (passes of 8
          // tokens, an expert past M).
          {"mxfp4_decode_kernel_plain",
           bf16,
           5,
           40,
           256,
           640,
           16,
           Kind::kPlain,
           Format::kMxFp4,
           {64, 2, 1}},
          {"nvfp4_decode_kernel_glm_gate_up_swiglu",
           bf16,
           8,
           24,
           3072,
           2048,
           8,
           Kind::kSwiGLU,
           Format::kNvFp4,
           {64, 3, 1}},
          // Blocks of 128 rows (expected_m 0): 16 passes of 8 tokens for a full expert.
          {"mxfp4_decode_kernel_block128_swiglu",
           bf16,
           5,
           140,
           256,
           512,
           0,
           Kind::kSwiGLU,
           Format::kMxFp4,
           {64, 2, 1}},
          {"fp16_decode_kernel_swiglu",
           fp16,
           6,
           40,
           192,
           256,
           16,
           Kind::kSwiGLU,
           Format::kSameAsX,
           {64, 3, 1}},
          // One set of warps (decode 2): bf16 weights, K of 7 steps, 30 rows (4 passes).
          {"bf16_decode_one_set_swiglu_k_448",
           bf16,
           7,
           30,
           256,
           448,
           16,
           Kind::kSwiGLU,
           Format::kSameAsX,
           {64, 2, 2}},
          // Persistent blocks over more tiles than SMs, the tiles past an expert's count skipped.
          {"persistent_256_columns_block128",
           bf16,
           12,
           300,
           2048,
           1536,
           0,
           Kind::kPlain,
           Format::kSameAsX,
           {256, 3, 0, 1}},
          {"persistent_swiglu_fp16_block64",
           fp16,
           10,
           200,
           512,
           256,
           16,
           Kind::kSwiGLU,
           Format::kSameAsX,
           {128, 4, 0, 1}}};
}

INSTANTIATE_TEST_SUITE_P(All, MoeGemmMaskedTest, ::testing::ValuesIn(masked_cases()),
                         [](const auto& info) { return std::string(info.param.name); });

// moe_expert_gemm_fp4 through the C ABI gives the C++ API's bits: NVFP4 over the contiguous
// layout (a block with no expert among them), MXFP4 with SwiGLU over the masked one.
TEST(MoeGemmRuns, Fp4CAbiMatchesTheCppApi) {
  KJIT_REQUIRE_GPU();
  if (!arch::current().has_wgmma())
    GTEST_SKIP() << "the grouped GEMM needs sm_90a so far; this card is " << arch::current().name();
  constexpr int kE = 3, kN = 256, kK = 512, kBlock = 64, kRows = 4 * kBlock, kM = 40;
  std::mt19937 rng(5);
  std::normal_distribution<double> normal(0.0, 0.1);
  std::vector<std::uint16_t> x(kRows * kK);
  for (auto& v : x)
    v = to_bits(DType::BFloat16, normal(rng));
  const std::vector<int> block_expert{0, 2, -1, 1}, masked_m{kM, 0, 17};
  DeviceBuffer dx(x.size() * 2), dblocks(block_expert.size() * 4), dmasked(masked_m.size() * 4),
      y_cpp(kRows * kN * 2), y_c(kRows * kN * 2), ym_cpp(kE * kM * kN), ym_c(kE * kM * kN);
  dx.upload(x.data(), x.size() * 2);
  dblocks.upload(block_expert.data(), block_expert.size() * 4);
  dmasked.upload(masked_m.data(), masked_m.size() * 4);
  for (DeviceBuffer* y : {&y_cpp, &y_c, &ym_cpp, &ym_c})
    y->fill_bytes(0xff);
  const ExpertWeights nv(Format::kNvFp4, DType::BFloat16, kE, kN, kK, 11),
      mx(Format::kMxFp4, DType::BFloat16, kE, kN, kK, 12);
  const TensorView vx(dx.data(), DType::BFloat16, {kRows, kK}),
      vblocks(dblocks.data(), DType::Int32, {4}),
      vy_cpp(y_cpp.data(), DType::BFloat16, {kRows, kN}),
      vy_c(y_c.data(), DType::BFloat16, {kRows, kN}), vxm(dx.data(), DType::BFloat16, {kE, kM, kK}),
      vmasked(dmasked.data(), DType::Int32, {kE}),
      vym_cpp(ym_cpp.data(), DType::BFloat16, {kE, kM, kN / 2}),
      vym_c(ym_c.data(), DType::BFloat16, {kE, kM, kN / 2});
  Stream stream;
  const auto s = stream.handle();
  moe::grouped_gemm(vx, vblocks, kBlock, nv.fp4(), vy_cpp, {}, s);
  moe::grouped_gemm_masked(vxm, vmasked, 16, mx.fp4(), vym_cpp, Kind::kSwiGLU, s);
  {
    const moe::Fp4Weights w = nv.fp4(), wm = mx.fp4();
    const DLTensor tx = dl(vx), tblocks = dl(vblocks), tcodes = dl(w.codes), tscales = dl(w.scales),
                   tts = dl(w.tensor_scale), ty = dl(vy_c), txm = dl(vxm), tmasked = dl(vmasked),
                   tcodes_m = dl(wm.codes), tscales_m = dl(wm.scales), tym = dl(vym_c);
    ASSERT_EQ(kjit_moe_expert_gemm_fp4(&tx, &tblocks, kBlock, 0, &tcodes, &tscales, &tts, &ty,
                                       KJIT_MOE_GEMM_PLAIN, nullptr, nullptr, s),
              KJIT_SUCCESS)
        << kjit_last_error();
    ASSERT_EQ(kjit_moe_expert_gemm_fp4_masked(&txm, &tmasked, 16, 1, &tcodes_m, &tscales_m, nullptr,
                                              &tym, KJIT_MOE_GEMM_SWIGLU, s),
              KJIT_SUCCESS)
        << kjit_last_error();
  }
  stream.synchronize();
  const std::vector<std::uint8_t> contiguous = device_bytes(y_cpp), masked = device_bytes(ym_cpp);
  EXPECT_EQ(contiguous, device_bytes(y_c));
  EXPECT_EQ(masked, device_bytes(ym_c));
  // Written where the layout holds rows, poison (a NaN no product gives) elsewhere: the block
  // with no expert, the expert with no rows, the rows past 17.
  const auto element = [](const std::vector<std::uint8_t>& v, std::size_t i) {
    return v[2 * i] | v[2 * i + 1] << 8;
  };
  EXPECT_NE(element(contiguous, 0), 0xffff);
  EXPECT_EQ(element(contiguous, 2 * kBlock * kN), 0xffff);
  EXPECT_EQ(element(masked, kM * (kN / 2)), 0xffff);
  EXPECT_NE(element(masked, 2 * kM * (kN / 2)), 0xffff);
  EXPECT_EQ(element(masked, (2 * kM + 17) * (kN / 2)), 0xffff);
}

}  // namespace
}  // namespace kjit::test

// The tokens' trip into moe align's layout and back, on the GPU. The layout comes from
// kjit::moe::align (checked exactly elsewhere). permute: every row of x_sorted is, bit for bit, its
// pair's token (zeros for a padding row), every placed pair's position points at its row, a pair
// align did not place keeps -1. unpermute: against a fp64 sum over the positions the device wrote,
// within one unit in the last place of the dtype (the device sums in fp32 and rounds once) plus
// fp32's error on the terms. Outputs poisoned first; row strides wider than D; weights and the
// shared expert's output each present or absent.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kjit/c_api.h"
#include "kjit/moe.hpp"
#include "tests/support/device_bytes.hpp"
#include "tests/support/dl_tensor.hpp"
#include "tests/support/dtype_bits.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/isolated_cache.hpp"
#include "tests/support/moe_layout.hpp"

namespace kjit::test {
namespace {

struct PermuteCase {
  const char* name;
  DType dtype;
  int tokens, top_k, experts, hidden;
  int row_pad = 0;  // extra elements at the end of x's and out's rows
  bool weighted = true, shared = false;
  int invalid = 0;           // ids set outside [0, E): not placed
  bool zero_padding = true;  // false: padding rows keep their poison
};

void PrintTo(const PermuteCase& c, std::ostream* os) {
  *os << c.name;
}

class MoePermuteTest : public SharedKernelStore,
                       public ::testing::WithParamInterface<PermuteCase> {};

TEST_P(MoePermuteTest, RoundTripsThroughTheLayout) {
  KJIT_REQUIRE_GPU();
  const PermuteCase& c = GetParam();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "input seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  std::uniform_int_distribution<int> expert(0, c.experts - 1);
  const int pairs = c.tokens * c.top_k, block = 64, d = c.hidden, stride = d + c.row_pad;
  std::vector<int> ids(static_cast<std::size_t>(pairs));
  for (int& e : ids)
    e = expert(rng);
  for (int i = 0; i < c.invalid && i < pairs; ++i)
    ids[(i * 7919) % pairs] = i % 2 ? -1 : c.experts + i;

  // The layout, by the align op.
  const DeviceAlignment alignment(pairs, c.experts, block);
  const std::int64_t rows = alignment.rows;
  DeviceBuffer dids(std::max<std::size_t>(ids.size() * 4, 4));
  if (!ids.empty()) dids.upload(ids.data(), ids.size() * 4);
  Stream stream;
  alignment.align(TensorView(dids.data(), DType::Int32, {c.tokens, c.top_k}), stream.handle());
  std::vector<int> layout(static_cast<std::size_t>(rows));
  stream.synchronize();
  alignment.sorted.download(layout.data(), layout.size() * 4);

  // permute
  std::vector<std::uint16_t> x(static_cast<std::size_t>(c.tokens) * stride);
  for (auto& v : x)
    v = to_bits(c.dtype, normal(rng));
  DeviceBuffer dx(std::max<std::size_t>(x.size() * 2, 16)), dx_sorted(rows * d * 2),
      dpositions(std::max(pairs, 1) * 4);
  if (!x.empty()) dx.upload(x.data(), x.size() * 2);
  dx_sorted.fill_bytes(0x7f);
  dpositions.fill_bytes(0x55);
  moe::permute(TensorView(dx.data(), c.dtype, {c.tokens, d}, {stride, 1}), alignment.sorted_view(),
               c.top_k, TensorView(dx_sorted.data(), c.dtype, {rows, d}),
               TensorView(dpositions.data(), DType::Int32, {pairs}), stream.handle(),
               c.zero_padding);
  stream.synchronize();
  std::vector<std::uint16_t> x_sorted(static_cast<std::size_t>(rows) * d);
  std::vector<int> positions(static_cast<std::size_t>(pairs));
  dx_sorted.download(x_sorted.data(), x_sorted.size() * 2);
  if (pairs > 0) dpositions.download(positions.data(), positions.size() * 4);
  std::vector<bool> placed(static_cast<std::size_t>(pairs), false);
  for (std::int64_t i = 0; i < rows; ++i) {
    const int pair = layout[i];
    const bool real = pair >= 0 && pair < pairs;
    for (int col = 0; col < d; ++col) {
      const std::uint16_t want = real ? x[static_cast<std::size_t>(pair / c.top_k) * stride + col]
                                 : c.zero_padding ? 0
                                                  : 0x7f7f;  // the poison, left
      ASSERT_EQ(x_sorted[i * d + col], want) << "row " << i << " (pair " << pair << ") col " << col;
    }
    if (real) {
      ASSERT_EQ(positions[pair], i) << "pair " << pair;
      placed[pair] = true;
    }
  }
  for (int p = 0; p < pairs; ++p) {
    if (!placed[p]) {
      EXPECT_EQ(positions[p], -1) << "pair " << p << " (expert " << ids[p] << ")";
    }
    EXPECT_EQ(placed[p], ids[p] >= 0 && ids[p] < c.experts) << "pair " << p;
  }

  // unpermute, over the experts' outputs y (random, one per layout row)
  std::vector<std::uint16_t> y(static_cast<std::size_t>(rows) * d),
      shared(static_cast<std::size_t>(c.tokens) * stride);
  for (auto& v : y)
    v = to_bits(c.dtype, normal(rng));
  for (auto& v : shared)
    v = to_bits(c.dtype, normal(rng));
  std::vector<float> weights(static_cast<std::size_t>(pairs));
  std::uniform_real_distribution<float> unit(0.f, 1.f);
  for (float& w : weights)
    w = unit(rng);
  DeviceBuffer dy(std::max<std::size_t>(y.size() * 2, 16)),
      dshared(std::max<std::size_t>(shared.size() * 2, 16)),
      dweights(std::max<std::size_t>(weights.size() * 4, 4)),
      dout(std::max<std::size_t>(shared.size() * 2, 16));
  if (!y.empty()) dy.upload(y.data(), y.size() * 2);
  if (!shared.empty()) dshared.upload(shared.data(), shared.size() * 2);
  if (!weights.empty()) dweights.upload(weights.data(), weights.size() * 4);
  dout.fill_bytes(0x7f);
  moe::unpermute(
      TensorView(dy.data(), c.dtype, {rows, d}),
      TensorView(dpositions.data(), DType::Int32, {pairs}), c.top_k,
      c.weighted ? TensorView(dweights.data(), DType::Float32, {c.tokens, c.top_k}) : TensorView(),
      c.shared ? TensorView(dshared.data(), c.dtype, {c.tokens, d}, {stride, 1}) : TensorView(),
      TensorView(dout.data(), c.dtype, {c.tokens, d}, {stride, 1}), stream.handle());
  stream.synchronize();
  std::vector<std::uint16_t> out(shared.size());
  if (!out.empty()) dout.download(out.data(), out.size() * 2);
  for (int t = 0; t < c.tokens; ++t) {
    for (int col = 0; col < d; ++col) {
      double want = 0, magnitude = 0;
      auto add = [&](double term) {
        want += term;
        magnitude += std::abs(term);
      };
      if (c.shared) add(from_bits(c.dtype, shared[static_cast<std::size_t>(t) * stride + col]));
      for (int j = 0; j < c.top_k; ++j) {
        const int row = positions[t * c.top_k + j];
        if (row < 0) continue;
        const double w = c.weighted ? weights[t * c.top_k + j] : 1.0;
        add(w * from_bits(c.dtype, y[static_cast<std::size_t>(row) * d + col]));
      }
      const double got = from_bits(c.dtype, out[static_cast<std::size_t>(t) * stride + col]);
      ASSERT_LE(std::abs(got - want), ulp(c.dtype, want) + 1e-6 * magnitude)
          << "token " << t << " col " << col << ": got " << got << ", want " << want;
    }
  }
}

std::vector<PermuteCase> cases() {
  const DType bf16 = DType::BFloat16, fp16 = DType::Float16;
  return {{"glm_decode", bf16, 16, 4, 64, 2048},
          {"glm_prefill_shared", bf16, 1000, 4, 64, 2048, 0, true, true},
          {"deepseek_v3_fp16", fp16, 37, 8, 256, 7168},
          {"unweighted_shared_padded_rows", fp16, 300, 2, 8, 512, 8, false, true},
          {"invalid_ids", bf16, 200, 4, 64, 256, 0, true, false, 13},
          {"one_token_hidden_8", bf16, 1, 1, 8, 8},
          {"no_tokens", bf16, 0, 4, 64, 2048},
          {"glm_decode_padding_unwritten", bf16, 16, 4, 64, 2048, 0, true, true, 0, false}};
}

INSTANTIATE_TEST_SUITE_P(All, MoePermuteTest, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return std::string(info.param.name); });

// Router -> align -> permute -> unpermute through the C ABI gives the C++ API's bits
// (GLM-4.7-Flash's router: sigmoid, top 4 of 64, renormalised, x1.8).
TEST(MoePermuteRuns, CAbiChainMatchesTheCppApi) {
  KJIT_REQUIRE_GPU();
  constexpr int kT = 50, kE = 64, kK = 4, kD = 256, kBlock = 64;
  const std::int64_t rows = moe::align_capacity(kT * kK, kE, kBlock);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> logits(kT * kE);
  for (float& v : logits)
    v = normal(rng);
  std::vector<std::uint16_t> x(kT * kD);
  for (auto& v : x)
    v = to_bits(DType::BFloat16, normal(rng));
  DeviceBuffer dlogits(logits.size() * 4), dx(x.size() * 2);
  dlogits.upload(logits.data(), logits.size() * 4);
  dx.upload(x.data(), x.size() * 2);
  // Each path's buffers, and the views both the C++ calls and the DLTensors are made of.
  struct Outputs {
    explicit Outputs(std::int64_t rows)
        : rows(rows), x_sorted_buffer(static_cast<std::size_t>(rows) * kD * 2) {}
    TensorView ids() const { return TensorView(ids_buffer.data(), DType::Int32, {kT, kK}); }
    TensorView weights() const {
      return TensorView(weights_buffer.data(), DType::Float32, {kT, kK});
    }
    TensorView x_sorted() const {
      return TensorView(x_sorted_buffer.data(), DType::BFloat16, {rows, kD});
    }
    TensorView positions() const {
      return TensorView(positions_buffer.data(), DType::Int32, {kT * kK});
    }
    TensorView out() const { return TensorView(out_buffer.data(), DType::BFloat16, {kT, kD}); }
    std::int64_t rows;
    DeviceAlignment alignment{kT * kK, kE, kBlock};
    DeviceBuffer ids_buffer{kT * kK * 4}, weights_buffer{kT * kK * 4}, x_sorted_buffer,
        positions_buffer{kT * kK * 4}, out_buffer{kT * kD * 2};
  };
  const Outputs cpp(rows), c(rows);
  const TensorView vlogits(dlogits.data(), DType::Float32, {kT, kE}),
      vx(dx.data(), DType::BFloat16, {kT, kD});
  Stream stream;
  const auto s = stream.handle();
  moe::router_topk(vlogits, TensorView(), cpp.ids(), cpp.weights(), {true, kK, 1, 1, true, 1.8f},
                   s);
  cpp.alignment.align(cpp.ids(), s);
  moe::permute(vx, cpp.alignment.sorted_view(), kK, cpp.x_sorted(), cpp.positions(), s);
  moe::unpermute(cpp.x_sorted(), cpp.positions(), kK, cpp.weights(), TensorView(), cpp.out(), s);
  {
    // dl() borrows its view's shape: the views live to the end of the block.
    const TensorView ids = c.ids(), weights = c.weights(), x_sorted = c.x_sorted(),
                     positions = c.positions(), out = c.out();
    const moe::Alignment a = c.alignment.views();
    const DLTensor tlogits = dl(vlogits), tids = dl(ids), tweights = dl(weights),
                   tsorted = dl(a.sorted), tblocks = dl(a.block_expert), tcounts = dl(a.counts),
                   toffsets = dl(a.offsets), tinvalid = dl(a.invalid), tx = dl(vx),
                   txs = dl(x_sorted), tpositions = dl(positions), tout = dl(out);
    const kjit_moe_router_options copts{1, kK, 1, 1, 1, 1.8f};
    ASSERT_EQ(kjit_moe_router_topk(&tlogits, nullptr, &tids, &tweights, &copts, s), KJIT_SUCCESS)
        << kjit_last_error();
    ASSERT_EQ(
        kjit_moe_align(&tids, kE, kBlock, &tsorted, &tblocks, &tcounts, &toffsets, &tinvalid, s),
        KJIT_SUCCESS)
        << kjit_last_error();
    ASSERT_EQ(kjit_moe_permute(&tx, &tsorted, kK, &txs, &tpositions, s), KJIT_SUCCESS)
        << kjit_last_error();
    ASSERT_EQ(kjit_moe_unpermute(&txs, &tpositions, kK, &tweights, nullptr, &tout, s), KJIT_SUCCESS)
        << kjit_last_error();
  }
  stream.synchronize();
  EXPECT_EQ(device_bytes(cpp.ids_buffer), device_bytes(c.ids_buffer));
  EXPECT_EQ(device_bytes(cpp.weights_buffer), device_bytes(c.weights_buffer));
  EXPECT_EQ(device_bytes(cpp.alignment.sorted), device_bytes(c.alignment.sorted));
  EXPECT_EQ(device_bytes(cpp.alignment.block_expert), device_bytes(c.alignment.block_expert));
  EXPECT_EQ(device_bytes(cpp.x_sorted_buffer), device_bytes(c.x_sorted_buffer));
  EXPECT_EQ(device_bytes(cpp.positions_buffer), device_bytes(c.positions_buffer));
  EXPECT_EQ(device_bytes(cpp.out_buffer), device_bytes(c.out_buffer));
}

TEST(MoePermuteRuns, BadInputIsRefusedBeforeAnyDeviceWork) {
  KJIT_REQUIRE_GPU();
  DeviceBuffer x(4 * 24 * 2), sorted(256 * 4), x_sorted(256 * 24 * 2), positions(16 * 4);
  Stream stream;
  const TensorView layout(sorted.data(), DType::Int32, {256});
  // D = 20 is not a multiple of 8.
  EXPECT_THROW(moe::permute(TensorView(x.data(), DType::BFloat16, {4, 20}), layout, 4,
                            TensorView(x_sorted.data(), DType::BFloat16, {256, 20}),
                            TensorView(positions.data(), DType::Int32, {16}), stream.handle()),
               InvalidArgument);
  // positions for 4 x 2 pairs where top_k is 4.
  EXPECT_THROW(moe::permute(TensorView(x.data(), DType::BFloat16, {4, 24}), layout, 4,
                            TensorView(x_sorted.data(), DType::BFloat16, {256, 24}),
                            TensorView(positions.data(), DType::Int32, {8}), stream.handle()),
               InvalidArgument);
}

}  // namespace
}  // namespace kjit::test

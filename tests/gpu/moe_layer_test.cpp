// The MoE layer on the GPU (router -> align -> permute -> gate/up GEMM with SwiGLU -> down GEMM
// with the routing weights -> unpermute + the shared expert) against a fp64 composition of the
// reference router and the experts' MLPs, with FlashAttention's kind of bound: max|out - ref| <=
// 2 max|low - ref| + 1e-3, where `low` rounds what the layer rounds (h after SwiGLU, each routed
// row after its weight, the sum) to the dtype. GLM-4.7-Flash's router (sigmoid, a correction
// bias, renormalised, x1.8) and a softmax one, with and without a shared expert; 16-bit experts
// and FP4 ones (NVFP4, MXFP4: the composition over their dequantised values, which bf16 holds
// exactly).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "driver/arch.hpp"
#include "kjit/c_api.h"
#include "kjit/jit.hpp"
#include "kjit/moe.hpp"
#include "tests/reference/moe_reference.hpp"
#include "tests/support/dl_tensor.hpp"
#include "tests/support/dtype_bits.hpp"
#include "tests/support/expert_weights.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/isolated_cache.hpp"

namespace kjit::test {
namespace {

using Format = ops::MoeGemm::WeightFormat;

struct LayerCase {
  const char* name;
  DType dtype;
  int tokens, hidden, experts, inter, top_k, block;
  bool glm_router = true, shared = false;
  Format weights = Format::kSameAsX;
};

void PrintTo(const LayerCase& c, std::ostream* os) {
  *os << c.name;
}

class MoeLayerTest : public SharedKernelStore, public ::testing::WithParamInterface<LayerCase> {};

TEST_P(MoeLayerTest, MatchesTheDoubleComposition) {
  KJIT_REQUIRE_GPU();
  if (!arch::current().has_wgmma())
    GTEST_SKIP() << "the layer's GEMM needs sm_90a so far; this card is " << arch::current().name();
  const LayerCase& c = GetParam();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "input seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  const int t = c.tokens, h = c.hidden, e = c.experts, in = c.inter, k = c.top_k;
  auto fill = [&](std::vector<std::uint16_t>& v, double deviation) {
    for (auto& x : v)
      x = to_bits(c.dtype, normal(rng) * deviation);
  };
  std::vector<std::uint16_t> x(static_cast<std::size_t>(t) * h),
      shared(static_cast<std::size_t>(t) * h);
  fill(x, 1.0);
  fill(shared, 0.5);
  const ExpertWeights gate_up(c.weights, c.dtype, e, 2 * in, h, rng(), 1.0 / std::sqrt(h)),
      down(c.weights, c.dtype, e, h, in, rng(), 1.0 / std::sqrt(in));
  std::vector<float> logits(static_cast<std::size_t>(t) * e), bias(e);
  for (float& v : logits)
    v = static_cast<float>(normal(rng));
  for (float& v : bias)
    v = static_cast<float>(normal(rng) * 0.1);

  DeviceBuffer dx(x.size() * 2), dshared(shared.size() * 2), dlogits(logits.size() * 4),
      dbias(bias.size() * 4), dout(x.size() * 2);
  dx.upload(x.data(), dx.size());
  dshared.upload(shared.data(), dshared.size());
  dlogits.upload(logits.data(), dlogits.size());
  dbias.upload(bias.data(), dbias.size());
  dout.fill_bytes(0xff);
  moe::LayerOptions options;
  options.router = c.glm_router ? moe::RouterOptions{true, k, 1, 1, true, 1.8f}
                                : moe::RouterOptions{false, k, 1, 1, false, 1.f};
  options.block = c.block;
  Stream stream;
  const TensorView vx(dx.data(), c.dtype, {t, h}), vlogits(dlogits.data(), DType::Float32, {t, e}),
      vbias = c.glm_router ? TensorView(dbias.data(), DType::Float32, {e}) : TensorView(),
      vshared = c.shared ? TensorView(dshared.data(), c.dtype, {t, h}) : TensorView(),
      vout(dout.data(), c.dtype, {t, h});
  if (c.weights == Format::kSameAsX) {
    moe::layer(vx, vlogits, {gate_up.view().codes, down.view().codes, vbias}, vshared, options,
               vout, stream.handle());
  } else {
    moe::layer(vx, vlogits, moe::Fp4LayerWeights{gate_up.fp4(), down.fp4(), vbias}, vshared,
               options, vout, stream.handle());
  }
  // The same layer through the C ABI (kjit_moe_layer, kjit_moe_layer_fp4): the same bits.
  DeviceBuffer dout_c(dout.size());
  dout_c.fill_bytes(0xff);
  {
    const TensorView vout_c(dout_c.data(), c.dtype, {t, h});
    const DLTensor lx = dl(vx), llogits = dl(vlogits), lbias = dl(vbias), lshared = dl(vshared),
                   lout = dl(vout_c);
    const DLTensor* bias_arg = c.glm_router ? &lbias : nullptr;
    const DLTensor* shared_arg = c.shared ? &lshared : nullptr;
    const kjit_moe_router_options ro{options.router.sigmoid,     options.router.top_k,  1, 1,
                                     options.router.renormalize, options.router.scaling};
    kjit_status status;
    if (c.weights == Format::kSameAsX) {
      // Named views: a DLTensor borrows its view's shape and strides.
      const TensorView up = gate_up.view().codes, dn = down.view().codes;
      const DLTensor lup = dl(up), ldown = dl(dn);
      status = kjit_moe_layer(&lx, &llogits, &lup, &ldown, bias_arg, shared_arg, &ro, c.block,
                              &lout, stream.handle());
    } else {
      const moe::Fp4Weights up = gate_up.fp4(), dn = down.fp4();
      const DLTensor lup = dl(up.codes), lup_scales = dl(up.scales),
                     lup_tensor = dl(up.tensor_scale), ldown = dl(dn.codes),
                     ldown_scales = dl(dn.scales), ldown_tensor = dl(dn.tensor_scale);
      const bool nv = up.format == moe::Fp4Format::kNvFp4;
      status = kjit_moe_layer_fp4(&lx, &llogits, nv ? 0 : 1, &lup, &lup_scales,
                                  nv ? &lup_tensor : nullptr, &ldown, &ldown_scales,
                                  nv ? &ldown_tensor : nullptr, bias_arg, shared_arg, &ro, c.block,
                                  &lout, stream.handle());
    }
    ASSERT_EQ(status, KJIT_SUCCESS) << kjit_last_error();
  }
  stream.synchronize();
  std::vector<std::uint16_t> out(x.size()), out_c(x.size());
  dout.download(out.data(), dout.size());
  dout_c.download(out_c.data(), dout_c.size());
  EXPECT_EQ(out, out_c) << "the C ABI's layer differs from the C++ API's";

  reference::RouterConfig router;
  router.sigmoid = c.glm_router;
  router.top_k = k;
  router.renormalize = c.glm_router;
  router.scaling = c.glm_router ? 1.8 : 1.0;
  if (c.glm_router) router.bias.assign(bias.begin(), bias.end());
  const reference::Routing routing =
      reference::route(std::vector<double>(logits.begin(), logits.end()), t, e, router);
  auto v = [&](const std::vector<std::uint16_t>& a, std::size_t i) {
    return from_bits(c.dtype, a[i]);
  };
  double max_err = 0, max_low_err = 0;
  std::vector<double> hi(in), lo(in);
  for (int tok = 0; tok < t; ++tok) {
    std::vector<double> ref(h, 0.0), low(h, 0.0);
    for (int col = 0; col < h; ++col) {
      const double s = c.shared ? v(shared, static_cast<std::size_t>(tok) * h + col) : 0.0;
      ref[col] = low[col] = s;
    }
    for (int j = 0; j < k; ++j) {
      const int ex = routing.ids[static_cast<std::size_t>(tok) * k + j];
      const double w = routing.weights[static_cast<std::size_t>(tok) * k + j];
      for (int i = 0; i < in; ++i) {
        double g = 0, u = 0;
        for (int d = 0; d < h; ++d) {
          const double xv = v(x, static_cast<std::size_t>(tok) * h + d);
          g += xv * gate_up.at((static_cast<std::size_t>(ex) * 2 * in + 2 * i) * h + d);
          u += xv * gate_up.at((static_cast<std::size_t>(ex) * 2 * in + 2 * i + 1) * h + d);
        }
        hi[i] = g / (1 + std::exp(-g)) * u;
        lo[i] = round_to(c.dtype, hi[i]);
      }
      for (int col = 0; col < h; ++col) {
        double yh = 0, yl = 0;
        for (int i = 0; i < in; ++i) {
          const double dv = down.at((static_cast<std::size_t>(ex) * h + col) * in + i);
          yh += dv * hi[i];
          yl += dv * lo[i];
        }
        ref[col] += w * yh;
        low[col] += round_to(c.dtype, w * yl);
      }
    }
    for (int col = 0; col < h; ++col) {
      const double got = v(out, static_cast<std::size_t>(tok) * h + col);
      ASSERT_TRUE(std::isfinite(got)) << "token " << tok << " col " << col;
      max_err = std::max(max_err, std::abs(got - ref[col]));
      max_low_err = std::max(max_low_err, std::abs(round_to(c.dtype, low[col]) - ref[col]));
    }
  }
  std::printf("[ moe layer ] %s: max |err| %.3g, same-dtype reference %.3g\n", c.name, max_err,
              max_low_err);
  EXPECT_LE(max_err, 2 * max_low_err + 1e-3);
}

std::vector<LayerCase> cases() {
  const DType bf16 = DType::BFloat16, fp16 = DType::Float16;
  return {
      {"glm_router_shared_bf16", bf16, 40, 256, 16, 128, 4, 128, true, true},
      {"softmax_top2_fp16_block64", fp16, 70, 128, 8, 192, 2, 64, false, false},
      {"glm_dims_8_experts", bf16, 3, 2048, 8, 1536, 4, 128, true, true},
      // block 0: the layer's choice, 64 rows for 12 pairs over 8 experts, 128 for 600.
      {"auto_block_decode", bf16, 3, 2048, 8, 1536, 4, 0, true, true},
      {"auto_block_128", bf16, 300, 128, 8, 128, 2, 0, false, true},
      // Router -> GEMM integration at top_k 1 and 8 (2 and 4 above).
      {"top1_softmax_16_experts", bf16, 33, 256, 16, 128, 1, 0, false, true},
      {"top8_sigmoid_32_experts", bf16, 20, 256, 32, 192, 8, 0, true, false},
      {"nvfp4_glm_router_shared", bf16, 40, 256, 16, 128, 4, 64, true, true, Format::kNvFp4},
      {"mxfp4_glm_dims_8_experts", bf16, 5, 2048, 8, 1536, 4, 128, true, false, Format::kMxFp4},
      // FP4's blocks of 256 rows (the layer's choice from 1024 pairs an expert).
      {"nvfp4_block_256_router_shared", bf16, 600, 256, 8, 384, 4, 256, true, true, Format::kNvFp4},
      {"mxfp4_block_256_glm_dims", bf16, 520, 2048, 8, 1536, 4, 256, false, false, Format::kMxFp4}};
}

INSTANTIATE_TEST_SUITE_P(All, MoeLayerTest, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace kjit::test

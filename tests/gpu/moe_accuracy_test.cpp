// FP4 experts against bf16 ones at GLM-4.7-Flash's dimensions (H 2048, 64 experts, top 4, I 1536,
// its sigmoid router renormalised x1.8). Real weights cannot be downloaded here: the weights are
// synthetic, N(0, 1/H) for gate/up and N(0, 1/I) for down (variance-preserving, as a trained
// model's projections are to first order; Gaussian tails make the block scales work harder than
// most real ones), the tokens N(0, 1). Each expert is quantised on the device by
// moe::quantize_fp4 with a tensor scale of its own. Bounded and printed:
//  - each expert's relative weight error ||dequantised - w|| / ||w||: on Gaussian weights the CPU
//    reference gives 0.095 (NVFP4) and 0.114 (MXFP4); bound 0.11 and 0.13;
//  - the FP4 layer's relative error and MSE against the bf16 layer, for 1, 128 and 2048 tokens
//    under uniform, skewed (experts 0-7 favoured) and one-hot (expert 5 in every token's top 4)
//    routing: the two GEMMs compose their weights' errors, bound 0.2 (NVFP4) and 0.25 (MXFP4).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "driver/arch.hpp"
#include "kjit/jit.hpp"
#include "kjit/moe.hpp"
#include "tests/reference/moe_reference.hpp"
#include "tests/support/dtype_bits.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/isolated_cache.hpp"
#include "tests/support/splitmix.hpp"

namespace kjit::test {
namespace {

constexpr int kH = 2048, kE = 64, kI = 1536, kTopK = 4;
constexpr DType kBf16 = DType::BFloat16;

// Normal values of deviation `deviation` as bf16 bits (a splitmix64 stream through Box-Muller:
// 600 M of them).
std::vector<std::uint16_t> gaussian_bf16(std::size_t count, double deviation, std::uint64_t seed) {
  SplitMix64 bits{seed};
  std::vector<std::uint16_t> out(count);
  for (std::size_t i = 0; i < count; i += 2) {
    const double u1 = (static_cast<double>(bits.next() >> 11) + 1) * 0x1p-53;
    const double u2 = static_cast<double>(bits.next() >> 11) * 0x1p-53;
    const double r = std::sqrt(-2 * std::log(u1)) * deviation;
    out[i] = to_bits(kBf16, r * std::cos(2 * M_PI * u2));
    if (i + 1 < count) out[i + 1] = to_bits(kBf16, r * std::sin(2 * M_PI * u2));
  }
  return out;
}

// One projection's experts [E, rows, cols] quantised expert by expert on the device, and each
// expert's relative weight error, from the codes and scales read back.
struct QuantisedExperts {
  QuantisedExperts(const std::vector<std::uint16_t>& w, const DeviceBuffer& dw, int rows, int cols,
                   moe::Fp4Format format, const Stream& stream)
      : format(format),
        rows(rows),
        cols(cols),
        block(format == moe::Fp4Format::kNvFp4 ? 16 : 32),
        codes(static_cast<std::size_t>(kE) * rows * cols / 2),
        scales(static_cast<std::size_t>(kE) * rows * cols / block),
        tensor_scale(kE * 4) {
    const std::size_t per_expert = static_cast<std::size_t>(rows) * cols;
    for (int e = 0; e < kE; ++e) {
      moe::quantize_fp4(
          TensorView(static_cast<char*>(dw.data()) + e * per_expert * 2, kBf16, {rows, cols}),
          format,
          TensorView(static_cast<char*>(codes.data()) + e * per_expert / 2, DType::UInt8,
                     {rows, cols / 2}),
          TensorView(static_cast<char*>(scales.data()) + e * per_expert / block, DType::UInt8,
                     {rows, cols / block}),
          TensorView(static_cast<char*>(tensor_scale.data()) + e * 4, DType::Float32, {1}),
          stream.handle());
    }
    stream.synchronize();
    std::vector<std::uint8_t> c(codes.size()), s(scales.size());
    std::vector<float> ts(kE);
    codes.download(c.data(), c.size());
    scales.download(s.data(), s.size());
    tensor_scale.download(ts.data(), ts.size() * 4);
    const bool nv = format == moe::Fp4Format::kNvFp4;
    for (int e = 0; e < kE; ++e) {
      double error = 0, norm = 0;
      for (std::size_t i = e * per_expert; i < (e + 1) * per_expert; ++i) {
        const std::uint8_t code = c[i / 2] >> (4 * (i % 2)) & 15, scale = s[i / block];
        const double value =
            reference::e2m1_value(code) *
            (nv ? reference::e4m3_value(scale) * ts[e] : std::ldexp(1.0, scale - 127));
        const double want = from_bits(kBf16, w[i]);
        error += (value - want) * (value - want);
        norm += want * want;
      }
      weight_errors.push_back(std::sqrt(error / norm));
    }
  }

  moe::Fp4Weights weights() const {
    return {format, TensorView(codes.data(), DType::UInt8, {kE, rows, cols / 2}),
            TensorView(scales.data(), DType::UInt8, {kE, rows, cols / block}),
            TensorView(tensor_scale.data(), DType::Float32, {kE})};
  }

  moe::Fp4Format format;
  int rows, cols, block;
  DeviceBuffer codes, scales, tensor_scale;
  std::vector<double> weight_errors;
};

TEST(MoeFp4Accuracy, GlmLayerAgainstBf16) {
  KJIT_REQUIRE_GPU();
  if (!arch::current().has_wgmma())
    GTEST_SKIP() << "the layer's GEMM needs sm_90a so far; this card is " << arch::current().name();
  Stream stream;
  const std::vector<std::uint16_t> gate_up = gaussian_bf16(std::size_t{kE} * 2 * kI * kH,
                                                           1 / std::sqrt(double{kH}), 1),
                                   down = gaussian_bf16(std::size_t{kE} * kH * kI,
                                                        1 / std::sqrt(double{kI}), 2);
  DeviceBuffer dgate_up(gate_up.size() * 2), ddown(down.size() * 2);
  dgate_up.upload(gate_up.data(), dgate_up.size());
  ddown.upload(down.data(), ddown.size());
  const moe::LayerWeights bf16{TensorView(dgate_up.data(), kBf16, {kE, 2 * kI, kH}),
                               TensorView(ddown.data(), kBf16, {kE, kH, kI}), TensorView()};
  moe::LayerOptions options;
  options.router = {true, kTopK, 1, 1, true, 1.8f};

  for (const moe::Fp4Format format : {moe::Fp4Format::kNvFp4, moe::Fp4Format::kMxFp4}) {
    const bool nv = format == moe::Fp4Format::kNvFp4;
    const char* name = nv ? "nvfp4" : "mxfp4";
    const QuantisedExperts q_gate_up(gate_up, dgate_up, 2 * kI, kH, format, stream),
        q_down(down, ddown, kH, kI, format, stream);
    const double weight_bound = nv ? 0.11 : 0.13, layer_bound = nv ? 0.2 : 0.25;
    double worst = 0;
    for (const auto* q : {&q_gate_up, &q_down}) {
      for (int e = 0; e < kE; ++e) {
        EXPECT_LE(q->weight_errors[e], weight_bound) << name << " expert " << e;
        worst = std::max(worst, q->weight_errors[e]);
      }
    }
    std::printf(
        "[ moe fp4 ] %s: weight relative error, worst expert %.4f (gate/up expert 0 %.4f)\n", name,
        worst, q_gate_up.weight_errors[0]);
    const moe::Fp4LayerWeights fp4{q_gate_up.weights(), q_down.weights(), TensorView()};

    for (const int tokens : {1, 128, 2048}) {
      for (const char* routing : {"uniform", "skewed", "one_hot"}) {
        std::mt19937 rng(tokens * 7 + routing[0]);
        std::normal_distribution<float> normal;
        std::vector<float> logits(static_cast<std::size_t>(tokens) * kE);
        for (std::size_t i = 0; i < logits.size(); ++i) {
          const int expert = static_cast<int>(i % kE);
          logits[i] = normal(rng) + (routing[0] == 's' && expert < 8 ? 2.f : 0.f) +
                      (routing[0] == 'o' && expert == 5 ? 10.f : 0.f);
        }
        const std::vector<std::uint16_t> x = gaussian_bf16(std::size_t(tokens) * kH, 1.0, rng());
        DeviceBuffer dx(x.size() * 2), dlogits(logits.size() * 4), y16(x.size() * 2),
            y4(x.size() * 2);
        dx.upload(x.data(), dx.size());
        dlogits.upload(logits.data(), dlogits.size());
        const TensorView vx(dx.data(), kBf16, {tokens, kH}),
            vlogits(dlogits.data(), DType::Float32, {tokens, kE});
        moe::layer(vx, vlogits, bf16, TensorView(), options,
                   TensorView(y16.data(), kBf16, {tokens, kH}), stream.handle());
        moe::layer(vx, vlogits, fp4, TensorView(), options,
                   TensorView(y4.data(), kBf16, {tokens, kH}), stream.handle());
        stream.synchronize();
        std::vector<std::uint16_t> a(x.size()), b(x.size());
        y16.download(a.data(), y16.size());
        y4.download(b.data(), y4.size());
        double error = 0, norm = 0;
        for (std::size_t i = 0; i < a.size(); ++i) {
          const double want = from_bits(kBf16, a[i]), got = from_bits(kBf16, b[i]);
          ASSERT_TRUE(std::isfinite(got)) << name << " element " << i;
          error += (got - want) * (got - want);
          norm += want * want;
        }
        const double relative = std::sqrt(error / norm), mse = error / a.size();
        std::printf(
            "[ moe fp4 ] %s T %d %s routing: relative error %.4f, MSE %.3g (bf16 mean "
            "square %.3g)\n",
            name, tokens, routing, relative, mse, norm / a.size());
        EXPECT_LE(relative, layer_bound) << name << " T " << tokens << " " << routing;
      }
    }
  }
}

}  // namespace
}  // namespace kjit::test

// The FP4 MoE layer on the GPU against the checked-in golden output
// (tests/data/moe_fp4_golden.inc, the case of tests/reference/moe_golden.hpp: NVFP4 experts,
// GLM-4.7-Flash's router shape), within 1e-2 + 1e-2 |golden|: the layer rounds each expert's
// SwiGLU row and each weighted routed row to bf16, about 2^-8 of the output's size, and the bound
// leaves room for that twice over. A regression anchor beside MoeLayerTest's exact check.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "driver/arch.hpp"
#include "kjit/moe.hpp"
#include "tests/reference/moe_golden.hpp"
#include "tests/support/dtype_bits.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/isolated_cache.hpp"

namespace kjit::test {
namespace {

constexpr double kGolden[] = {
#include "tests/data/moe_fp4_golden.inc"
};

using G = reference::GoldenFp4Layer;

// Per-expert NVFP4 tensors of the case, packed as the op takes them.
struct DeviceFp4 {
  DeviceFp4(const std::vector<reference::Fp4Tensor>& experts, int rows, int cols)
      : rows(rows),
        cols(cols),
        codes(G::kE * rows * cols / 2),
        scales(G::kE * rows * cols / 16),
        tensor_scale(G::kE * 4) {
    std::vector<std::uint8_t> packed(codes.size(), 0), scale_bytes;
    std::vector<float> ts;
    for (int e = 0; e < G::kE; ++e) {
      const reference::Fp4Tensor& t = experts[e];
      for (std::size_t i = 0; i < t.codes.size(); ++i)
        packed[(e * t.codes.size() + i) / 2] |=
            static_cast<std::uint8_t>(t.codes[i] << (4 * (i % 2)));
      scale_bytes.insert(scale_bytes.end(), t.scales.begin(), t.scales.end());
      ts.push_back(static_cast<float>(t.tensor_scale));
    }
    codes.upload(packed.data(), packed.size());
    scales.upload(scale_bytes.data(), scale_bytes.size());
    tensor_scale.upload(ts.data(), ts.size() * 4);
  }
  moe::Fp4Weights view() const {
    return {moe::Fp4Format::kNvFp4, TensorView(codes.data(), DType::UInt8, {G::kE, rows, cols / 2}),
            TensorView(scales.data(), DType::UInt8, {G::kE, rows, cols / 16}),
            TensorView(tensor_scale.data(), DType::Float32, {G::kE})};
  }
  int rows, cols;
  DeviceBuffer codes, scales, tensor_scale;
};

class MoeGoldenRuns : public IsolatedCache {};

TEST_F(MoeGoldenRuns, Fp4LayerMatchesTheCheckedInOutput) {
  KJIT_REQUIRE_GPU();
  if (!arch::current().has_wgmma())
    GTEST_SKIP() << "the layer's GEMM needs sm_90a so far; this card is " << arch::current().name();
  const G g = reference::golden_fp4_layer();
  ASSERT_EQ(std::size(kGolden), static_cast<std::size_t>(G::kT) * G::kH);
  const DeviceFp4 gate_up(g.gate_up, 2 * G::kI, G::kH), down(g.down, G::kH, G::kI);
  DeviceBuffer dx(g.x.size() * 2), dlogits(g.logits.size() * 4), dbias(g.bias.size() * 4),
      dout(g.x.size() * 2);
  dx.upload(g.x.data(), dx.size());
  dlogits.upload(g.logits.data(), dlogits.size());
  dbias.upload(g.bias.data(), dbias.size());
  dout.fill_bytes(0xff);
  moe::LayerOptions options;
  options.router = {true, G::kTopK, 1, 1, true, 1.8f};
  options.block = 64;
  Stream stream;
  moe::layer(TensorView(dx.data(), DType::BFloat16, {G::kT, G::kH}),
             TensorView(dlogits.data(), DType::Float32, {G::kT, G::kE}),
             moe::Fp4LayerWeights{gate_up.view(), down.view(),
                                  TensorView(dbias.data(), DType::Float32, {G::kE})},
             TensorView(), options, TensorView(dout.data(), DType::BFloat16, {G::kT, G::kH}),
             stream.handle());
  stream.synchronize();
  std::vector<std::uint16_t> out(g.x.size());
  dout.download(out.data(), dout.size());
  double max_err = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const double got = from_bits(DType::BFloat16, out[i]), err = std::abs(got - kGolden[i]);
    max_err = std::max(max_err, err);
    ASSERT_LE(err, 1e-2 + 1e-2 * std::abs(kGolden[i]))
        << "element " << i << " golden " << kGolden[i];
  }
  std::printf("[ moe golden ] fp4 layer: max |err| %.3g over %zu elements\n", max_err, out.size());
}

}  // namespace
}  // namespace kjit::test

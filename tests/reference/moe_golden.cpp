#include "tests/reference/moe_golden.hpp"

#include <cmath>

#include "tests/support/dtype_bits.hpp"
#include "tests/support/splitmix.hpp"

namespace kjit::reference {
namespace {

using G = GoldenFp4Layer;

// Uniform in [-a, a) from a splitmix64 stream.
struct Uniform {
  test::SplitMix64 bits;
  double next(double a) { return (static_cast<double>(bits.next() >> 11) * 0x1p-53 * 2 - 1) * a; }
};

}  // namespace

GoldenFp4Layer golden_fp4_layer() {
  GoldenFp4Layer g;
  Uniform u{{2026}};
  for (int i = 0; i < G::kT * G::kH; ++i)
    g.x.push_back(test::to_bits(DType::BFloat16, u.next(1.7)));
  for (int i = 0; i < G::kT * G::kE; ++i)
    g.logits.push_back(static_cast<float>(u.next(2.0)));
  for (int i = 0; i < G::kE; ++i)
    g.bias.push_back(static_cast<float>(u.next(0.1)));
  for (int e = 0; e < G::kE; ++e) {
    std::vector<double> gate_up(2 * G::kI * G::kH), down(G::kH * G::kI);
    for (double& w : gate_up)
      w = u.next(std::sqrt(3.0 / G::kH));
    for (double& w : down)
      w = u.next(std::sqrt(3.0 / G::kI));
    g.gate_up.push_back(quantize_nvfp4(gate_up, 2 * G::kI, G::kH));
    g.down.push_back(quantize_nvfp4(down, G::kH, G::kI));
  }
  return g;
}

std::vector<double> GoldenFp4Layer::output() const {
  RouterConfig router;
  router.sigmoid = true;
  router.bias.assign(bias.begin(), bias.end());
  router.top_k = kTopK;
  router.renormalize = true;
  router.scaling = 1.8;
  const Routing routing = route(std::vector<double>(logits.begin(), logits.end()), kT, kE, router);
  // Each expert's weights dequantised once, the tensor scale as the GEMM reads it: fp32.
  const auto weights = [](const Fp4Tensor& t, int rows, int cols) {
    Fp4Tensor f = t;
    f.tensor_scale = static_cast<float>(t.tensor_scale);
    return dequantize(f, rows, cols, true);
  };
  std::vector<std::vector<double>> gate_ups, downs;
  for (int e = 0; e < kE; ++e) {
    gate_ups.push_back(weights(gate_up[e], 2 * kI, kH));
    downs.push_back(weights(down[e], kH, kI));
  }
  std::vector<double> out(static_cast<std::size_t>(kT) * kH, 0.0), h(kI);
  for (int t = 0; t < kT; ++t) {
    for (int j = 0; j < kTopK; ++j) {
      const int e = routing.ids[t * kTopK + j];
      const std::vector<double>&gate_up = gate_ups[e], &down = downs[e];
      for (int i = 0; i < kI; ++i) {
        double gate = 0, up = 0;
        for (int d = 0; d < kH; ++d) {
          const double xv = test::from_bits(DType::BFloat16, x[t * kH + d]);
          gate += xv * gate_up[(2 * i) * kH + d];
          up += xv * gate_up[(2 * i + 1) * kH + d];
        }
        h[i] = gate / (1 + std::exp(-gate)) * up;
      }
      for (int col = 0; col < kH; ++col) {
        double y = 0;
        for (int i = 0; i < kI; ++i)
          y += down[col * kI + i] * h[i];
        out[t * kH + col] += routing.weights[t * kTopK + j] * y;
      }
    }
  }
  return out;
}

}  // namespace kjit::reference

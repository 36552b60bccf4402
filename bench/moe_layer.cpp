// The MoE layer at GLM-4.7-Flash's dimensions (hidden 2048, 64 experts, top 4 with its sigmoid
// router, intermediate 1536, bf16; the shared expert's output given, as the layer takes it) for
// T = 1, 16, 256, 4096 and 16384 tokens: us per call as a CUDA graph's replay of 20 calls (median
// of 15), and the routed FLOPs' rate (2 T k 3 H I, padding not counted). bench/moe_layer_torch.py
// times the torch composition on the same shapes.
#include <cstdio>
#include <vector>

#include "bench/attention_timing.hpp"
#include "driver/arch.hpp"
#include "kjit/jit.hpp"
#include "kjit/moe.hpp"

namespace {

using kjit::DeviceBuffer;
using kjit::DType;
using kjit::TensorView;

constexpr int kCalls = 20, kHidden = 2048, kExperts = 64, kTopK = 4, kInter = 1536;

}  // namespace

int main() try {
  if (kjit::bench::no_gpu("moe layer")) return 0;
  if (!kjit::arch::current().has_wgmma()) {
    std::printf("moe layer needs sm_90a so far; this card is %s\n",
                kjit::arch::current().name().c_str());
    return 0;
  }
  kjit::Stream stream;
  std::printf("%s, kjit %s, MoE layer GLM-4.7-Flash (H %d, E %d, top %d, I %d) bf16\n",
              kjit::device_info(kjit::current_device()).name.c_str(), kjit::version().c_str(),
              kHidden, kExperts, kTopK, kInter);
  std::printf("%6s %10s %9s\n", "T", "graph us", "TFLOP/s");
  const DeviceBuffer gate_up =
                         kjit::bench::random_bf16(std::size_t{kExperts} * 2 * kInter * kHidden),
                     down = kjit::bench::random_bf16(std::size_t{kExperts} * kHidden * kInter);
  DeviceBuffer bias(kExperts * 4);
  bias.fill_bytes(0);
  kjit::moe::LayerOptions options;
  options.router = {true, kTopK, 1, 1, true, 1.8f};
  for (long long t : {1, 16, 256, 4096, 16384}) {
    const DeviceBuffer x = kjit::bench::random_bf16(t * kHidden),
                       shared = kjit::bench::random_bf16(t * kHidden);
    std::vector<float> logits(static_cast<std::size_t>(t) * kExperts);
    for (std::size_t i = 0; i < logits.size(); ++i)
      logits[i] = static_cast<float>((i * 2654435761u) % 1000) / 500.f - 1.f;
    DeviceBuffer dlogits(logits.size() * 4), out(t * kHidden * 2);
    dlogits.upload(logits.data(), dlogits.size());
    const kjit::moe::LayerWeights weights{
        TensorView(gate_up.data(), DType::BFloat16, {kExperts, 2 * kInter, kHidden}),
        TensorView(down.data(), DType::BFloat16, {kExperts, kHidden, kInter}),
        TensorView(bias.data(), DType::Float32, {kExperts})};
    const double ms = kjit::bench::graph_per_call_ms(
        kCalls,
        [&](int) {
          kjit::moe::layer(TensorView(x.data(), DType::BFloat16, {t, kHidden}),
                           TensorView(dlogits.data(), DType::Float32, {t, kExperts}), weights,
                           TensorView(shared.data(), DType::BFloat16, {t, kHidden}), options,
                           TensorView(out.data(), DType::BFloat16, {t, kHidden}), stream.handle());
        },
        stream.handle());
    std::printf("%6lld %10.1f %9.1f\n", t, ms * 1e3,
                2.0 * t * kTopK * 3.0 * kHidden * kInter / ms / 1e9);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kjit_bench_moe_layer: %s\n", e.what());
  return 1;
}

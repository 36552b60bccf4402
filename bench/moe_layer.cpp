// The MoE layer at GLM-4.7-Flash's dimensions (hidden 2048, 64 experts, top 4 with its sigmoid
// router, intermediate 1536; the shared expert's output given, as the layer takes it) for
// T = 1, 16, 256, 4096 and 16384 tokens, with bf16 experts and with the same experts in NVFP4:
// us per call as a CUDA graph's replay of 20 calls (median of 15), and the routed FLOPs' rate
// (2 T k 3 H I, padding not counted). From 256 pairs an expert on, the NVFP4 layer also in the
// other of the blocks of 128 and 256 rows than the one it chooses (256 from 1024 pairs an expert).
// bench/moe_layer_torch.py times the torch composition (bf16: torch has no FP4 grouped GEMM on
// Hopper) on the same shapes. Arguments, if any: the T to run (e.g. `kjit_bench_moe_layer 16` under
// ncu), after `nvfp4` to time only the NVFP4 layer in its chosen block (a profiler's run).
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/attention_timing.hpp"
#include "bench/moe_routing.hpp"
#include "bench/nvfp4_experts.hpp"
#include "driver/arch.hpp"
#include "kjit/jit.hpp"
#include "kjit/moe.hpp"
#include "ops/moe/grouped_gemm.hpp"

namespace {

using kjit::DeviceBuffer;
using kjit::DType;
using kjit::TensorView;

constexpr int kCalls = 20, kHidden = 2048, kExperts = 64, kTopK = 4, kInter = 1536;

}  // namespace

int main(int argc, char** argv) try {
  if (kjit::bench::no_gpu("moe layer")) return 0;
  if (!kjit::arch::current().has_wgmma()) {
    std::printf("moe layer needs sm_90a so far; this card is %s\n",
                kjit::arch::current().name().c_str());
    return 0;
  }
  kjit::Stream stream;
  std::printf("%s, kjit %s, MoE layer GLM-4.7-Flash (H %d, E %d, top %d, I %d)\n",
              kjit::device_info(kjit::current_device()).name.c_str(), kjit::version().c_str(),
              kHidden, kExperts, kTopK, kInter);
  std::printf("%6s %10s %9s %12s %9s  %s\n", "T", "bf16 us", "TFLOP/s", "NVFP4 us", "TFLOP/s",
              "NVFP4 us, other block");
  const std::int64_t e = kExperts, n_up = 2 * kInter;
  const DeviceBuffer gate_up = kjit::bench::random_bf16(std::size_t{kExperts} * n_up * kHidden),
                     down = kjit::bench::random_bf16(std::size_t{kExperts} * kHidden * kInter);
  DeviceBuffer bias(kExperts * 4);
  bias.fill_bytes(0);
  const kjit::moe::LayerWeights weights{
      TensorView(gate_up.data(), DType::BFloat16, {e, n_up, kHidden}),
      TensorView(down.data(), DType::BFloat16, {e, kHidden, kInter}),
      TensorView(bias.data(), DType::Float32, {e})};
  // The same experts in NVFP4, one tensor scale a projection.
  DeviceBuffer up_codes(gate_up.size() / 4), up_scales(gate_up.size() / 2 / 16),
      down_codes(down.size() / 4), down_scales(down.size() / 2 / 16), tensor_scales(8);
  float* ts = static_cast<float*>(tensor_scales.data());
  const kjit::moe::Fp4LayerWeights weights4{
      kjit::bench::quantize_nvfp4(gate_up, e, n_up, kHidden, up_codes.data(), up_scales.data(), ts,
                                  stream.handle()),
      kjit::bench::quantize_nvfp4(down, e, kHidden, kInter, down_codes.data(), down_scales.data(),
                                  ts + 1, stream.handle()),
      weights.router_bias};
  kjit::moe::LayerOptions options;
  options.router = {true, kTopK, 1, 1, true, 1.8f};
  std::vector<long long> tokens = {1, 16, 256, 4096, 16384};
  const bool nvfp4_only = argc > 1 && std::string(argv[1]) == "nvfp4";
  if (argc > 1 + nvfp4_only) {
    tokens.clear();
    for (int i = 1 + nvfp4_only; i < argc; ++i)
      tokens.push_back(std::stoll(argv[i]));
  }
  for (long long t : tokens) {
    const DeviceBuffer x = kjit::bench::random_bf16(t * kHidden),
                       shared = kjit::bench::random_bf16(t * kHidden);
    const std::vector<float> logits = kjit::bench::hashed_router_logits(t, kExperts);
    DeviceBuffer dlogits(logits.size() * 4), out(t * kHidden * 2);
    dlogits.upload(logits.data(), dlogits.size());
    const auto per_call_ms = [&](const auto& w, const kjit::moe::LayerOptions& options) {
      return kjit::bench::graph_per_call_ms(
          kCalls,
          [&](int) {
            kjit::moe::layer(TensorView(x.data(), DType::BFloat16, {t, kHidden}),
                             TensorView(dlogits.data(), DType::Float32, {t, kExperts}), w,
                             TensorView(shared.data(), DType::BFloat16, {t, kHidden}), options,
                             TensorView(out.data(), DType::BFloat16, {t, kHidden}),
                             stream.handle());
          },
          stream.handle());
    };
    const double flop = 2.0 * t * kTopK * 3.0 * kHidden * kInter;
    if (nvfp4_only) {
      std::printf("%6lld %10s %9s", t, "-", "-");
    } else {
      const double ms = per_call_ms(weights, options);
      std::printf("%6lld %10.1f %9.1f", t, ms * 1e3, flop / ms / 1e9);
    }
    const double ms4 = per_call_ms(weights4, options);
    std::printf(" %12.1f %9.1f", ms4 * 1e3, flop / ms4 / 1e9);
    if (!nvfp4_only && t * kTopK >= 256 * kExperts) {
      kjit::moe::LayerOptions other = options;
      const int chosen =
          kjit::ops::MoeGemm::layout_block(t * kTopK, kExperts, kHidden, kInter,
                                           kjit::ops::MoeGemm::kNvFp4, kjit::ops::MoeGemm::kNvFp4);
      other.block = chosen == 256 ? 128 : 256;
      std::printf("  %.1f (block %d)", per_call_ms(weights4, other) * 1e3, other.block);
    }
    std::printf("\n");
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kjit_bench_moe_layer: %s\n", e.what());
  return 1;
}

// MoE routing speed: router_topk and align (blocks of 128) at T = 1 to 16384 tokens for
// GLM-4.7-Flash's router (sigmoid with a correction bias, top 4 of 64, renormalised, x1.8),
// DeepSeek-V3's (sigmoid with a bias, top 8 of 256 in 8 groups of which the best 4 compete,
// renormalised, x2.5) and a softmax top 8 of 256 (sgl-kernel's topk_softmax case). fp32 logits,
// N(0, 1). Per op: us per call as a CUDA graph's replay of 20 calls (median of 15), and GB/s over
// the logits read and the ids and weights written (the router), or the ids read and the layout
// written (align). bench/moe_router_peers.py times the torch composition and sgl-kernel's
// topk_softmax, topk_sigmoid and moe_align_block_size on the same shapes.
// Arguments (optional, for a profiler): ROUTER [T], the one router (glm-4.7, deepseek-v3,
// softmax-256) and token count to run.
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "bench/attention_timing.hpp"
#include "kjit/jit.hpp"
#include "kjit/moe.hpp"

namespace {

using kjit::DeviceBuffer;
using kjit::DType;
using kjit::TensorView;

constexpr int kCalls = 20, kBlock = 128;

struct Router {
  const char* name;
  int experts;
  kjit::moe::RouterOptions options;
  bool bias;
};

}  // namespace

int main(int argc, char** argv) try {
  if (kjit::bench::no_gpu("moe router")) return 0;
  kjit::Stream stream;
  const auto s = stream.handle();
  std::printf("%s, kjit %s, MoE router_topk and align (block %d), fp32 logits\n",
              kjit::device_info(kjit::current_device()).name.c_str(), kjit::version().c_str(),
              kBlock);
  std::printf("%-12s %6s %12s %9s %11s %9s\n", "router", "T", "router us", "GB/s", "align us",
              "GB/s");
  const Router routers[] = {{"glm-4.7", 64, {true, 4, 1, 1, true, 1.8f}, true},
                            {"deepseek-v3", 256, {true, 8, 8, 4, true, 2.5f}, true},
                            {"softmax-256", 256, {false, 8, 1, 1, false, 1.f}, false}};
  const auto per_call_ms = [&](const auto& body) {
    return kjit::bench::graph_per_call_ms(
        kCalls, [&](int) { body(); }, s);
  };
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  const std::string only_router = argc > 1 ? argv[1] : "";
  const long long only_t = argc > 2 ? std::stoll(argv[2]) : 0;
  for (const Router& r : routers) {
    if (!only_router.empty() && only_router != r.name) continue;
    const int k = r.options.top_k;
    std::vector<float> bias(r.experts);
    for (float& b : bias)
      b = 0.1f * normal(rng);
    DeviceBuffer dbias(bias.size() * 4);
    dbias.upload(bias.data(), dbias.size());
    for (long long t : {1, 16, 256, 4096, 16384}) {
      if (only_t != 0 && t != only_t) continue;
      std::vector<float> logits(static_cast<std::size_t>(t) * r.experts);
      for (float& v : logits)
        v = normal(rng);
      const long long pairs = t * k;
      const std::int64_t rows = kjit::moe::align_capacity(pairs, r.experts, kBlock);
      DeviceBuffer dlogits(logits.size() * 4), ids(pairs * 4), weights(pairs * 4), sorted(rows * 4),
          blocks(rows / kBlock * 4), counts(r.experts * 4), offsets((r.experts + 1) * 4),
          invalid(4);
      dlogits.upload(logits.data(), dlogits.size());
      const TensorView vids(ids.data(), DType::Int32, {t, k});
      const double router_ms = per_call_ms([&] {
        kjit::moe::router_topk(
            TensorView(dlogits.data(), DType::Float32, {t, r.experts}),
            r.bias ? TensorView(dbias.data(), DType::Float32, {r.experts}) : TensorView(), vids,
            TensorView(weights.data(), DType::Float32, {t, k}), r.options, s);
      });
      const kjit::moe::Alignment layout{TensorView(sorted.data(), DType::Int32, {rows}),
                                        TensorView(blocks.data(), DType::Int32, {rows / kBlock}),
                                        TensorView(counts.data(), DType::Int32, {r.experts}),
                                        TensorView(offsets.data(), DType::Int32, {r.experts + 1}),
                                        TensorView(invalid.data(), DType::Int32, {1})};
      const double align_ms =
          per_call_ms([&] { kjit::moe::align(vids, r.experts, kBlock, layout, s); });
      const double router_bytes = 4.0 * (t * r.experts + 2 * pairs),
                   align_bytes = 4.0 * (pairs + rows + rows / kBlock + 2 * r.experts + 2);
      std::printf("%-12s %6lld %12.2f %9.0f %11.2f %9.0f\n", r.name, t, router_ms * 1e3,
                  router_bytes / router_ms / 1e6, align_ms * 1e3, align_bytes / align_ms / 1e6);
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kjit_bench_moe_router: %s\n", e.what());
  return 1;
}

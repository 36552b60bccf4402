// The offloaded MoE stack (kjit/expert_offload.hpp) at GLM-4.7-Flash's dimensions: 8 MoE layers of
// 64 experts (hidden 2048, intermediate 1536, top 4, its sigmoid router), experts in page-locked
// host memory, decode at batch 1 and 16, caches of 16, 32 and 64 slots a layer (25, 50, 100 %),
// bf16 and NVFP4 experts, on simulated routing of low and high locality (simulate_routing; the
// router logits make its choices), with and without the cross-layer prefetch; beside the same
// layers with every expert resident (moe::layer). Per row: tokens/s, hit rate, prefetch recall,
// stall per token, bytes moved, the loader's copy rate. Then cold layers (every expert missing):
// the loader's host -> device rate while copying, and the layer's (routing, host wait and GEMMs
// included), beside plain page-locked copies of the same bytes (--loader: this part only).
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bench/attention_timing.hpp"
#include "bench/nvfp4_experts.hpp"
#include "driver/arch.hpp"
#include "kjit/expert_offload.hpp"
#include "kjit/jit.hpp"
#include "kjit/moe.hpp"
#include "kjit/routing_analysis.hpp"

namespace {

using kjit::DeviceBuffer;
using kjit::DType;
using kjit::HostBuffer;
using kjit::TensorView;
namespace moe = kjit::moe;

constexpr int kLayers = 8, kExperts = 64, kTopK = 4, kHidden = 2048, kInter = 1536, kSteps = 40;

// One layer's experts on the device and in page-locked host memory: bf16, or NVFP4 (one tensor
// scale for the layer, on the device).
struct LayerExperts {
  DeviceBuffer gate_up, down, gate_up_scales, down_scales, tensor_scale;
  HostBuffer host_gate_up, host_down, host_gate_up_scales, host_down_scales;
};

HostBuffer to_host(const DeviceBuffer& d) {
  HostBuffer h(d.size());
  d.download(h.data(), d.size());
  return h;
}

struct Stack {
  bool fp4;
  std::vector<LayerExperts> layers;
  std::vector<moe::LayerWeights> resident16, host16;
  std::vector<moe::Fp4LayerWeights> resident4, host4;
};

Stack make_stack(bool fp4, kjit::StreamHandle stream) {
  Stack s{fp4, std::vector<LayerExperts>(kLayers), {}, {}, {}, {}};
  const std::int64_t e = kExperts, n_up = 2 * kInter;
  for (LayerExperts& l : s.layers) {
    DeviceBuffer up = kjit::bench::random_bf16(std::size_t{kExperts} * n_up * kHidden),
                 dn = kjit::bench::random_bf16(std::size_t{kExperts} * kHidden * kInter);
    if (!fp4) {
      l.gate_up = std::move(up);
      l.down = std::move(dn);
    } else {
      l.gate_up = DeviceBuffer(up.size() / 4);
      l.down = DeviceBuffer(dn.size() / 4);
      l.gate_up_scales = DeviceBuffer(up.size() / 2 / 16);
      l.down_scales = DeviceBuffer(dn.size() / 2 / 16);
      l.tensor_scale = DeviceBuffer(8);
      float* ts = static_cast<float*>(l.tensor_scale.data());
      kjit::bench::quantize_nvfp4(up, e, n_up, kHidden, l.gate_up.data(), l.gate_up_scales.data(),
                                  ts, stream);
      kjit::bench::quantize_nvfp4(dn, e, kHidden, kInter, l.down.data(), l.down_scales.data(),
                                  ts + 1, stream);
      kjit::synchronize(stream);
      l.host_gate_up_scales = to_host(l.gate_up_scales);
      l.host_down_scales = to_host(l.down_scales);
    }
    l.host_gate_up = to_host(l.gate_up);
    l.host_down = to_host(l.down);
  }
  for (LayerExperts& l : s.layers) {
    if (!fp4) {
      const auto up = [&](void* p) { return TensorView(p, DType::BFloat16, {e, n_up, kHidden}); };
      const auto dn = [&](void* p) { return TensorView(p, DType::BFloat16, {e, kHidden, kInter}); };
      s.resident16.push_back({up(l.gate_up.data()), dn(l.down.data()), TensorView()});
      s.host16.push_back({up(l.host_gate_up.data()), dn(l.host_down.data()), TensorView()});
      continue;
    }
    const auto weights = [&](void* up, void* up_scales, void* dn, void* dn_scales) {
      float* ts = static_cast<float*>(l.tensor_scale.data());
      return moe::Fp4LayerWeights{
          {moe::Fp4Format::kNvFp4, TensorView(up, DType::UInt8, {e, n_up, kHidden / 2}),
           TensorView(up_scales, DType::UInt8, {e, n_up, kHidden / 16}),
           TensorView(ts, DType::Float32, {1})},
          {moe::Fp4Format::kNvFp4, TensorView(dn, DType::UInt8, {e, kHidden, kInter / 2}),
           TensorView(dn_scales, DType::UInt8, {e, kHidden, kInter / 16}),
           TensorView(ts + 1, DType::Float32, {1})},
          TensorView()};
    };
    s.resident4.push_back(
        weights(l.gate_up.data(), l.gate_up_scales.data(), l.down.data(), l.down_scales.data()));
    s.host4.push_back(weights(l.host_gate_up.data(), l.host_gate_up_scales.data(),
                              l.host_down.data(), l.host_down_scales.data()));
  }
  return s;
}

// Router logits [steps][layers][T, E] that make the trace's choices (4 above the rest).
std::vector<DeviceBuffer> logits_of(const moe::RoutingTrace& trace, int tokens) {
  std::vector<DeviceBuffer> out;
  std::vector<float> l(static_cast<std::size_t>(tokens) * kExperts);
  for (std::int64_t first = 0; first < trace.records(); first += tokens) {
    for (int layer = 0; layer < kLayers; ++layer) {
      for (int t = 0; t < tokens; ++t) {
        for (int x = 0; x < kExperts; ++x)
          l[t * kExperts + x] = static_cast<float>((x * 7 + t * 13 + layer) % 17) / 17.f - 0.5f;
        for (int j = 0; j < kTopK; ++j)
          l[t * kExperts + trace.choice(first + t, layer)[j]] = 4.f + 0.1f * j;
      }
      out.emplace_back(l.size() * 4);
      out.back().upload(l.data(), l.size() * 4);
    }
  }
  return out;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) try {
  const bool loader_only = argc > 1 && std::string(argv[1]) == "--loader";  // the cold layers only
  if (kjit::bench::no_gpu("moe offload")) return 0;
  if (!kjit::arch::current().has_wgmma()) {
    std::printf("moe offload needs sm_90a so far; this card is %s\n",
                kjit::arch::current().name().c_str());
    return 0;
  }
  kjit::Stream stream;
  std::printf(
      "%s, kjit %s, offloaded MoE stack: %d layers GLM-4.7-Flash (H %d, E %d, top %d, "
      "I %d), %d decode steps\n",
      kjit::device_info(kjit::current_device()).name.c_str(), kjit::version().c_str(), kLayers,
      kHidden, kExperts, kTopK, kInter, kSteps);
  std::printf("%-6s %-5s %3s %5s %-8s %10s %10s %7s %7s %9s %9s %7s\n", "format", "trace", "T",
              "slots", "prefetch", "tokens/s", "resident", "hit", "recall", "stall us", "MB/token",
              "GB/s");
  moe::LayerOptions options;
  options.router = {true, kTopK, 1, 1, true, 1.8f};
  for (bool fp4 : {false, true}) {
    const Stack stack = make_stack(fp4, stream.handle());
    for (const char* locality : {"low", "high"}) {
      if (loader_only) break;
      const bool high = locality[0] == 'h';
      for (int tokens : {1, 16}) {
        moe::RoutingSimulation sim;
        sim.layers = kLayers;
        sim.experts = kExperts;
        sim.top_k = kTopK;
        sim.sequences = tokens;
        sim.steps = kSteps;
        sim.skew = high ? 1.2 : 0.6;
        sim.temporal_locality = high ? 0.7 : 0.1;
        sim.cross_layer = high ? 0.6 : 0.1;
        const std::vector<DeviceBuffer> logits = logits_of(moe::simulate_routing(sim), tokens);
        const DeviceBuffer x = kjit::bench::random_bf16(std::size_t(tokens) * kHidden);
        DeviceBuffer out(std::size_t(tokens) * kHidden * 2);
        const TensorView vx(x.data(), DType::BFloat16, {tokens, kHidden}),
            vout(out.data(), DType::BFloat16, {tokens, kHidden});
        const auto vlogits = [&](int step, int layer) {
          return TensorView(logits[step * kLayers + layer].data(), DType::Float32,
                            {tokens, kExperts});
        };
        // Every expert resident: the bar for the offloaded runs (after a step that compiles the
        // kernels of this batch size: the first timed row once included NVRTC).
        auto start = std::chrono::steady_clock::now();
        for (int step = -1; step < kSteps; ++step) {
          if (step == 0) start = std::chrono::steady_clock::now();
          const int s = std::max(step, 0);
          for (int l = 0; l < kLayers; ++l) {
            if (fp4)
              moe::layer(vx, vlogits(s, l), stack.resident4[l], TensorView(), options, vout,
                         stream.handle());
            else
              moe::layer(vx, vlogits(s, l), stack.resident16[l], TensorView(), options, vout,
                         stream.handle());
          }
          stream.synchronize();  // as the offloaded stack waits once a layer at least
        }
        const double resident = tokens * kSteps / seconds_since(start);
        for (int slots : {16, 32, 64}) {
          for (int prefetch : {0, kTopK}) {
            moe::OffloadOptions offload;
            offload.slots = slots;
            offload.prefetch = prefetch;
            std::unique_ptr<moe::OffloadedMoe> s =
                fp4 ? std::make_unique<moe::OffloadedMoe>(stack.host4, options, offload)
                    : std::make_unique<moe::OffloadedMoe>(stack.host16, options, offload);
            start = std::chrono::steady_clock::now();
            for (int step = 0; step < kSteps; ++step) {
              for (int l = 0; l < kLayers; ++l)
                s->layer(l, vx, vlogits(step, l), TensorView(), vout, stream.handle());
            }
            stream.synchronize();
            const double rate = tokens * kSteps / seconds_since(start);
            const moe::OffloadStats st = s->stats();
            std::printf(
                "%-6s %-5s %3d %5d %-8s %10.1f %10.1f %7.3f %7.3f %9.1f %9.1f %7.1f\n",
                fp4 ? "nvfp4" : "bf16", locality, tokens, slots, prefetch ? "cross" : "none", rate,
                resident, st.hit_rate(), st.prefetch_recall(), st.stall_ms_per_token() * 1e3,
                double(st.bytes_on_demand + st.bytes_prefetched) / st.tokens / 1e6, st.copy_gbps());
          }
        }
      }
    }
    // The loader on cold layers: 16 tokens choosing all 64 experts, every one a miss. In expert
    // order the misses land in consecutive slots (runs of experts move as one copy a tile); in a
    // shuffled order they do not (one copy an expert and tile, as scattered decode misses). The
    // link's rate moves by several per cent from one copy to the next: three rounds of the
    // loader and the plain copies, interleaved; the ratio is the loader's median over the better
    // plain median (whole or an expert at a time).
    const auto cold_layers = [&](const std::vector<int>& order) {
      moe::OffloadOptions offload;
      offload.slots = kExperts;
      std::unique_ptr<moe::OffloadedMoe> s =
          fp4 ? std::make_unique<moe::OffloadedMoe>(stack.host4, options, offload)
              : std::make_unique<moe::OffloadedMoe>(stack.host16, options, offload);
      moe::RoutingTrace all(kLayers, kExperts, kTopK);
      std::vector<int> ids(kLayers * kTopK);
      for (int t = 0; t < 16; ++t) {
        for (int l = 0; l < kLayers; ++l) {
          for (int j = 0; j < kTopK; ++j)
            ids[l * kTopK + j] = order[t * kTopK + j];
        }
        all.add(t, 0, ids);
      }
      const std::vector<DeviceBuffer> logits = logits_of(all, 16);
      const DeviceBuffer x = kjit::bench::random_bf16(16 * kHidden);
      DeviceBuffer out(16 * kHidden * 2);
      stream.synchronize();
      kjit::Event a, b;
      a.record(stream.handle());
      for (int l = 0; l < kLayers; ++l) {
        s->layer(l, TensorView(x.data(), DType::BFloat16, {16, kHidden}),
                 TensorView(logits[l].data(), DType::Float32, {16, kExperts}), TensorView(),
                 TensorView(out.data(), DType::BFloat16, {16, kHidden}), stream.handle());
      }
      b.record(stream.handle());
      b.synchronize();
      const moe::OffloadStats st = s->stats();
      const double bytes = double(st.bytes_on_demand);
      return std::array<double, 3>{st.copy_gbps(), bytes / b.elapsed_ms_since(a) / 1e6, bytes};
    };
    // The same bytes (layer 0's, bf16) as two plain copies, or as plain copies an expert and
    // tensor at a time (what the loader queues without runs), on a stream of their own.
    const LayerExperts& l = stack.layers[0];
    DeviceBuffer target(l.gate_up.size() + l.down.size());
    const auto plain_gbs = [&](bool per_expert) {
      kjit::Stream copies;
      kjit::Event a, b;
      a.record(copies.handle());
      const std::size_t parts = per_expert ? kExperts : 1;
      const std::size_t gate_up = l.gate_up.size() / parts, down = l.down.size() / parts;
      char* dst = static_cast<char*>(target.data());
      for (std::size_t e = 0; e < parts; ++e) {
        kjit::copy_async(dst + e * gate_up,
                         static_cast<const char*>(l.host_gate_up.data()) + e * gate_up, gate_up,
                         copies.handle());
        kjit::copy_async(dst + l.gate_up.size() + e * down,
                         static_cast<const char*>(l.host_down.data()) + e * down, down,
                         copies.handle());
      }
      b.record(copies.handle());
      b.synchronize();
      return double(target.size()) / b.elapsed_ms_since(a) / 1e6;
    };
    const auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    for (const bool shuffled : {false, true}) {
      std::vector<int> order(kExperts);
      for (int e = 0; e < kExperts; ++e)
        order[e] = shuffled ? (e * 37 + 11) % kExperts : e;  // 37 is prime to 64: a permutation
      std::vector<double> loader, layers, whole, per_expert;
      double bytes = 0;
      for (int round = 0; round < 3; ++round) {
        const std::array<double, 3> cold = cold_layers(order);
        loader.push_back(cold[0]);
        layers.push_back(cold[1]);
        bytes = cold[2];
        // The first plain copy after a stack's 10 GB are freed can run at half rate (29 against
        // 55 GB/s measured): the better of two.
        const double first = plain_gbs(false);
        per_expert.push_back(plain_gbs(true));
        whole.push_back(std::max(first, plain_gbs(false)));
      }
      std::printf(
          "%s cold layers (%d x 64 misses %s, %.0f MB), median of 3 rounds (min-max): loader "
          "%.1f GB/s (%.1f-%.1f) while copying, layers %.1f GB/s (routing, host wait and GEMMs "
          "included); plain page-locked copies: whole %.1f GB/s (%.1f-%.1f), an expert at a "
          "time %.1f GB/s; loader / plain %.3f\n",
          fp4 ? "nvfp4" : "bf16", kLayers, shuffled ? "shuffled" : "in expert order", bytes / 1e6,
          median(loader), *std::min_element(loader.begin(), loader.end()),
          *std::max_element(loader.begin(), loader.end()), median(layers), median(whole),
          *std::min_element(whole.begin(), whole.end()),
          *std::max_element(whole.begin(), whole.end()), median(per_expert),
          median(loader) / std::max(median(whole), median(per_expert)));
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kjit_bench_moe_offload: %s\n", e.what());
  return 1;
}

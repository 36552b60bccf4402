// Host time of one op call from C++ (validation, config lookup, launch), the baseline that
// bench/python_overhead.py sets the Python package's calls beside: the same ops on the same
// small shapes, calls issued back to back and timed on the host (few enough that the launch queue
// absorbs them: the host never waits for the GPU; the synchronisation after each round is not
// timed), 21 rounds. Prints `op median_us min_us` lines: the fastest round is the one the
// machine's other work disturbed least, which the Python side compares with its own.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "bench/attention_timing.hpp"
#include "kjit/attention.hpp"
#include "kjit/merge_states.hpp"
#include "kjit/mla.hpp"
#include "kjit/moe.hpp"

namespace {

using kjit::DeviceBuffer;
using kjit::DType;
using kjit::TensorView;

constexpr int kRounds = 21;

struct HostUs {
  double median, min;
};

template <class F>
HostUs host_us_per_call(int calls, F&& call, kjit::StreamHandle stream) {
  call();  // compile and load outside the timing
  kjit::synchronize(stream);
  std::vector<double> us;
  for (int r = 0; r < kRounds; ++r) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i)
      call();
    const auto stop = std::chrono::steady_clock::now();
    kjit::synchronize(stream);
    us.push_back(std::chrono::duration<double, std::micro>(stop - start).count() / calls);
  }
  std::sort(us.begin(), us.end());
  return {us[us.size() / 2], us.front()};
}

DeviceBuffer int32s(const std::vector<std::int32_t>& values) {
  DeviceBuffer b(values.size() * 4);
  b.upload(values.data(), b.size());
  return b;
}

}  // namespace

int main() try {
  if (kjit::bench::no_gpu("op call overhead")) return 0;
  kjit::Stream stream;
  const auto s = stream.handle();
  // calls: per round; the layer's (several kernels, tens of us of GPU time each) are fewer.
  const auto report = [&](const char* op, auto&& call, int calls = 256) {
    const HostUs us = host_us_per_call(calls, call, s);
    std::printf("%-22s %8.2f %8.2f\n", op, us.median, us.min);
    std::fflush(stdout);
  };

  // Attention forward: q, k, v [1, 128, 8, 64] bf16, causal, with lse.
  DeviceBuffer qkv = kjit::bench::random_bf16(3 * 128 * 8 * 64), out(128 * 8 * 64 * 2),
               lse(8 * 128 * 4);
  const auto bf16 = [](void* p, std::initializer_list<std::int64_t> shape) {
    return TensorView(p, DType::BFloat16, shape);
  };
  char* base = static_cast<char*>(qkv.data());
  const TensorView q = bf16(base, {1, 128, 8, 64}), k = bf16(base + 131072, {1, 128, 8, 64}),
                   v = bf16(base + 262144, {1, 128, 8, 64});
  kjit::attention::ForwardOptions causal;
  causal.causal = true;
  report("attention_forward", [&] {
    kjit::attention::forward(q, k, v, bf16(out.data(), {1, 128, 8, 64}),
                             TensorView(lse.data(), DType::Float32, {1, 8, 128}), causal, s);
  });

  // merge_states: 2 parts of [16, 8, 128] bf16.
  DeviceBuffer parts = kjit::bench::random_bf16(2 * 16 * 8 * 128), parts_lse(2 * 16 * 8 * 4),
               merged(16 * 8 * 128 * 2), merged_lse(16 * 8 * 4);
  parts_lse.fill_bytes(0);
  report("merge_states", [&] {
    kjit::attention::merge_states(bf16(parts.data(), {2, 16, 8, 128}),
                                  TensorView(parts_lse.data(), DType::Float32, {2, 16, 8}),
                                  bf16(merged.data(), {16, 8, 128}),
                                  TensorView(merged_lse.data(), DType::Float32, {16, 8}), s);
  });

  // MLA decode: one sequence of 200 tokens in 4 blocks of 64, 16 heads.
  DeviceBuffer mq = kjit::bench::random_bf16(16 * 576),
               cache = kjit::bench::random_bf16(4 * 64 * 576), mout(16 * 512 * 2), mlse(16 * 4);
  const std::vector<std::int32_t> table{2, 0, 3, 1}, lengths{200};
  DeviceBuffer dtable = int32s(table), dlengths = int32s(lengths);
  const kjit::mla::PagedCache paged{bf16(cache.data(), {4, 64, 576}),
                                    TensorView(dtable.data(), DType::Int32, {1, 4}), table.data(),
                                    TensorView(dlengths.data(), DType::Int32, {1}), lengths.data()};
  kjit::mla::DecodeOptions scale;
  scale.softmax_scale = 0.0625f;
  report("mla_decode", [&] {
    kjit::mla::decode(bf16(mq.data(), {1, 1, 16, 576}), paged, bf16(mout.data(), {1, 1, 16, 512}),
                      TensorView(mlse.data(), DType::Float32, {1, 1, 16}), scale, s);
  });

  // GLM-4.7-Flash's router at 4 tokens (fp32 logits [4, 64], top 4, sigmoid, renormalised, x1.8).
  DeviceBuffer logits(4 * 64 * 4), ids(4 * 4 * 4), weights(4 * 4 * 4);
  logits.fill_bytes(0x3c);
  const kjit::moe::RouterOptions glm{true, 4, 1, 1, true, 1.8f};
  report("moe_router_topk", [&] {
    kjit::moe::router_topk(TensorView(logits.data(), DType::Float32, {4, 64}), TensorView(),
                           TensorView(ids.data(), DType::Int32, {4, 4}),
                           TensorView(weights.data(), DType::Float32, {4, 4}), glm, s);
  });

  // GLM-4.7-Flash's MoE layer at one token (bf16 experts: 64 x [3072, 2048] and [2048, 1536]).
  DeviceBuffer x = kjit::bench::random_bf16(2048),
               gate_up = kjit::bench::random_bf16(64ull * 3072 * 2048),
               down = kjit::bench::random_bf16(64ull * 2048 * 1536), y(2048 * 2);
  const kjit::moe::LayerWeights layer_weights{bf16(gate_up.data(), {64, 3072, 2048}),
                                              bf16(down.data(), {64, 2048, 1536}), TensorView()};
  kjit::moe::LayerOptions layer_options;
  layer_options.router = glm;
  report(
      "moe_layer",
      [&] {
        kjit::moe::layer(bf16(x.data(), {1, 2048}),
                         TensorView(logits.data(), DType::Float32, {1, 64}), layer_weights,
                         TensorView(), layer_options, bf16(y.data(), {1, 2048}), s);
      },
      32);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "op_call_overhead: %s\n", e.what());
  return 1;
}

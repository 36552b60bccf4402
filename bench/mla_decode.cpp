// MLA decode speed: bf16, s_q 1, block size 64, H in {20 (GLM-4.7-Flash), 64, 128 (DeepSeek-V3)},
// B in {1, 8, 32, 64, 128}, every sequence L in {1k, 4k, 16k, 64k} tokens, blocks shuffled over
// the cache. Per row: time per call (the median of 15 runs of 20 back-to-back calls, so that the
// host's enqueue overlaps the GPU's work) and its GB/s of cache bytes read (B L 1152 / time); the
// same 20 calls replayed as a CUDA graph (the GPU's time alone) with their GB/s, TFLOP/s
// (2 H s_q L (576 + 512) per sequence) and fraction of the device-to-device copy bandwidth
// measured first in the same process; the main loop and split count the op chose. Then three
// uneven batches at each H (skewed_batches(), the same in bench/mla_decode_peers.py), L their
// longest: where a split plan sized by the longest request leaves most blocks short.
// Flags (each repeatable): --only-heads H, --only-batch B, --only-length L (the uneven batches
// run when no batch or length is named); --only-uneven: the uneven batches alone.
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "bench/attention_timing.hpp"
#include "bench/mla_workload.hpp"
#include "kjit/jit.hpp"
#include "kjit/mla.hpp"
#include "ops/dispatch.hpp"
#include "ops/mla/mla_decode.hpp"

namespace {

using kjit::DeviceBuffer;
using kjit::TensorView;
using kjit::bench::graph_median_ms;
using kjit::bench::median_ms;

constexpr int kCalls = 20;

struct Batch {
  const char* name;
  std::vector<std::int32_t> lengths;
};

// Uneven batches, integer formulas (bench/mla_decode_peers.py builds the same): one long request
// among short ones; 32 spread from 512 to 32k keys (quadratically); short and long alternating.
std::vector<Batch> skewed_batches() {
  Batch one_long{"1x64k+7x1k", std::vector<std::int32_t>(8, 1024)};
  one_long.lengths[0] = 65536;
  Batch spread{"32x512..32k", {}};
  for (int i = 0; i < 32; ++i)
    spread.lengths.push_back(512 + (32768 - 512) * i * i / (31 * 31));
  Batch alternating{"32x256+32x16k", {}};
  for (int i = 0; i < 64; ++i)
    alternating.lengths.push_back(i % 2 == 0 ? 256 : 16384);
  return {one_long, spread, alternating};
}

}  // namespace

int main(int argc, char** argv) try {
  std::vector<long long> only_heads, only_batch, only_length;
  bool only_uneven = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--only-uneven") {
      only_uneven = true;
      continue;
    }
    auto* list = arg == "--only-heads"    ? &only_heads
                 : arg == "--only-batch"  ? &only_batch
                 : arg == "--only-length" ? &only_length
                                          : nullptr;
    if (list && i + 1 < argc) {
      list->push_back(std::stoll(argv[++i]));
    } else {
      std::fprintf(stderr,
                   "usage: kjit_bench_mla_decode [--only-heads H] [--only-batch B] "
                   "[--only-length L]... [--only-uneven]\n");
      return 2;
    }
  }
  auto skip = [](const std::vector<long long>& only, long long v) {
    return !only.empty() && std::find(only.begin(), only.end(), v) == only.end();
  };
  if (kjit::bench::no_gpu("mla_decode")) return 0;
  kjit::Stream stream;
  const double copy_gbs = kjit::bench::copy_gbs(stream.handle());
  std::printf("%s, kjit %s, MLA decode bf16 s_q 1 block 64; device copy %.0f GB/s\n",
              kjit::device_info(kjit::current_device()).name.c_str(), kjit::version().c_str(),
              copy_gbs);
  std::printf("%4s %4s %6s %10s %9s %10s %9s %8s %8s %8s %6s\n", "H", "B", "L", "us/call", "GB/s",
              "graph us", "GB/s", "TFLOP/s", "vs copy", "mainloop", "splits");
  using kjit::bench::MlaWorkload;
  std::mt19937 rng(11);
  // One row: B requests of the given lengths, `name` after the columns for an uneven batch (L: its
  // longest).
  const auto run_row = [&](long long heads, const std::vector<std::int32_t>& lengths,
                           const char* name) {
    const MlaWorkload w(heads, lengths, rng);
    const long long longest = *std::max_element(lengths.begin(), lengths.end());
    const TensorView vq = w.q_view(), vout = w.out_view(), vlse = w.lse_view();
    const kjit::mla::PagedCache paged = w.paged();
    kjit::mla::DecodeOptions options;
    options.softmax_scale = 0.0625f;
    auto calls = [&] {
      for (int i = 0; i < kCalls; ++i)
        kjit::mla::decode(vq, paged, vout, vlse, options, stream.handle());
    };
    const double ms = median_ms(calls, stream.handle()) / kCalls;
    const double graph_ms = graph_median_ms(calls, stream.handle()) / kCalls;
    const double bytes = static_cast<double>(w.keys) * MlaWorkload::kD * 2;
    const double flops = 2.0 * heads * w.keys * (MlaWorkload::kD + MlaWorkload::kV);
    const auto call = kjit::ops::MlaDecode::validate(vq, paged, vout, vlse, options);
    const auto config = kjit::ops::Dispatcher<kjit::ops::MlaDecode>::instance().choose(
        call.problem, kjit::arch::current());
    std::printf("%4lld %4lld %6lld %10.2f %9.0f %10.2f %9.0f %8.1f %7.0f%% %8lld %6lld%s%s\n",
                heads, w.batch, longest, ms * 1e3, bytes / ms / 1e6, graph_ms * 1e3,
                bytes / graph_ms / 1e6, flops / graph_ms / 1e9,
                100.0 * bytes / graph_ms / 1e6 / copy_gbs, static_cast<long long>(config.mainloop),
                static_cast<long long>(config.splits), *name ? " " : "", name);
  };
  for (long long heads : {20, 64, 128}) {
    if (skip(only_heads, heads)) continue;
    for (long long b : {1, 8, 32, 64, 128}) {
      if (only_uneven || skip(only_batch, b)) continue;
      for (long long l : {1024, 4096, 16384, 65536}) {
        if (skip(only_length, l)) continue;
        run_row(
            heads,
            std::vector<std::int32_t>(static_cast<std::size_t>(b), static_cast<std::int32_t>(l)),
            "");
      }
    }
    if (!only_batch.empty() || !only_length.empty()) continue;
    for (const Batch& batch : skewed_batches())
      run_row(heads, batch.lengths, batch.name);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kjit_bench_mla_decode: %s\n", e.what());
  return 1;
}

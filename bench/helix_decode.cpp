// The helix step's cost on one GPU, W simulated ranks: GLM-4.7-Flash's MLA (20 heads, bf16,
// 64-token blocks, scale 0.0625), B sequences of L tokens, blocks owned round-robin. Per row: the
// single-GPU decode of the whole cache; each rank's decode of its shard (all heads; the slowest of
// the W); the merge of the W partials of one rank's heads (the largest slice); the two summed
// against the single decode, and the bytes each rank sends in the all-to-all (O in bf16 and the
// LSE, B H (512 x 2 + 4) B in all, not timed here: one GPU has no link to time it on). Every time
// is a CUDA graph's replay of 20 calls, median of 15, per call.
#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "bench/attention_timing.hpp"
#include "bench/mla_workload.hpp"
#include "kjit/jit.hpp"
#include "kjit/merge_states.hpp"
#include "kjit/mla.hpp"

namespace {

using kjit::DeviceBuffer;
using kjit::DType;
using kjit::TensorView;

constexpr int kCalls = 20, kHeads = 20, kBlock = kjit::bench::MlaWorkload::kBlock;
constexpr int kV = kjit::mla::kLatentDim;

template <class F>
double per_call_us(F&& call, kjit::StreamHandle stream) {
  return kjit::bench::graph_per_call_ms(
             kCalls, [&](int) { call(); }, stream) *
         1e3;
}

}  // namespace

int main() try {
  if (kjit::bench::no_gpu("helix decode")) return 0;
  kjit::Stream stream;
  const auto s = stream.handle();
  std::printf("%s, kjit %s, helix MLA decode, H %d, bf16, blocks of %d, us per call\n",
              kjit::device_info(kjit::current_device()).name.c_str(), kjit::version().c_str(),
              kHeads, kBlock);
  std::printf("%3s %4s %7s %9s %11s %9s %11s %9s %10s\n", "W", "B", "L", "single", "rank local",
              "merge", "local+merge", "speedup", "sent KB");
  std::mt19937 rng(17);
  kjit::mla::DecodeOptions options;
  options.softmax_scale = 0.0625f;
  for (long long b : {1, 8, 32}) {
    for (long long l : {16384, 65536}) {
      const kjit::bench::MlaWorkload work(
          kHeads,
          std::vector<std::int32_t>(static_cast<std::size_t>(b), static_cast<std::int32_t>(l)),
          rng);
      const long long max_blocks = work.max_blocks;
      const std::vector<std::int32_t>& table = work.table;
      const TensorView vq = work.q_view(), vcache = work.cache_view(), vout = work.out_view(),
                       vlse = work.lse_view();
      const kjit::mla::PagedCache whole = work.paged();
      const double single =
          per_call_us([&] { kjit::mla::decode(vq, whole, vout, vlse, options, s); }, s);
      for (int w : {2, 4, 8}) {
        // Each rank's shard: global blocks g with g % W == r, over the same physical cache.
        double slowest = 0;
        for (int r = 0; r < w; ++r) {
          std::vector<std::int32_t> local_table(table.size(), 0), local_lengths(b);
          for (long long i = 0; i < b; ++i) {
            local_lengths[i] =
                static_cast<std::int32_t>(kjit::mla::helix_local_length(l, kBlock, w, r));
            long long k = 0;
            for (long long g = r; g < max_blocks; g += w)
              local_table[i * max_blocks + k++] = table[i * max_blocks + g];
          }
          DeviceBuffer dlocal_table(local_table.size() * 4), dlocal_lengths(b * 4);
          dlocal_table.upload(local_table.data(), dlocal_table.size());
          dlocal_lengths.upload(local_lengths.data(), dlocal_lengths.size());
          const kjit::mla::PagedCache shard{
              vcache, TensorView(dlocal_table.data(), DType::Int32, {b, max_blocks}),
              local_table.data(), TensorView(dlocal_lengths.data(), DType::Int32, {b}),
              local_lengths.data()};
          slowest = std::max(
              slowest,
              per_call_us([&] { kjit::mla::decode(vq, shard, vout, vlse, options, s); }, s));
        }
        // The merge of one rank's heads: W partials [W, B, H_r, 512] with their LSEs.
        const long long hr = (kHeads + w - 1) / w;
        const DeviceBuffer parts = kjit::bench::random_bf16(w * b * hr * kV);
        DeviceBuffer parts_lse(w * b * hr * 4), merged(b * hr * kV * 2), merged_lse(b * hr * 4);
        parts_lse.fill_bytes(0);
        const double merge = per_call_us(
            [&] {
              kjit::attention::merge_states(
                  TensorView(parts.data(), DType::BFloat16, {w, b, hr, kV}),
                  TensorView(parts_lse.data(), DType::Float32, {w, b, hr}),
                  TensorView(merged.data(), DType::BFloat16, {b, hr, kV}),
                  TensorView(merged_lse.data(), DType::Float32, {b, hr}), s);
            },
            s);
        std::printf("%3d %4lld %7lld %9.1f %11.1f %9.1f %11.1f %8.2fx %10.1f\n", w, b, l, single,
                    slowest, merge, slowest + merge, single / (slowest + merge),
                    b * kHeads * (kV * 2 + 4) / 1024.0);
      }
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kjit_bench_helix_decode: %s\n", e.what());
  return 1;
}

// MoE grouped GEMM speed, bf16: the rows of align's layout (blocks of 128) times each expert's
// weights, balanced routing (pair i to expert i mod E, so every expert has T k / E rows, padded to
// 128) at GLM-4.7-Flash's projections (E 64: gate/up N 3072 K 2048, down N 2048 K 1536) over
// T k = 4k, 16k and 64k routed rows, torch's anchor row (E 64, 16k rows, K 2048, N 1536) and
// DeepGEMM's (E 8, 32k rows, N 4096, K 7168). Per row: us per call as a CUDA graph's replay of 20
// calls (median of 15; the kernels run 0.1-10 ms, so back-to-back calls would show the same),
// TFLOP/s over the routed rows (2 T k N K, padding not counted) and the config the op chose.
// bench/moe_gemm_peers.py times torch._grouped_mm and DeepGEMM on the same rows.
#include <cstdio>
#include <vector>

#include "bench/attention_timing.hpp"
#include "kjit/jit.hpp"
#include "kjit/moe.hpp"
#include "ops/dispatch.hpp"
#include "ops/moe/grouped_gemm.hpp"

namespace {

using kjit::DeviceBuffer;
using kjit::DType;
using kjit::TensorView;

constexpr int kCalls = 20, kBlock = 128;

struct Row {
  const char* name;
  int experts, rows, n, k;
};

}  // namespace

int main() try {
  std::string reason;
  if (!kjit::driver_available(&reason)) {
    std::printf("moe grouped gemm needs a CUDA GPU: %s\n", reason.c_str());
    return 0;
  }
  if (!kjit::arch::current().has_wgmma()) {
    std::printf("moe grouped gemm needs sm_90a so far; this card is %s\n",
                kjit::arch::current().name().c_str());
    return 0;
  }
  kjit::Stream stream;
  std::printf("%s, kjit %s, MoE grouped GEMM bf16, balanced routing, blocks of %d rows\n",
              kjit::device_info(kjit::current_device()).name.c_str(), kjit::version().c_str(),
              kBlock);
  std::printf("%-14s %4s %6s %5s %5s %10s %8s  %s\n", "row", "E", "Tk", "N", "K", "graph us",
              "TFLOP/s", "config");
  const std::vector<Row> rows{
      {"torch-anchor", 64, 16384, 1536, 2048}, {"glm-gate-up", 64, 4096, 3072, 2048},
      {"glm-gate-up", 64, 16384, 3072, 2048},  {"glm-gate-up", 64, 65536, 3072, 2048},
      {"glm-down", 64, 4096, 2048, 1536},      {"glm-down", 64, 16384, 2048, 1536},
      {"glm-down", 64, 65536, 2048, 1536},     {"deepgemm", 8, 32768, 4096, 7168}};
  for (const Row& r : rows) {
    // Balanced routing as [T k, 1] ids; align's layout and the permuted rows.
    std::vector<std::int32_t> ids(static_cast<std::size_t>(r.rows));
    for (int i = 0; i < r.rows; ++i)
      ids[i] = i % r.experts;
    const std::int64_t capacity = kjit::moe::align_capacity(r.rows, r.experts, kBlock);
    DeviceBuffer dids(ids.size() * 4), sorted(capacity * 4), blocks(capacity / kBlock * 4),
        counts(r.experts * 4), offsets((r.experts + 1) * 4), invalid(4), positions(ids.size() * 4);
    dids.upload(ids.data(), dids.size());
    kjit::moe::align(TensorView(dids.data(), DType::Int32, {r.rows, 1}), r.experts, kBlock,
                     {TensorView(sorted.data(), DType::Int32, {capacity}),
                      TensorView(blocks.data(), DType::Int32, {capacity / kBlock}),
                      TensorView(counts.data(), DType::Int32, {r.experts}),
                      TensorView(offsets.data(), DType::Int32, {r.experts + 1}),
                      TensorView(invalid.data(), DType::Int32, {1})},
                     stream.handle());
    // Random rows; the weights (up to 470 M elements) one repeated small value, which the timing
    // does not depend on.
    const DeviceBuffer x = kjit::bench::random_bf16(static_cast<std::size_t>(r.rows) * r.k);
    DeviceBuffer w(static_cast<std::size_t>(r.experts) * r.n * r.k * 2);
    w.fill_bytes(0x3c);
    DeviceBuffer x_sorted(capacity * r.k * 2), y(capacity * r.n * 2);
    kjit::moe::permute(TensorView(x.data(), DType::BFloat16, {r.rows, r.k}),
                       TensorView(sorted.data(), DType::Int32, {capacity}), 1,
                       TensorView(x_sorted.data(), DType::BFloat16, {capacity, r.k}),
                       TensorView(positions.data(), DType::Int32, {r.rows}), stream.handle());
    const TensorView vx(x_sorted.data(), DType::BFloat16, {capacity, r.k}),
        vblocks(blocks.data(), DType::Int32, {capacity / kBlock}),
        vw(w.data(), DType::BFloat16, {r.experts, r.n, r.k}),
        vy(y.data(), DType::BFloat16, {capacity, r.n});
    const double ms =
        kjit::bench::graph_median_ms(
            [&] {
              for (int i = 0; i < kCalls; ++i)
                kjit::moe::grouped_gemm(vx, vblocks, kBlock, vw, vy, {}, stream.handle());
            },
            stream.handle()) /
        kCalls;
    const auto call = kjit::ops::MoeGemm::validate(vx, vblocks, kBlock, vw, vy, {});
    const auto config = kjit::ops::Dispatcher<kjit::ops::MoeGemm>::instance().choose(
        call.problem, kjit::arch::current());
    std::printf("%-14s %4d %6d %5d %5d %10.1f %8.1f  block_n %lld stages %lld\n", r.name, r.experts,
                r.rows, r.n, r.k, ms * 1e3, 2.0 * r.rows * r.n * r.k / ms / 1e9,
                static_cast<long long>(config.block_n), static_cast<long long>(config.stages));
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kjit_bench_moe_gemm: %s\n", e.what());
  return 1;
}

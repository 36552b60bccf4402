// MoE grouped GEMM speed with bf16 weights and FP4 ones (NVFP4, MXFP4: moe_expert_gemm_fp4), each
// call timed as a CUDA graph's replay of 20 calls (median of 15).
//  - Prefill: balanced routing (pair i to expert i mod E, so every expert has T k / E rows, padded
//    to blocks of 128) at GLM-4.7-Flash's projections (E 64: gate/up N 3072 K 2048, down N 2048
//    K 1536) over T k = 4k, 16k and 64k routed rows, torch's anchor row (E 64, 16k rows, K 2048,
//    N 1536) and DeepGEMM's (E 8, 32k rows, N 4096, K 7168); TFLOP/s over the routed rows
//    (2 T k N K, padding not counted). bench/moe_gemm_peers.py times torch._grouped_mm and
//    DeepGEMM on the same rows. bf16 rows also time 256-column tiles and persistent blocks beside
//    the op's choice, and FP4 rows 128 and 256 weight rows at 4 to 6 stages; FP4 also over blocks
//    of 256 token rows (the layer's from 1024 pairs an expert); the -lr rows routed as
//    kjit_bench_moe_layer's tokens are (uneven experts). The plain epilogue, or with `prefill ROWS
//    layer` the layer's: SwiGLU on gate/up, the routing weights on down.
//  - Decode: T = 1 to 64 tokens, top 4 of 64 experts, blocks of 64 rows. Call c of the 20 routes
//    token t's slot j to expert (4 T c + 4 t + j) mod 64, so that a call's experts were last read
//    at least 15 calls before and come from HBM, as a model's do layer after layer, not from L2;
//    GB/s over the bytes of the experts a call reads (FP4: codes and scales), and that as a share
//    of the device copy's bandwidth. Each row's op choice first, then on the same calls the other
//    decode configs that run: the decode kernel (depths 2, 4 and 6; depths 2 and 4 with one set
//    of warps) and 64 weight rows a block.
#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "bench/attention_timing.hpp"
#include "bench/moe_routing.hpp"
#include "kjit/jit.hpp"
#include "kjit/moe.hpp"
#include "ops/dispatch.hpp"
#include "ops/moe/grouped_gemm.hpp"

namespace {

using kjit::DeviceBuffer;
using kjit::DType;
using kjit::TensorView;
using Format = kjit::ops::MoeGemm::WeightFormat;

constexpr int kCalls = 20, kTopK = 4;

const char* format_name(Format f) {
  return f == Format::kSameAsX ? "bf16" : f == Format::kNvFp4 ? "nvfp4" : "mxfp4";
}

// Every expert's weights, random, as torch's and DeepGEMM's in bench/moe_gemm_peers.py: the tensor
// cores draw more power on random operands than on one repeated value, and may clock lower. bf16
// of unit deviation, or random E2M1 codes with block scales from 1/4 to 1 (NVFP4's E4M3 0x28 to
// 0x38, MXFP4's E8M0 2^-2 to 2^0) and tensor scales of 1. (Until 2026-12-08 they were one repeated
// value; docs/perf.md's GEMM figures before then were taken so.)
class ExpertWeights {
 public:
  ExpertWeights(Format format, int experts, int n, int k)
      : format_(format), experts_(experts), n_(n), k_(k) {
    const std::size_t elems = static_cast<std::size_t>(experts) * n * k;
    if (format == Format::kSameAsX) {
      codes_ = kjit::bench::random_bf16(elems);
      return;
    }
    codes_ = kjit::bench::random_bytes(elems / 2, 0, 255);
    const std::size_t scales = elems / kjit::moe::fp4_scale_block(fp4_format());
    scales_ = format == Format::kNvFp4 ? kjit::bench::random_bytes(scales, 0x28, 0x38)
                                       : kjit::bench::random_bytes(scales, 125, 127);
    const std::vector<float> ones(static_cast<std::size_t>(experts), 1.f);
    tensor_scale_ = DeviceBuffer(ones.size() * 4);
    tensor_scale_.upload(ones.data(), ones.size() * 4);
  }

  // The bytes one expert's GEMM reads of them.
  double expert_bytes() const {
    const double elems = static_cast<double>(n_) * k_;
    return format_ == Format::kSameAsX
               ? 2 * elems
               : elems / 2 + elems / kjit::moe::fp4_scale_block(fp4_format());
  }

  void run(const TensorView& x_sorted, const TensorView& blocks, int block, const TensorView& y,
           const kjit::moe::GemmEpilogue& epilogue, kjit::StreamHandle stream) const {
    if (format_ == Format::kSameAsX) {
      kjit::moe::grouped_gemm(x_sorted, blocks, block, w16(), y, epilogue, stream);
    } else {
      kjit::moe::grouped_gemm(x_sorted, blocks, block, fp4(), y, epilogue, stream);
    }
  }

  // Whether `config` runs this call here.
  bool valid(const kjit::ops::MoeGemm::Config& config, const TensorView& x_sorted,
             const TensorView& blocks, int block, const TensorView& y,
             const kjit::moe::GemmEpilogue& epilogue = {}) const {
    return kjit::ops::MoeGemm::valid(config, call(x_sorted, blocks, block, y, epilogue).problem,
                                     kjit::arch::current());
  }

  // The same call with `config` instead of the op's choice (another main loop or block, beside).
  void run_with(const kjit::ops::MoeGemm::Config& config, const TensorView& x_sorted,
                const TensorView& blocks, int block, const TensorView& y,
                const kjit::moe::GemmEpilogue& epilogue, kjit::StreamHandle stream) const {
    using kjit::ops::MoeGemm;
    const auto c = call(x_sorted, blocks, block, y, epilogue);
    MoeGemm::launch(kjit::load(MoeGemm::spec(config, c.problem, kjit::arch::current())), config,
                    c.problem, c.args, stream);
  }

  // The config the op picks for this call.
  kjit::ops::MoeGemm::Config config(const TensorView& x_sorted, const TensorView& blocks, int block,
                                    const TensorView& y,
                                    const kjit::moe::GemmEpilogue& epilogue = {}) const {
    return kjit::ops::Dispatcher<kjit::ops::MoeGemm>::instance().choose(
        call(x_sorted, blocks, block, y, epilogue).problem, kjit::arch::current());
  }

 private:
  kjit::moe::Fp4Format fp4_format() const {
    return format_ == Format::kNvFp4 ? kjit::moe::Fp4Format::kNvFp4 : kjit::moe::Fp4Format::kMxFp4;
  }
  TensorView w16() const { return TensorView(codes_.data(), DType::BFloat16, {experts_, n_, k_}); }
  // The op's validated call over these weights.
  kjit::ops::Call<kjit::ops::MoeGemm> call(const TensorView& x_sorted, const TensorView& blocks,
                                           int block, const TensorView& y,
                                           const kjit::moe::GemmEpilogue& epilogue) const {
    const kjit::ops::MoeGemm::Weights w = format_ == Format::kSameAsX
                                              ? kjit::ops::MoeGemm::Weights(w16())
                                              : kjit::ops::MoeGemm::Weights(fp4());
    return kjit::ops::MoeGemm::validate(x_sorted, blocks, block, w, y, epilogue);
  }
  kjit::moe::Fp4Weights fp4() const {
    return {fp4_format(), TensorView(codes_.data(), DType::UInt8, {experts_, n_, k_ / 2}),
            TensorView(scales_.data(), DType::UInt8,
                       {experts_, n_, k_ / kjit::moe::fp4_scale_block(fp4_format())}),
            TensorView(tensor_scale_.data(), DType::Float32, {experts_})};
  }

  Format format_;
  std::int64_t experts_, n_, k_;
  DeviceBuffer codes_, scales_, tensor_scale_;
};

// align's layout of `ids` ([pairs, 1]: one slot a token, so that the rows are the pairs), the
// permuted rows of x in it, and the plain epilogue with align's sorted and weights of 1 (which
// let the FP4 GEMM skip padding rows) and the padding rows left unwritten, as the layer's.
struct Layout {
  Layout(const std::vector<std::int32_t>& ids, int experts, int block, const DeviceBuffer& x, int k,
         const kjit::Stream& stream)
      : block(block),
        capacity(kjit::moe::align_capacity(static_cast<std::int64_t>(ids.size()), experts, block)),
        sorted(capacity * 4),
        blocks(capacity / block * 4),
        x_sorted(capacity * k * 2),
        weights(std::max<std::size_t>(ids.size(), 1) * 4) {
    const auto pairs = static_cast<std::int64_t>(ids.size());
    const std::vector<float> ones(ids.size(), 1.f);
    weights.upload(ones.data(), ones.size() * 4);
    epilogue.sorted = TensorView(sorted.data(), DType::Int32, {capacity});
    epilogue.weights = TensorView(weights.data(), DType::Float32, {pairs, 1});
    epilogue.zero_padding = false;
    DeviceBuffer dids(ids.size() * 4), counts(experts * 4), offsets((experts + 1) * 4), invalid(4),
        positions(ids.size() * 4);
    dids.upload(ids.data(), dids.size());
    kjit::moe::align(TensorView(dids.data(), DType::Int32, {pairs, 1}), experts, block,
                     {TensorView(sorted.data(), DType::Int32, {capacity}), blocks_view(),
                      TensorView(counts.data(), DType::Int32, {experts}),
                      TensorView(offsets.data(), DType::Int32, {experts + 1}),
                      TensorView(invalid.data(), DType::Int32, {1})},
                     stream.handle());
    kjit::moe::permute(TensorView(x.data(), DType::BFloat16, {pairs, k}),
                       TensorView(sorted.data(), DType::Int32, {capacity}), 1,
                       TensorView(x_sorted.data(), DType::BFloat16, {capacity, k}),
                       TensorView(positions.data(), DType::Int32, {pairs}), stream.handle());
    stream.synchronize();  // before the id buffers go
  }
  TensorView blocks_view() const {
    return TensorView(blocks.data(), DType::Int32, {capacity / block});
  }
  TensorView x_view(int k) const {
    return TensorView(x_sorted.data(), DType::BFloat16, {capacity, k});
  }

  int block;
  std::int64_t capacity;
  DeviceBuffer sorted, blocks, x_sorted, weights;
  kjit::moe::GemmEpilogue epilogue;
};

struct Row {
  const char* name;
  int experts, rows, n, k;
  int block = 128;  // align's rows a block (prefill)
  // The rows routed as kjit_bench_moe_layer's tokens are (top 4 of its hashed logits: an expert's
  // rows uneven, its last block partly held), else balanced (row i to expert i mod E).
  bool layer_routing = false;
};

// Whether two configs are one (every field of the family's).
bool same(const kjit::ops::MoeGemm::Config& a, const kjit::ops::MoeGemm::Config& b) {
  return kjit::ops::config_map<kjit::ops::MoeGemm>(a) ==
         kjit::ops::config_map<kjit::ops::MoeGemm>(b);
}

void print_row(const char* name, Format f, int experts, int rows, int n, int k, double ms,
               double gbs, const kjit::ops::MoeGemm::Config& c, double copy_gbs) {
  std::printf("%-14s %-6s %4d %6d %5d %5d %10.1f %8.1f", name, format_name(f), experts, rows, n, k,
              ms * 1e3, 2.0 * rows * n * k / ms / 1e9);
  if (gbs > 0) {
    std::printf(" %7.0f %6.0f%%", gbs, 100 * gbs / copy_gbs);
  } else {
    std::printf(" %7s %7s", "-", "-");
  }
  std::printf("  block_n %lld stages %lld%s\n", static_cast<long long>(c.block_n),
              static_cast<long long>(c.stages),
              c.decode == 2  ? " decode one set"
              : c.decode     ? " decode"
              : c.persistent ? " persistent"
                             : "");
}

}  // namespace

int main(int argc, char** argv) try {
  // "prefill" or "decode": only those rows; "prefill ROWS": only the prefill rows of that T k (0:
  // all); "decode TOKENS": only that decode batch (a profiler run's filters); "prefill ROWS layer":
  // the GLM rows with the layer's epilogues.
  const std::string only = argc > 1 ? argv[1] : "";
  const int only_count = argc > 2 ? std::stoi(argv[2]) : 0;
  const bool layer_epilogues = argc > 3 && std::string(argv[3]) == "layer";
  if (kjit::bench::no_gpu("moe grouped gemm")) return 0;
  if (!kjit::arch::current().has_wgmma()) {
    std::printf("moe grouped gemm needs sm_90a so far; this card is %s\n",
                kjit::arch::current().name().c_str());
    return 0;
  }
  kjit::Stream stream;
  const auto s = stream.handle();
  const double copy_gbs = kjit::bench::copy_gbs(s);
  std::printf("%s, kjit %s, MoE grouped GEMM, bf16 activations; device copy %.0f GB/s\n",
              kjit::device_info(kjit::current_device()).name.c_str(), kjit::version().c_str(),
              copy_gbs);
  std::printf("%-14s %-6s %4s %6s %5s %5s %10s %8s %7s %7s  %s\n", "row", "w", "E", "Tk", "N", "K",
              "graph us", "TFLOP/s", "GB/s", "vs copy", "config");
  if (layer_epilogues) {
    std::printf(
        "GLM rows with the layer's epilogues: SwiGLU on gate/up (y of N / 2 columns), the "
        "routing weights on down\n");
  }
  const auto time_calls = [&](const auto& call) {
    return kjit::bench::graph_per_call_ms(kCalls, call, s);
  };

  // Each format's and shape's experts drawn once (random values take the host seconds a row).
  std::map<std::tuple<Format, int, int, int>, ExpertWeights> drawn;
  const auto expert_weights = [&](Format f, int experts, int n, int k) -> const ExpertWeights& {
    return drawn.try_emplace({f, experts, n, k}, f, experts, n, k).first->second;
  };

  // Prefill.
  const std::vector<Row> rows{
      {"torch-anchor", 64, 16384, 1536, 2048},
      {"glm-gate-up", 64, 4096, 3072, 2048},
      {"glm-gate-up", 64, 16384, 3072, 2048},
      {"glm-gate-up", 64, 65536, 3072, 2048},
      {"glm-down", 64, 4096, 2048, 1536},
      {"glm-down", 64, 16384, 2048, 1536},
      {"glm-down", 64, 65536, 2048, 1536},
      {"deepgemm", 8, 32768, 4096, 7168},
      // The layer's T 256: 16 rows an expert in blocks of 64 (the 64-row shape of the kernels).
      {"glm-gate-up-64", 64, 1024, 3072, 2048, 64},
      {"glm-down-64", 64, 1024, 2048, 1536, 64},
      // FP4 only, in blocks of 256: GLM's T 4096 and 16384 (256 and 1024 rows an expert; the layer
      // takes blocks of 256 at the latter).
      {"glm-gate-up-256", 64, 16384, 3072, 2048, 256},
      {"glm-gate-up-256", 64, 65536, 3072, 2048, 256},
      {"glm-down-256", 64, 16384, 2048, 1536, 256},
      {"glm-down-256", 64, 65536, 2048, 1536, 256},
      // The layer's own routing at T 4096 (blocks of 128) and 16384 (FP4 in blocks of 256): what
      // its uneven experts cost against the balanced rows above.
      {"glm-gate-up-lr", 64, 16384, 3072, 2048, 128, true},
      {"glm-down-lr", 64, 16384, 2048, 1536, 128, true},
      {"glm-gate-up-lr", 64, 65536, 3072, 2048, 256, true},
      {"glm-down-lr", 64, 65536, 2048, 1536, 256, true}};
  for (const Row& r : rows) {
    if (only == "decode") break;
    if (only_count > 0 && r.rows != only_count) continue;
    std::vector<std::int32_t> ids(static_cast<std::size_t>(r.rows));
    if (r.layer_routing) {
      ids = kjit::bench::top_k_experts(kjit::bench::hashed_router_logits(r.rows / kTopK, r.experts),
                                       r.experts, kTopK);
    } else {
      for (int i = 0; i < r.rows; ++i)
        ids[i] = i % r.experts;
    }
    const DeviceBuffer x = kjit::bench::random_bf16(static_cast<std::size_t>(r.rows) * r.k);
    const Layout layout(ids, r.experts, r.block, x, r.k, stream);
    const bool glm = r.name[0] == 'g';
    using Kind = kjit::moe::GemmEpilogue::Kind;
    kjit::moe::GemmEpilogue epilogue = layout.epilogue;
    if (layer_epilogues && glm) {
      epilogue.kind = std::string(r.name).find("gate-up") != std::string::npos
                          ? Kind::kSwiGLU
                          : Kind::kRoutingWeights;
    }
    const std::int64_t y_columns = epilogue.kind == Kind::kSwiGLU ? r.n / 2 : r.n;
    DeviceBuffer y(layout.capacity * y_columns * 2);
    const TensorView vx = layout.x_view(r.k), vblocks = layout.blocks_view(),
                     vy(y.data(), DType::BFloat16, {layout.capacity, y_columns});
    for (Format f : {Format::kSameAsX, Format::kNvFp4, Format::kMxFp4}) {
      if (f != Format::kSameAsX && !glm) continue;            // the anchors' rows are bf16
      if (f == Format::kSameAsX && r.block == 256) continue;  // blocks of 256 for FP4 only
      const ExpertWeights& w = expert_weights(f, r.experts, r.n, r.k);
      const double ms = time_calls([&](int) { w.run(vx, vblocks, r.block, vy, epilogue, s); });
      const kjit::ops::MoeGemm::Config chosen = w.config(vx, vblocks, r.block, vy, epilogue);
      print_row(r.name, f, r.experts, r.rows, r.n, r.k, ms, 0, chosen, copy_gbs);
      // The other 256-column tiles and (16-bit weights) persistent blocks beside (the tuner's);
      // FP4 weights also at 128 rows (4 to 6 stages).
      std::vector<kjit::ops::MoeGemm::Config> others{{256, 3},       {256, 4},       {256, 6},
                                                     {128, 4, 0, 1}, {128, 6, 0, 1}, {256, 3, 0, 1},
                                                     {256, 4, 0, 1}};
      if (f != Format::kSameAsX) others.insert(others.end(), {{128, 4}, {128, 5}, {128, 6}});
      for (const kjit::ops::MoeGemm::Config& other : others) {
        if (same(other, chosen) || !w.valid(other, vx, vblocks, r.block, vy, epilogue)) continue;
        const double other_ms =
            time_calls([&](int) { w.run_with(other, vx, vblocks, r.block, vy, epilogue, s); });
        print_row(r.name, f, r.experts, r.rows, r.n, r.k, other_ms, 0, other, copy_gbs);
      }
    }
  }

  // Decode: 20 layouts a row, each call's experts its own.
  constexpr int kExperts = 64, kDecodeBlock = 64;
  const Row projections[] = {{"decode-gate-up", kExperts, 0, 3072, 2048},
                             {"decode-down", kExperts, 0, 2048, 1536}};
  for (const Row& p : projections) {
    if (only == "prefill") break;
    const std::vector<Format> formats{Format::kSameAsX, Format::kNvFp4, Format::kMxFp4};
    for (int tokens : {1, 4, 16, 64}) {
      if (only_count != 0 && tokens != only_count) continue;
      const int pairs = tokens * kTopK;
      const DeviceBuffer x = kjit::bench::random_bf16(static_cast<std::size_t>(pairs) * p.k);
      std::vector<Layout> layouts;
      layouts.reserve(kCalls);
      for (int c = 0; c < kCalls; ++c) {
        std::vector<std::int32_t> ids(static_cast<std::size_t>(pairs));
        for (int i = 0; i < pairs; ++i)
          ids[i] = (pairs * c + i) % kExperts;
        layouts.emplace_back(ids, kExperts, kDecodeBlock, x, p.k, stream);
      }
      DeviceBuffer y(layouts[0].capacity * p.n * 2);
      const TensorView vy(y.data(), DType::BFloat16, {layouts[0].capacity, p.n});
      const int touched = std::min(pairs, kExperts);
      for (std::size_t f = 0; f < formats.size(); ++f) {
        const ExpertWeights& w = expert_weights(formats[f], kExperts, p.n, p.k);
        const double ms = time_calls([&](int c) {
          w.run(layouts[c].x_view(p.k), layouts[c].blocks_view(), kDecodeBlock, vy,
                layouts[c].epilogue, s);
        });
        const kjit::ops::MoeGemm::Config chosen =
            w.config(layouts[0].x_view(p.k), layouts[0].blocks_view(), kDecodeBlock, vy);
        print_row(p.name, formats[f], kExperts, pairs, p.n, p.k, ms,
                  touched * w.expert_bytes() / ms / 1e6, chosen, copy_gbs);
        // The other decode configs on the same calls: the decode kernel (its depths, two sets of
        // warps and one), and the pipeline's 64 weight rows (bf16: twice the blocks of its
        // default 128).
        for (const kjit::ops::MoeGemm::Config other : {kjit::ops::MoeGemm::Config{64, 2, 1},
                                                       {64, 4, 1},
                                                       {64, 6, 1},
                                                       {64, 2, 2},
                                                       {64, 4, 2},
                                                       {64, 6, 0}}) {
          if (same(other, chosen) ||
              !w.valid(other, layouts[0].x_view(p.k), layouts[0].blocks_view(), kDecodeBlock, vy)) {
            continue;
          }
          const double other_ms = time_calls([&](int c) {
            w.run_with(other, layouts[c].x_view(p.k), layouts[c].blocks_view(), kDecodeBlock, vy,
                       layouts[c].epilogue, s);
          });
          print_row(p.name, formats[f], kExperts, pairs, p.n, p.k, other_ms,
                    touched * w.expert_bytes() / other_ms / 1e6, other, copy_gbs);
        }
      }
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kjit_bench_moe_gemm: %s\n", e.what());
  return 1;
}

// Attention forward throughput, FlashAttention's convention: batch x seqlen = 16k tokens,
// heads x head dim = 2048, FLOPs = 4 B H S^2 D (halved when causal); plus GQA 32/8 and a varlen
// batch. Median of timed runs with CUDA events; TFLOP/s. bf16, or fp16 with --fp16 (the
// --sweep of tile configs: bf16). Run beside
// bench/attention_torch.py (torch SDPA flash and cuDNN) in the same device call.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench/attention_timing.hpp"
#include "kjit/attention.hpp"
#include "kjit/jit.hpp"
#include "ops/attention/flash_forward.hpp"

namespace {

void row(const char* name, long long b, long long s, long long hq, long long hk, long long d,
         bool causal, kjit::DType dtype, kjit::Stream& stream) {
  auto q = kjit::bench::random_values(b * s * hq * d, dtype),
       k = kjit::bench::random_values(b * s * hk * d, dtype),
       v = kjit::bench::random_values(b * s * hk * d, dtype);
  kjit::DeviceBuffer out(b * s * hq * d * 2), lse(b * hq * s * 4);
  kjit::attention::ForwardOptions o;
  o.causal = causal;
  const double ms = kjit::bench::median_ms(
      [&] {
        kjit::attention::forward(kjit::TensorView(q.data(), dtype, {b, s, hq, d}),
                                 kjit::TensorView(k.data(), dtype, {b, s, hk, d}),
                                 kjit::TensorView(v.data(), dtype, {b, s, hk, d}),
                                 kjit::TensorView(out.data(), dtype, {b, s, hq, d}),
                                 kjit::TensorView(lse.data(), kjit::DType::Float32, {b, hq, s}), o,
                                 stream.handle());
      },
      stream.handle());
  const double flops = 4.0 * b * hq * s * s * d / (causal ? 2 : 1);
  std::printf("%-28s %3lld %6lld %4lld/%-3lld %4lld %-7s %9.3f %8.1f\n", name, b, s, hq, hk, d,
              causal ? "causal" : "full", ms, flops / ms / 1e9);
}

void varlen_row(kjit::DType dtype, kjit::Stream& stream) {
  // 16 sequences of 256..1792 tokens (step 96 in a fixed shuffle), hd 128, 16 heads, causal.
  std::vector<int> lens;
  for (int i = 0; i < 16; ++i)
    lens.push_back(256 + ((i * 7) % 16) * 96);
  std::vector<int> cu{0};
  for (int l : lens)
    cu.push_back(cu.back() + l);
  const long long t = cu.back(), h = 16, d = 128;
  auto q = kjit::bench::random_values(t * h * d, dtype),
       k = kjit::bench::random_values(t * h * d, dtype),
       v = kjit::bench::random_values(t * h * d, dtype);
  kjit::DeviceBuffer out(t * h * d * 2), lse(h * t * 4), dcu(cu.size() * 4);
  dcu.upload(cu.data(), dcu.size());
  kjit::attention::ForwardOptions o;
  o.causal = true;
  const kjit::attention::Varlen s{kjit::TensorView(dcu.data(), kjit::DType::Int32, {17}),
                                  kjit::TensorView(dcu.data(), kjit::DType::Int32, {17}), cu.data(),
                                  cu.data()};
  const double ms = kjit::bench::median_ms(
      [&] {
        kjit::attention::forward_varlen(kjit::TensorView(q.data(), dtype, {t, h, d}),
                                        kjit::TensorView(k.data(), dtype, {t, h, d}),
                                        kjit::TensorView(v.data(), dtype, {t, h, d}),
                                        kjit::TensorView(out.data(), dtype, {t, h, d}),
                                        kjit::TensorView(lse.data(), kjit::DType::Float32, {h, t}),
                                        s, o, stream.handle());
      },
      stream.handle());
  double flops = 0;
  for (int l : lens)
    flops += 4.0 * h * l * l * d / 2;
  std::printf("%-28s %3d %6lld %4lld/%-3lld %4lld %-7s %9.3f %8.1f\n", "varlen 16 x 256..1792", 16,
              t, h, h, d, "causal", ms, flops / ms / 1e9);
}

// One row of the tile sweep: the fa-bench row S = s (16k tokens, 2048 / d heads, bf16) and the
// configs to time on it.
struct SweepRow {
  long long d;
  bool causal;
  std::vector<kjit::ops::FlashForward::Config> configs;
  long long s = 8192;

  kjit::ops::FlashForward::Problem problem() const {
    kjit::ops::FlashForward::Problem p;
    p.batch = 16384 / s;
    p.heads_q = p.heads_k = 2048 / d;
    p.head_dim = d;
    p.seqlen_q = p.seqlen_k = s;
    p.causal = causal;
    return p;
  }
};

// Compiles every valid config of the sweep at once, NVRTC on every core (the H100 machine's 16
// compiled the sweep's 94 kernels in 8.7 s); the timing loop then finds each in the store.
void precompile_sweep(const std::vector<SweepRow>& rows, const kjit::Arch& arch) {
  using kjit::ops::FlashForward;
  std::vector<kjit::KernelSpec> specs;
  for (const SweepRow& r : rows) {
    for (const auto& c : r.configs) {
      if (FlashForward::valid(c, r.problem(), arch))
        specs.push_back(FlashForward::spec(c, r.problem(), arch));
    }
  }
  const auto start = std::chrono::steady_clock::now();
  int failed = 0;
  for (const kjit::PrecompileResult& result : kjit::precompile(specs)) {
    if (!result.ok) {
      ++failed;
      std::fprintf(stderr, "sweep: %s does not compile: %s\n",
                   result.spec.name_expressions[0].c_str(), result.error.c_str());
    }
  }
  std::printf("sweep: %zu kernels compiled in %.1f s, %d failed\n", specs.size(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
              failed);
}

// Times a sweep row's configs directly (bypassing the op's default), and checks each against the
// first config's output.
void sweep(const SweepRow& r, const kjit::Arch& arch, kjit::Stream& stream) {
  using kjit::ops::FlashForward;
  const FlashForward::Problem p = r.problem();
  const long long b = p.batch, s = p.seqlen_q, h = p.heads_q, d = p.head_dim;
  const bool causal = r.causal;
  auto q = kjit::bench::random_bf16(b * s * h * d), k = kjit::bench::random_bf16(b * s * h * d),
       v = kjit::bench::random_bf16(b * s * h * d);
  kjit::DeviceBuffer out(b * s * h * d * 2), lse(b * h * s * 4);
  const auto bf = kjit::DType::BFloat16;
  kjit::attention::ForwardOptions o;
  o.causal = causal;
  const kjit::ops::Call<FlashForward> call = FlashForward::validate(
      kjit::TensorView(q.data(), bf, {b, s, h, d}), kjit::TensorView(k.data(), bf, {b, s, h, d}),
      kjit::TensorView(v.data(), bf, {b, s, h, d}), kjit::TensorView(out.data(), bf, {b, s, h, d}),
      kjit::TensorView(lse.data(), kjit::DType::Float32, {b, h, s}), o);
  std::vector<std::uint16_t> reference;
  for (const auto& c : r.configs) {
    if (!FlashForward::valid(c, call.problem, arch)) continue;
    const kjit::Program program = kjit::load(FlashForward::spec(c, call.problem, arch));
    const double ms = kjit::bench::median_ms(
        [&] { FlashForward::launch(program, c, call.problem, call.args, stream.handle()); },
        stream.handle());
    std::vector<std::uint16_t> result(out.size() / 2);
    stream.synchronize();
    out.download(result.data(), out.size());
    if (reference.empty()) reference = result;
    int mismatched = 0;
    for (std::size_t i = 0; i < result.size(); ++i) {
      float a, r;
      const std::uint32_t ab = static_cast<std::uint32_t>(result[i]) << 16,
                          rb = static_cast<std::uint32_t>(reference[i]) << 16;
      std::memcpy(&a, &ab, 4);
      std::memcpy(&r, &rb, 4);
      mismatched += std::abs(a - r) > 2e-2f * (1 + std::abs(r)) || a != a;
    }
    const double flops = 4.0 * b * h * s * s * d / (causal ? 2 : 1);
    std::printf(
        "sweep S=%lld d=%lld %-6s mainloop=%lld block_m=%3lld block_n=%3lld m_tiles=%lld: %8.3f ms "
        "%7.1f TFLOP/s  %s\n",
        s, d, causal ? "causal" : "full", static_cast<long long>(c.mainloop),
        static_cast<long long>(c.block_m), static_cast<long long>(c.block_n),
        static_cast<long long>(c.m_tiles), ms, flops / ms / 1e9,
        mismatched ? "MISMATCH vs first config" : "agrees");
  }
}

}  // namespace

int main(int argc, char** argv) try {
  if (kjit::bench::no_gpu("attention_forward")) return 0;
  kjit::Stream stream;
  const std::string mode = argc > 1 ? argv[1] : "";
  const auto dtype = mode == "--fp16" ? kjit::DType::Float16 : kjit::DType::BFloat16;
  std::printf("%s, kjit %s, %s forward\n", kjit::device_info(kjit::current_device()).name.c_str(),
              kjit::version().c_str(), dtype == kjit::DType::Float16 ? "fp16" : "bf16");
  std::printf("%-28s %3s %6s %8s %4s %-7s %9s %8s\n", "row", "B", "S", "Hq/Hk", "D", "mask", "ms",
              "TFLOP/s");
  if (mode == "--sweep") {
    // The mma.sync default first (the reference the others must agree with), then wgmma tiles,
    // then the warp-specialised loop's (91), the same with the intra-warpgroup overlap (92) and
    // that over persistent blocks (93), FA3's key tiles among them.
    using C = kjit::ops::FlashForward::Config;
    auto mma = [](long long m, long long n, long long t) { return C{80, m, n, t}; };
    auto wgmma = [](long long m, long long n) { return C{90, m, n, 1}; };
    auto ws = [](long long m, long long n) { return C{91, m, n, 1}; };
    auto overlap = [](long long m, long long n) { return C{92, m, n, 1}; };
    auto persistent = [](long long m, long long n) { return C{93, m, n, 1}; };
    std::vector<SweepRow> rows;
    for (bool causal : {false, true}) {
      rows.push_back(
          {64,
           causal,
           {mma(128, 64, 2), wgmma(128, 128), wgmma(192, 128), ws(192, 128), ws(128, 128),
            ws(192, 64), overlap(192, 128), overlap(192, 112), overlap(192, 80), overlap(128, 176),
            persistent(192, 128), persistent(192, 112), persistent(128, 176)}});
      rows.push_back(
          {128,
           causal,
           {mma(128, 64, 1), wgmma(128, 128), ws(128, 128), ws(128, 176), overlap(128, 128),
            overlap(128, 176), overlap(128, 112), persistent(128, 128), persistent(128, 176)}});
      rows.push_back(
          {192,
           causal,
           {mma(64, 32, 1), wgmma(128, 64), ws(128, 64), ws(128, 112), overlap(128, 64),
            overlap(128, 112), overlap(128, 80), persistent(128, 64), persistent(128, 112)}});
      rows.push_back({256,
                      causal,
                      {mma(64, 32, 1), wgmma(128, 64), ws(128, 64), ws(128, 80), overlap(128, 64),
                       overlap(128, 80), persistent(128, 64), persistent(128, 80)}});
    }
    // Short sequences (S 2k, 8 of them), where a block's start and end weigh most: what the
    // persistent blocks are for.
    for (bool causal : {false, true}) {
      rows.push_back({64, causal, {ws(192, 128), overlap(192, 128), persistent(192, 128)}, 2048});
      rows.push_back({128, causal, {ws(128, 128), overlap(128, 128), persistent(128, 128)}, 2048});
      rows.push_back({256, causal, {ws(128, 64), overlap(128, 64), persistent(128, 64)}, 2048});
    }
    const kjit::Arch arch(kjit::device_info(kjit::current_device()).arch());
    precompile_sweep(rows, arch);
    for (const SweepRow& r : rows)
      sweep(r, arch, stream);
    return 0;
  }
  for (long long d : {64, 128, 256}) {
    for (long long s : {2048, 8192, 16384}) {
      for (bool causal : {false, true}) {
        row("fa-bench", 16384 / s, s, 2048 / d, 2048 / d, d, causal, dtype, stream);
      }
    }
  }
  row("gqa 32/8", 2, 8192, 32, 8, 128, true, dtype, stream);
  varlen_row(dtype, stream);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "attention_forward: %s\n", e.what());
  return 1;
}

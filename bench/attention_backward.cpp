// Attention backward throughput, FlashAttention's convention: batch x seqlen = 16k tokens, heads x
// head dim = 2048, backward FLOPs = 2.5 x the forward's 4 B H S^2 D (halved when causal); plus GQA
// 32/8 and a varlen batch. Columns: the backward (default, dq by atomics), the deterministic
// backward, and forward + backward (3.5 x). Median of CUDA-event-timed runs. Run beside
// `bench/attention_torch.py --backward` (torch SDPA flash = FA2, and cuDNN) in the same device
// call. `--sweep` times every config of the family's space that runs here on the fa-bench rows
// (the main loop, tiles, stages, dq strategy), bypassing the tuning database.
#include <cstdio>
#include <string>
#include <vector>

#include "bench/attention_timing.hpp"
#include "kjit/attention.hpp"
#include "kjit/jit.hpp"
#include "ops/attention/flash_backward.hpp"

namespace {

using kjit::TensorView;
using kjit::bench::median_ms;
using kjit::bench::random_bf16;

struct Shape {
  const char* name;
  long long b, s, hq, hk, d;
  bool causal;
  std::vector<int> cu;  // packed sequences when not empty (b = their count)
};

void row(const Shape& r, kjit::Stream& stream) {
  const bool varlen = !r.cu.empty();
  const long long tq = varlen ? r.cu.back() : r.b * r.s;
  const auto bf = kjit::DType::BFloat16;
  auto q = random_bf16(tq * r.hq * r.d), k = random_bf16(tq * r.hk * r.d),
       v = random_bf16(tq * r.hk * r.d), dout = random_bf16(tq * r.hq * r.d);
  kjit::DeviceBuffer out(tq * r.hq * r.d * 2), lse(r.hq * tq * 4), dq(out.size()), dk(k.size()),
      dv(v.size()), cu(r.cu.size() * 4);
  if (varlen) cu.upload(r.cu.data(), cu.size());
  auto t = [&](const kjit::DeviceBuffer& buf, long long h) {
    return varlen ? TensorView(buf.data(), bf, {tq, h, r.d})
                  : TensorView(buf.data(), bf, {r.b, r.s, h, r.d});
  };
  const TensorView vlse = varlen ? TensorView(lse.data(), kjit::DType::Float32, {r.hq, tq})
                                 : TensorView(lse.data(), kjit::DType::Float32, {r.b, r.hq, r.s});
  const int n = static_cast<int>(r.cu.size());
  const kjit::attention::Varlen seqlens{TensorView(cu.data(), kjit::DType::Int32, {n}),
                                        TensorView(cu.data(), kjit::DType::Int32, {n}), r.cu.data(),
                                        r.cu.data()};
  kjit::attention::ForwardOptions fo;
  fo.causal = r.causal;
  auto forward = [&] {
    if (varlen) {
      kjit::attention::forward_varlen(t(q, r.hq), t(k, r.hk), t(v, r.hk), t(out, r.hq), vlse,
                                      seqlens, fo, stream.handle());
    } else {
      kjit::attention::forward(t(q, r.hq), t(k, r.hk), t(v, r.hk), t(out, r.hq), vlse, fo,
                               stream.handle());
    }
  };
  auto backward = [&](bool deterministic) {
    kjit::attention::BackwardOptions o;
    o.causal = r.causal;
    o.deterministic = deterministic;
    if (varlen) {
      kjit::attention::backward_varlen(t(q, r.hq), t(k, r.hk), t(v, r.hk), t(out, r.hq),
                                       t(dout, r.hq), vlse, t(dq, r.hq), t(dk, r.hk), t(dv, r.hk),
                                       seqlens, o, stream.handle());
    } else {
      kjit::attention::backward(t(q, r.hq), t(k, r.hk), t(v, r.hk), t(out, r.hq), t(dout, r.hq),
                                vlse, t(dq, r.hq), t(dk, r.hk), t(dv, r.hk), o, stream.handle());
    }
  };
  forward();
  const double bwd = median_ms([&] { backward(false); }, stream.handle());
  const double det = median_ms([&] { backward(true); }, stream.handle());
  const double both = median_ms(
      [&] {
        forward();
        backward(false);
      },
      stream.handle());
  double flops = 0;  // the forward's
  if (varlen) {
    for (std::size_t i = 1; i < r.cu.size(); ++i) {
      const double l = r.cu[i] - r.cu[i - 1];
      flops += 4.0 * r.hq * l * l * r.d / (r.causal ? 2 : 1);
    }
  } else {
    flops = 4.0 * r.b * r.hq * r.s * r.s * r.d / (r.causal ? 2 : 1);
  }
  std::printf("%-24s %3lld %6lld %4lld/%-3lld %4lld %-7s %8.3f %8.1f %8.1f %8.1f\n", r.name,
              varlen ? static_cast<long long>(n - 1) : r.b, varlen ? tq : r.s, r.hq, r.hk, r.d,
              r.causal ? "causal" : "full", bwd, 2.5 * flops / bwd / 1e9, 2.5 * flops / det / 1e9,
              3.5 * flops / both / 1e9);
}

// Every config of the space on one batched row, through the family.
void sweep(const Shape& r, kjit::Stream& stream) {
  using kjit::ops::FlashBackward;
  const auto bf = kjit::DType::BFloat16;
  const long long tq = r.b * r.s;
  auto q = random_bf16(tq * r.hq * r.d), k = random_bf16(tq * r.hk * r.d),
       v = random_bf16(tq * r.hk * r.d), dout = random_bf16(tq * r.hq * r.d);
  kjit::DeviceBuffer out(tq * r.hq * r.d * 2), lse(r.hq * tq * 4), dq(out.size()), dk(k.size()),
      dv(v.size());
  auto t = [&](const kjit::DeviceBuffer& buf, long long h) {
    return TensorView(buf.data(), bf, {r.b, r.s, h, r.d});
  };
  const TensorView vlse(lse.data(), kjit::DType::Float32, {r.b, r.hq, r.s});
  kjit::attention::ForwardOptions fo;
  fo.causal = r.causal;
  kjit::attention::forward(t(q, r.hq), t(k, r.hk), t(v, r.hk), t(out, r.hq), vlse, fo,
                           stream.handle());
  kjit::attention::BackwardOptions o;
  o.causal = r.causal;
  kjit::ops::Call<FlashBackward> call =
      FlashBackward::validate(t(q, r.hq), t(k, r.hk), t(v, r.hk), t(out, r.hq), t(dout, r.hq), vlse,
                              t(dq, r.hq), t(dk, r.hk), t(dv, r.hk), o);
  kjit::DeviceBuffer workspace(FlashBackward::workspace_bytes(tq, r.hq, r.d, false));
  FlashBackward::attach_workspace(call.args, workspace.data(), tq, r.d, false);
  const double flops = 2.5 * 4.0 * r.b * r.hq * r.s * r.s * r.d / (r.causal ? 2 : 1);
  const kjit::Arch& arch = kjit::arch::current();
  for (const FlashBackward::Config& c : FlashBackward::space(call.problem, arch)) {
    if (!FlashBackward::valid(c, call.problem, arch)) continue;
    const kjit::Program program = kjit::load(FlashBackward::spec(c, call.problem, arch));
    const double ms = median_ms(
        [&] { FlashBackward::launch(program, c, call.problem, call.args, stream.handle()); },
        stream.handle());
    std::printf(
        "sweep d=%lld S=%5lld %-6s mainloop=%lld block_m=%3lld block_n=%3lld dq_atomic=%lld "
        "stages=%lld: %8.3f ms %7.1f TFLOP/s\n",
        r.d, r.s, r.causal ? "causal" : "full", static_cast<long long>(c.mainloop),
        static_cast<long long>(c.block_m), static_cast<long long>(c.block_n),
        static_cast<long long>(c.dq_atomic), static_cast<long long>(c.stages), ms,
        flops / ms / 1e9);
  }
}

}  // namespace

int main(int argc, char** argv) try {
  std::string reason;
  if (!kjit::driver_available(&reason)) {
    std::printf("attention_backward needs a CUDA GPU: %s\n", reason.c_str());
    return 0;
  }
  kjit::Stream stream;
  std::printf("%s, kjit %s, bf16 backward, TFLOP/s\n",
              kjit::device_info(kjit::current_device()).name.c_str(), kjit::version().c_str());
  std::printf("%-24s %3s %6s %8s %4s %-7s %8s %8s %8s %8s\n", "row", "B", "S", "Hq/Hk", "D", "mask",
              "bwd ms", "bwd", "bwd det", "fwd+bwd");
  const bool sweeping = argc > 1 && std::string(argv[1]) == "--sweep";
  for (long long d : {64, 128, 256}) {
    for (long long s : {2048, 8192, 16384}) {
      for (bool causal : {false, true}) {
        const Shape shape{"fa-bench-bwd", 16384 / s, s, 2048 / d, 2048 / d, d, causal, {}};
        if (!sweeping) {
          row(shape, stream);
        } else if (s != 16384) {  // 16k behaves as 8k
          sweep(shape, stream);
        }
      }
    }
  }
  if (sweeping) return 0;
  row({"gqa 32/8", 2, 8192, 32, 8, 128, true, {}}, stream);
  std::vector<int> cu{0};  // 16 sequences of 256..1792 tokens, as the forward bench
  for (int i = 0; i < 16; ++i)
    cu.push_back(cu.back() + 256 + ((i * 7) % 16) * 96);
  row({"varlen 16 x 256..1792", 16, 0, 16, 16, 128, true, cu}, stream);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "attention_backward: %s\n", e.what());
  return 1;
}

// Attention backward throughput, FlashAttention's convention: batch x seqlen = 16k tokens, heads x
// head dim = 2048, backward FLOPs = 2.5 x the forward's 4 B H S^2 D (halved when causal); plus GQA
// 32/8 (B 1 and 2 at 8k tokens) and a varlen batch. Columns: the backward (default, dq by atomics),
// the deterministic backward, and forward + backward (3.5 x). Median of CUDA-event-timed runs. Run
// beside `bench/attention_torch.py --backward` (torch SDPA flash = FA2, and cuDNN) in the same
// device call. `--sweep` times every config of the family's space that runs here on the fa-bench
// rows (the main loop, tiles, stages, dq strategy), bypassing the tuning database.
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

// A row's tensors (standard-normal inputs, batched or packed), with out and lse from one
// forward run.
struct RowTensors {
  const Shape& r;
  const bool varlen;
  const long long tq;  // query (and key) tokens
  kjit::DeviceBuffer q, k, v, dout, out, lse, dq, dk, dv, cu;
  kjit::attention::Varlen seqlens;

  RowTensors(const Shape& shape, kjit::Stream& stream)
      : r(shape),
        varlen(!shape.cu.empty()),
        tq(varlen ? shape.cu.back() : shape.b * shape.s),
        q(random_bf16(tq * r.hq * r.d)),
        k(random_bf16(tq * r.hk * r.d)),
        v(random_bf16(tq * r.hk * r.d)),
        dout(random_bf16(tq * r.hq * r.d)),
        out(tq * r.hq * r.d * 2),
        lse(r.hq * tq * 4),
        dq(out.size()),
        dk(k.size()),
        dv(v.size()),
        cu(r.cu.size() * 4) {
    if (varlen) cu.upload(r.cu.data(), cu.size());
    const int n = static_cast<int>(r.cu.size());
    seqlens = {TensorView(cu.data(), kjit::DType::Int32, {n}),
               TensorView(cu.data(), kjit::DType::Int32, {n}), r.cu.data(), r.cu.data()};
    forward(stream);
  }
  TensorView t(const kjit::DeviceBuffer& buf, long long heads) const {
    const auto bf = kjit::DType::BFloat16;
    return varlen ? TensorView(buf.data(), bf, {tq, heads, r.d})
                  : TensorView(buf.data(), bf, {r.b, r.s, heads, r.d});
  }
  TensorView lse_view() const {
    return varlen ? TensorView(lse.data(), kjit::DType::Float32, {r.hq, tq})
                  : TensorView(lse.data(), kjit::DType::Float32, {r.b, r.hq, r.s});
  }
  void forward(kjit::Stream& stream) const {
    kjit::attention::ForwardOptions fo;
    fo.causal = r.causal;
    if (varlen) {
      kjit::attention::forward_varlen(t(q, r.hq), t(k, r.hk), t(v, r.hk), t(out, r.hq), lse_view(),
                                      seqlens, fo, stream.handle());
    } else {
      kjit::attention::forward(t(q, r.hq), t(k, r.hk), t(v, r.hk), t(out, r.hq), lse_view(), fo,
                               stream.handle());
    }
  }
  kjit::attention::BackwardOptions options(bool deterministic) const {
    kjit::attention::BackwardOptions o;
    o.causal = r.causal;
    o.deterministic = deterministic;
    return o;
  }
  void backward(bool deterministic, kjit::Stream& stream) const {
    if (varlen) {
      kjit::attention::backward_varlen(
          t(q, r.hq), t(k, r.hk), t(v, r.hk), t(out, r.hq), t(dout, r.hq), lse_view(), t(dq, r.hq),
          t(dk, r.hk), t(dv, r.hk), seqlens, options(deterministic), stream.handle());
    } else {
      kjit::attention::backward(t(q, r.hq), t(k, r.hk), t(v, r.hk), t(out, r.hq), t(dout, r.hq),
                                lse_view(), t(dq, r.hq), t(dk, r.hk), t(dv, r.hk),
                                options(deterministic), stream.handle());
    }
  }
  // The forward's FLOPs.
  double flops() const {
    if (!varlen) return 4.0 * r.b * r.hq * r.s * r.s * r.d / (r.causal ? 2 : 1);
    double sum = 0;
    for (std::size_t i = 1; i < r.cu.size(); ++i) {
      const double l = r.cu[i] - r.cu[i - 1];
      sum += 4.0 * r.hq * l * l * r.d / (r.causal ? 2 : 1);
    }
    return sum;
  }
};

void row(const Shape& r, kjit::Stream& stream) {
  const RowTensors x(r, stream);
  const double bwd = median_ms([&] { x.backward(false, stream); }, stream.handle());
  const double det = median_ms([&] { x.backward(true, stream); }, stream.handle());
  const double both = median_ms(
      [&] {
        x.forward(stream);
        x.backward(false, stream);
      },
      stream.handle());
  const double flops = x.flops();
  std::printf("%-24s %3lld %6lld %4lld/%-3lld %4lld %-7s %8.3f %8.1f %8.1f %8.1f\n", r.name,
              x.varlen ? static_cast<long long>(r.cu.size() - 1) : r.b, x.varlen ? x.tq : r.s, r.hq,
              r.hk, r.d, r.causal ? "causal" : "full", bwd, 2.5 * flops / bwd / 1e9,
              2.5 * flops / det / 1e9, 3.5 * flops / both / 1e9);
}

// Every config of the space on one batched row, through the family.
void sweep(const Shape& r, kjit::Stream& stream) {
  using kjit::ops::FlashBackward;
  const RowTensors x(r, stream);
  kjit::ops::Call<FlashBackward> call = FlashBackward::validate(
      x.t(x.q, r.hq), x.t(x.k, r.hk), x.t(x.v, r.hk), x.t(x.out, r.hq), x.t(x.dout, r.hq),
      x.lse_view(), x.t(x.dq, r.hq), x.t(x.dk, r.hk), x.t(x.dv, r.hk), x.options(false));
  kjit::DeviceBuffer workspace(FlashBackward::workspace_bytes(x.tq, r.hq, r.d, false));
  FlashBackward::attach_workspace(call.args, workspace.data(), x.tq, r.d, false);
  const double flops = 2.5 * x.flops();
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
  if (kjit::bench::no_gpu("attention_backward")) return 0;
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
  // Llama 3 8B's attention at 8k tokens: one sequence (a grid of 4 waves on an H100), then two.
  row({"gqa 32/8", 1, 8192, 32, 8, 128, true, {}}, stream);
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

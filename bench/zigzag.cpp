// Zigzag context parallelism on one GPU, W = 8 simulated ranks at Llama-3-8B shapes (Hq 32, Hk 8,
// hd 128, bf16, causal, 8k tokens per rank: the fork's cu_seqlens sets x W).
//
// 1. The component kernels against the bytes they move: extract_zigzag_kv_slice (rank 0's
//    causal prefix: every chunk, the largest extract; and the early chunks [0, W)) and
//    scatter_grad_to_zigzag (every rank's slots from the full gradient), K [T, 8, 128]: GB/s
//    (bytes read + written) beside the device copy's and beside the plain implementation of
//    the same result, one cuMemcpyAsync per contiguous chunk run.
// 2. Per rank r: zigzag_forward and zigzag_forward + zigzag_backward over a communicator that
//    stands in for the 8 ranks with local copies (the all-gather writes this rank's K/V into
//    every slot, the bytes a real one writes; the reduce-scatter copies the rank's slice), so the
//    figures are one rank's GPU work plus a local copy of the gathered bytes, not the network.
//    Load balance: max / mean over ranks. Beside it, the rank's attention alone as the grouped
//    call the op makes (both chunks over the shared keys) and as the fork's two separate
//    forward_varlen calls, each over its own prefix.
//
// Flags: --csv FILE (part 2's table as CSV).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "bench/attention_timing.hpp"
#include "kjit/attention.hpp"
#include "kjit/comm.hpp"
#include "kjit/zigzag.hpp"

namespace {

using kjit::DeviceBuffer;
using kjit::DType;
using kjit::StreamHandle;
using kjit::TensorView;
using kjit::bench::median_ms;
using kjit::bench::random_bf16;
namespace comm = kjit::comm;
namespace cp = kjit::cp;

constexpr int kWorld = 8, kHq = 32, kHk = 8, kD = 128;
constexpr DType kBf16 = DType::BFloat16;

// The fork's benchmark sets (8192 tokens), times W: 8k tokens per rank.
const std::vector<std::vector<int>> kSets = {
    {8192}, {256, 7392, 544}, {4096, 4096}, {3104, 3200, 1600, 160, 128}};

std::vector<int> cu_of(const std::vector<int>& set) {
  std::vector<int> cu{0};
  for (int l : set)
    cu.push_back(cu.back() + l * kWorld);
  return cu;
}

std::string set_name(const std::vector<int>& set) {
  std::string s;
  for (int l : set)
    s += (s.empty() ? "" : ",") + std::to_string(l);
  return "[" + s + "]x8";
}

// Rank `rank` of `size`, with collectives as local copies (the file comment).
class SimulatedRanks final : public comm::Communicator {
 public:
  SimulatedRanks(int rank, int size)
      : Communicator(rank, size, comm::Backend::Mpi, std::chrono::seconds(60), -1) {}

 private:
  void do_all_gather(comm::ConstBuffer send, comm::Buffer recv, StreamHandle s) override {
    for (int p = 0; p < size(); ++p) {
      char* slot = static_cast<char*>(recv.data) + p * send.bytes();
      if (slot != send.data) kjit::copy_async(slot, send.data, send.bytes(), s);
    }
  }
  void do_reduce_scatter(comm::ConstBuffer send, comm::Buffer recv, StreamHandle s) override {
    kjit::copy_async(recv.data, static_cast<const char*>(send.data) + rank() * recv.bytes(),
                     recv.bytes(), s);
  }
  [[noreturn]] static void unused() { throw kjit::Error("not simulated"); }
  void do_all_to_all_v(comm::ConstBuffer, const std::vector<std::size_t>&,
                       const std::vector<std::size_t>&, comm::Buffer,
                       const std::vector<std::size_t>&, const std::vector<std::size_t>&,
                       StreamHandle) override {
    unused();
  }
  void do_all_to_all(comm::ConstBuffer, comm::Buffer, StreamHandle) override { unused(); }
  void do_broadcast(comm::ConstBuffer, comm::Buffer, int, StreamHandle) override { unused(); }
  void do_send_recv(comm::ConstBuffer, int, comm::Buffer, int, StreamHandle) override { unused(); }
  void do_barrier(StreamHandle) override { unused(); }
};

struct Sequences {
  explicit Sequences(const std::vector<int>& set) : host(cu_of(set)), device(host.size() * 4) {
    device.upload(host.data(), device.size());
  }
  cp::ZigzagSequences seqs() const {
    return {TensorView(device.data(), DType::Int32, {static_cast<std::int64_t>(host.size())}),
            host.data()};
  }
  TensorView view() const { return seqs().cu_seqlens; }
  std::vector<int> host;
  DeviceBuffer device;
};

TensorView rows(const DeviceBuffer& b, std::int64_t n, std::int64_t heads) {
  return TensorView(b.data(), kBf16, {n, heads, kD});
}

// ---- 1. component kernels ----

void components(StreamHandle stream) {
  const double copy = kjit::bench::copy_gbs(stream);
  std::printf("device copy: %.0f GB/s (read + written)\n\n", copy);
  std::printf("%-28s %-26s %9s %9s %9s %9s\n", "sequences", "move", "MB", "us", "GB/s",
              "memcpys us");
  const std::int64_t row_bytes = kHk * kD * 2;
  for (const auto& set : kSets) {
    const Sequences s(set);
    const std::int64_t tokens = s.host.back();
    const DeviceBuffer gathered = random_bf16(static_cast<std::size_t>(tokens * kHk * kD));
    DeviceBuffer out(static_cast<std::size_t>(tokens * row_bytes));
    // The plain implementation: one copy per contiguous run (a chunk of a sequence).
    const auto chunk_copies = [&](int begin, int end, bool to_zigzag) {
      std::int64_t packed = 0;
      for (std::size_t b = 0; b + 1 < s.host.size(); ++b) {
        const std::int64_t n = (s.host[b + 1] - s.host[b]) / (2 * kWorld);
        for (int c = begin; c < end; ++c) {
          const int owner = c < kWorld ? c : 2 * kWorld - 1 - c;
          const std::int64_t in_slot = s.host[b] / kWorld + (c < kWorld ? 0 : n);
          char* zig = static_cast<char*>(gathered.data()) +
                      (owner * (tokens / kWorld) + in_slot) * row_bytes;
          char* flat = static_cast<char*>(out.data()) + packed * row_bytes;
          kjit::copy_async(to_zigzag ? zig : flat, to_zigzag ? flat : zig,
                           static_cast<std::size_t>(n * row_bytes), stream);
          packed += n;
        }
      }
    };
    struct Move {
      const char* name;
      int begin, end;
      bool scatter;
    };
    for (const Move& m : {Move{"extract [0, 2W)", 0, 2 * kWorld, false},
                          Move{"extract early [0, W)", 0, kWorld, false},
                          Move{"scatter [0, 2W) -> all", 0, 2 * kWorld, true}}) {
      const std::int64_t moved = (m.end - m.begin) * tokens / (2 * kWorld);
      const TensorView flat = rows(out, moved, kHk), zig = rows(gathered, tokens, kHk);
      const double us =
          1e3 * median_ms(
                    [&] {
                      if (m.scatter)
                        cp::scatter_grad_to_zigzag(flat, s.seqs(), kWorld, {m.begin, m.end},
                                                   cp::kEveryRank, zig, stream);
                      else
                        cp::extract_zigzag_kv_slice(zig, s.seqs(), kWorld, {m.begin, m.end}, flat,
                                                    stream);
                    },
                    stream);
      const double plain_us =
          1e3 * median_ms([&] { chunk_copies(m.begin, m.end, m.scatter); }, stream);
      // Bytes read and written; the scatter also writes every rank's other slots (zeros).
      const double bytes = static_cast<double>(row_bytes) *
                           (m.scatter ? static_cast<double>(moved + tokens) : 2.0 * moved);
      std::printf("%-28s %-26s %9.1f %9.1f %9.0f %9.1f\n", set_name(set).c_str(), m.name,
                  bytes / 1e6, us, bytes / us / 1e3, plain_us);
    }
  }
}

// ---- 2. per-rank attention ----

struct RankTimes {
  double fwd_ms, fwd_bwd_ms, grouped_ms, separate_ms, tflops;
};

RankTimes run_rank(const Sequences& s, int rank, StreamHandle stream) {
  const std::int64_t tokens = s.host.back(), local = tokens / kWorld;
  SimulatedRanks comm(rank, kWorld);
  const DeviceBuffer q = random_bf16(static_cast<std::size_t>(local * kHq * kD)),
                     k = random_bf16(static_cast<std::size_t>(local * kHk * kD)),
                     v = random_bf16(static_cast<std::size_t>(local * kHk * kD)),
                     dout = random_bf16(static_cast<std::size_t>(local * kHq * kD));
  DeviceBuffer out(q.size()), dq(q.size()), dk(k.size()), dv(k.size()),
      lse(static_cast<std::size_t>(local * kHq * 4));
  const TensorView lse_view(lse.data(), DType::Float32, {kHq, local});
  cp::ZigzagOptions options;
  const auto forward = [&] {
    cp::zigzag_forward(comm, rows(q, local, kHq), rows(k, local, kHk), rows(v, local, kHk),
                       rows(out, local, kHq), lse_view, s.seqs(), options, stream);
  };
  RankTimes t{};
  t.fwd_ms = median_ms(forward, stream);
  t.fwd_bwd_ms = median_ms(
      [&] {
        forward();
        cp::zigzag_backward(comm, rows(q, local, kHq), rows(k, local, kHk), rows(v, local, kHk),
                            rows(out, local, kHq), rows(dout, local, kHq), lse_view,
                            rows(dq, local, kHq), rows(dk, local, kHk), rows(dv, local, kHk),
                            s.seqs(), options, stream);
      },
      stream);

  // The attention alone: the rank's two chunks over keys [0, key_chunks) of every sequence, as
  // one grouped call and as two forward_varlen calls over their own prefixes.
  const int batch = static_cast<int>(s.host.size()) - 1, chunks[2] = {rank, 2 * kWorld - 1 - rank};
  std::vector<int> cu_q(batch + 1), cu_k[2], windows[2];
  for (int g = 0; g < 2; ++g)
    cu_k[g].resize(batch + 1);
  const int key_chunks = 2 * kWorld - rank;
  std::vector<int> cu_keys(batch + 1);
  double flops = 0;
  for (int b = 0; b <= batch; ++b) {
    cu_q[b] = s.host[b] / (2 * kWorld);
    cu_keys[b] = key_chunks * cu_q[b];
    for (int g = 0; g < 2; ++g)
      cu_k[g][b] = (chunks[g] + 1) * cu_q[b];
    if (b == batch) break;
    const double n = (s.host[b + 1] - s.host[b]) / (2.0 * kWorld);
    for (int g = 0; g < 2; ++g) {
      windows[g].push_back(0);
      windows[g].push_back((chunks[g] + 1) * static_cast<int>(n));
      flops += 4.0 * kHq * kD * n * n * (chunks[g] + 0.5);  // c full blocks and half the diagonal
    }
  }
  const auto upload = [](const std::vector<int>& x) {
    DeviceBuffer d(x.size() * 4);
    d.upload(x.data(), d.size());
    return d;
  };
  const DeviceBuffer d_cu_q = upload(cu_q), d_cu_keys = upload(cu_keys),
                     d_cu_k[2] = {upload(cu_k[0]), upload(cu_k[1])},
                     d_windows[2] = {upload(windows[0]), upload(windows[1])};
  const std::int64_t half = local / 2, key_rows = cu_keys.back();
  const DeviceBuffer keys_k = random_bf16(static_cast<std::size_t>(key_rows * kHk * kD)),
                     keys_v = random_bf16(static_cast<std::size_t>(key_rows * kHk * kD));
  const auto ints = [](const DeviceBuffer& d, std::vector<std::int64_t> shape) {
    return shape.size() == 1 ? TensorView(d.data(), DType::Int32, {shape[0]})
                             : TensorView(d.data(), DType::Int32, {shape[0], shape[1]});
  };
  kjit::attention::AttentionGroup groups[2];
  for (int g = 0; g < 2; ++g) {
    const std::int64_t at = g * half * kHq * kD * 2;
    groups[g].q = TensorView(static_cast<char*>(q.data()) + at, kBf16, {half, kHq, kD});
    groups[g].out = TensorView(static_cast<char*>(out.data()) + at, kBf16, {half, kHq, kD});
    groups[g].cu_seqlens_q = ints(d_cu_q, {batch + 1});
    groups[g].host_cu_seqlens_q = cu_q.data();
    groups[g].windows = ints(d_windows[g], {batch, 2});
    groups[g].host_windows = windows[g].data();
  }
  const kjit::attention::SharedKeys shared{rows(keys_k, key_rows, kHk), rows(keys_v, key_rows, kHk),
                                           ints(d_cu_keys, {batch + 1}), cu_keys.data()};
  kjit::attention::ForwardOptions fo;
  fo.causal = true;
  t.grouped_ms =
      median_ms([&] { kjit::attention::forward_grouped(groups, 2, shared, fo, stream); }, stream);
  t.separate_ms = median_ms(
      [&] {
        for (int g = 0; g < 2; ++g) {
          // The fork extracts each prefix on its own; its keys are the first cu_k rows here.
          kjit::attention::forward_varlen(groups[g].q, rows(keys_k, cu_k[g].back(), kHk),
                                          rows(keys_v, cu_k[g].back(), kHk), groups[g].out,
                                          TensorView(),
                                          {ints(d_cu_q, {batch + 1}), ints(d_cu_k[g], {batch + 1}),
                                           cu_q.data(), cu_k[g].data()},
                                          fo, stream);
        }
      },
      stream);
  t.tflops = flops / (t.grouped_ms * 1e9);
  return t;
}

void attention(StreamHandle stream, FILE* csv) {
  std::printf("\n%-28s %4s %9s %11s %10s %11s %9s %9s\n", "sequences", "rank", "fwd ms",
              "fwd+bwd ms", "grouped", "2 calls", "speedup", "TFLOP/s");
  if (csv) std::fprintf(csv, "set,rank,fwd_ms,fwd_bwd_ms,grouped_ms,separate_ms,tflops\n");
  for (const auto& set : kSets) {
    const Sequences s(set);
    std::vector<RankTimes> all;
    for (int r = 0; r < kWorld; ++r) {
      const RankTimes t = run_rank(s, r, stream);
      all.push_back(t);
      std::printf("%-28s %4d %9.3f %11.3f %10.3f %11.3f %8.2fx %9.0f\n", set_name(set).c_str(), r,
                  t.fwd_ms, t.fwd_bwd_ms, t.grouped_ms, t.separate_ms, t.separate_ms / t.grouped_ms,
                  t.tflops);
      if (csv) {
        std::fprintf(csv, "\"%s\",%d,%.4f,%.4f,%.4f,%.4f,%.1f\n", set_name(set).c_str(), r,
                     t.fwd_ms, t.fwd_bwd_ms, t.grouped_ms, t.separate_ms, t.tflops);
      }
    }
    const auto balance = [&](double RankTimes::*field) {
      double max = 0, sum = 0;
      for (const RankTimes& t : all) {
        max = std::max(max, t.*field);
        sum += t.*field;
      }
      return max / (sum / all.size());
    };
    std::printf("%-28s load balance (max / mean): fwd %.3f, fwd+bwd %.3f, grouped %.3f\n",
                set_name(set).c_str(), balance(&RankTimes::fwd_ms), balance(&RankTimes::fwd_bwd_ms),
                balance(&RankTimes::grouped_ms));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (kjit::bench::no_gpu("the zigzag benchmark")) return 0;
  FILE* csv = nullptr;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--csv") csv = std::fopen(argv[i + 1], "w");
  }
  kjit::Stream stream;
  std::printf("zigzag context parallelism, W = %d simulated ranks, Hq %d, Hk %d, hd %d, bf16\n\n",
              kWorld, kHq, kHk, kD);
  components(stream.handle());
  attention(stream.handle(), csv);
  if (csv) std::fclose(csv);
  return 0;
}

// Grouped attention against the same work as separate calls, on zigzag-llama3 shapes: one GPU,
// bf16, causal, B = 1, one sequence of S tokens. Zigzag context parallelism cuts the sequence into
// 2W chunks of c = S / 2W tokens; rank r holds chunks r and 2W - 1 - r, and after the K/V
// all-gather it attends group 0 = chunk r over the keys [0, (r + 1) c) and group 1 = chunk
// 2W - 1 - r over [0, (2W - r) c): one grouped call with 2 groups. Rows: W in {2, 4, 8} and every
// rank; plus 4-group rows (G = 4): the same zigzag with 4 chunks per rank, i.e. W = 2 over 4W = 8
// chunks of c = S / 8, rank r holding chunks r, 2W - 1 - r, 2W + r, 4W - 1 - r (= r, 3 - r, 4 + r,
// 7 - r), each over [0, (chunk + 1) c), for both ranks. Models: Llama3-8B (Hq 32, Hk 8, hd 128) at
// S = 8k, 16k, 32k, 64k; Llama3-70B (Hq 64, Hk 8, hd 128) at 8k, 16k.
//
// Per row: forward_grouped vs one forward_varlen per group over a K/V view of its window prefix
// (the first L rows of K and V), and backward_grouped vs one backward_varlen per group, each
// writing its own dk_g, dv_g: the separate baseline leaves out summing those into one dk, dv,
// which favours it. Median of CUDA-event-timed runs (bench/attention_timing.hpp), the caller's
// workspace for both backwards. Also the K/V bytes of one pass over the union of the windows
// (union length x Hk x D x 2 bytes x 2 tensors) and over the separate calls' windows (the sum of
// their lengths), to set beside ncu's dram__bytes_read.sum, and the forward's TFLOP/s both ways
// (causal, bottom-right aligned: query i of a chunk of c over a window of L sees L - c + i + 1
// keys; 4 D FLOPs a query head and key), to set beside the plain forward's (docs/perf.md).
//
// Flags: --csv FILE (the table as CSV), --fwd-only, --only KEY=VALUE (repeatable; KEY one of
// model, S, W, r, G; a row runs when it matches one value of every KEY given; model matches a
// substring, e.g. --only model=70b --only S=8192).
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "bench/attention_timing.hpp"
#include "kjit/attention.hpp"
#include "kjit/jit.hpp"

namespace {

using kjit::DeviceBuffer;
using kjit::TensorView;
using kjit::attention::AttentionGroup;
using kjit::bench::median_ms;
using kjit::bench::random_bf16;

constexpr kjit::DType kBf16 = kjit::DType::BFloat16;

struct Model {
  const char* name;
  long long hq, hk, d;
  std::vector<long long> seqlens;
};

// One rank's chunks of the sequence.
struct Layout {
  int w, r, n_chunks;
  std::vector<int> chunks;
};

std::vector<Layout> layouts() {
  std::vector<Layout> out;
  for (int w : {2, 4, 8}) {
    for (int r = 0; r < w; ++r)
      out.push_back({w, r, 2 * w, {r, 2 * w - 1 - r}});
  }
  for (int r : {0, 1})
    out.push_back({2, r, 8, {r, 3 - r, 4 + r, 7 - r}});
  return out;
}

struct Filter {
  std::map<std::string, std::vector<std::string>> only;
  bool accepts(const std::string& key, const std::string& value, bool substring = false) const {
    const auto it = only.find(key);
    if (it == only.end()) return true;
    for (const std::string& v : it->second) {
      if (substring ? value.find(v) != std::string::npos : value == v) return true;
    }
    return false;
  }
  bool accepts(const Model& m, long long s, const Layout& l) const {
    return accepts("model", m.name, true) && accepts("S", std::to_string(s)) &&
           accepts("W", std::to_string(l.w)) && accepts("r", std::to_string(l.r)) &&
           accepts("G", std::to_string(l.chunks.size()));
  }
};

// One (model, S)'s device tensors, every row's views into them: K, V [S, Hk, D]; the rank's
// queries (at most S / 2 tokens) and their out, dout, dq, lse back to back; one dk, dv; the
// separate backward's dk_g, dv_g back to back (at most 2.25 S rows).
struct Pools {
  long long s, hq, hk, d;
  DeviceBuffer k, v, q, out, lse, dout, dq, dk, dv, dk_parts, dv_parts;

  Pools(const Model& m, long long seqlen, bool backward)
      : s(seqlen),
        hq(m.hq),
        hk(m.hk),
        d(m.d),
        k(random_bf16(s * hk * d)),
        v(random_bf16(s * hk * d)),
        q(random_bf16(s / 2 * hq * d)),
        out(s / 2 * hq * d * 2),
        lse(s / 2 * hq * 4) {
    if (!backward) return;
    dout = random_bf16(s / 2 * hq * d);
    dq = DeviceBuffer(out.size());
    dk = DeviceBuffer(k.size());
    dv = DeviceBuffer(k.size());
    dk_parts = DeviceBuffer(s * 9 / 4 * hk * d * 2);
    dv_parts = DeviceBuffer(dk_parts.size());
  }
};

void* offset(const DeviceBuffer& b, long long bytes) {
  return static_cast<char*>(b.data()) + bytes;
}

DeviceBuffer device_ints(const std::vector<std::int32_t>& host) {
  DeviceBuffer b(host.size() * 4);
  b.upload(host.data(), b.size());
  return b;
}

struct Result {
  std::string model;
  long long s;
  int w, r, g;
  double fwd_grouped = 0, fwd_separate = 0, bwd_grouped = 0, bwd_separate = 0;
  double kv_union_mb = 0, kv_separate_mb = 0;
  double fwd_flop = 0;
  double tflops(double ms) const { return fwd_flop / ms / 1e9; }
};

Result run_row(const Model& m, Pools& p, const Layout& l, bool fwd_only, kjit::Stream& stream) {
  const long long c = p.s / l.n_chunks, hq = p.hq, hk = p.hk, d = p.d;
  const int groups = static_cast<int>(l.chunks.size());
  // Host copies (they must outlive the calls) and their device tensors.
  const std::vector<std::int32_t> cu_q{0, static_cast<std::int32_t>(c)},
      cu_keys{0, static_cast<std::int32_t>(p.s)};
  std::vector<std::array<std::int32_t, 2>> windows, cu_window;
  for (int chunk : l.chunks) {
    const auto end = static_cast<std::int32_t>((chunk + 1) * c);
    windows.push_back({0, end});
    cu_window.push_back({0, end});
  }
  const DeviceBuffer cu_q_d = device_ints(cu_q), cu_keys_d = device_ints(cu_keys);
  std::vector<DeviceBuffer> windows_d, cu_window_d;
  for (int g = 0; g < groups; ++g) {
    windows_d.push_back(device_ints({windows[g][0], windows[g][1]}));
    cu_window_d.push_back(device_ints({cu_window[g][0], cu_window[g][1]}));
  }
  const TensorView cu_q_view(cu_q_d.data(), kjit::DType::Int32, {2});
  const auto q_rows = [&](const DeviceBuffer& pool, int g) {
    return TensorView(offset(pool, g * c * hq * d * 2), kBf16, {c, hq, d});
  };
  const auto prefix = [&](const DeviceBuffer& b, long long len) {
    return TensorView(b.data(), kBf16, {len, hk, d});
  };
  std::vector<AttentionGroup> api(groups);
  long long union_len = 0, separate_len = 0;
  double keys_seen = 0;  // over the groups' query rows, one head
  for (int g = 0; g < groups; ++g) {
    AttentionGroup& a = api[g];
    a.q = q_rows(p.q, g);
    a.out = q_rows(p.out, g);
    a.lse = TensorView(offset(p.lse, g * hq * c * 4), kjit::DType::Float32, {hq, c});
    a.cu_seqlens_q = cu_q_view;
    a.host_cu_seqlens_q = cu_q.data();
    a.windows = TensorView(windows_d[g].data(), kjit::DType::Int32, {1, 2});
    a.host_windows = windows[g].data();
    if (!fwd_only) {
      a.dout = q_rows(p.dout, g);
      a.dq = q_rows(p.dq, g);
    }
    union_len = std::max<long long>(union_len, windows[g][1]);
    keys_seen += static_cast<double>(c) * (windows[g][1] - c) + c * (c + 1) / 2.0;
    separate_len += windows[g][1];
  }
  const kjit::attention::SharedKeys keys{prefix(p.k, p.s), prefix(p.v, p.s),
                                         TensorView(cu_keys_d.data(), kjit::DType::Int32, {2}),
                                         cu_keys.data()};
  const auto varlen = [&](int g) {
    return kjit::attention::Varlen{cu_q_view,
                                   TensorView(cu_window_d[g].data(), kjit::DType::Int32, {2}),
                                   cu_q.data(), cu_window[g].data()};
  };
  kjit::attention::ForwardOptions fo;
  fo.causal = true;

  Result res{m.name, p.s, l.w, l.r, groups};
  const double kv_row_bytes = static_cast<double>(hk * d * 2 * 2);
  res.kv_union_mb = union_len * kv_row_bytes / 1e6;
  res.kv_separate_mb = separate_len * kv_row_bytes / 1e6;
  res.fwd_flop = 4.0 * static_cast<double>(d * hq) * keys_seen;
  res.fwd_grouped = median_ms(
      [&] { kjit::attention::forward_grouped(api.data(), groups, keys, fo, stream.handle()); },
      stream.handle());
  res.fwd_separate = median_ms(
      [&] {
        for (int g = 0; g < groups; ++g) {
          const long long len = windows[g][1];
          kjit::attention::forward_varlen(api[g].q, prefix(p.k, len), prefix(p.v, len), api[g].out,
                                          api[g].lse, varlen(g), fo, stream.handle());
        }
      },
      stream.handle());
  if (fwd_only) return res;

  // The forward's out and lse feed both backwards (the two forwards write the same values).
  kjit::attention::forward_grouped(api.data(), groups, keys, fo, stream.handle());
  kjit::attention::BackwardOptions bo;
  bo.causal = true;
  bo.workspace_bytes = kjit::attention::backward_grouped_workspace_bytes(api.data(), groups);
  const DeviceBuffer workspace(bo.workspace_bytes);
  bo.workspace = workspace.data();
  kjit::attention::BackwardOptions so;
  so.causal = true;
  for (int g = 0; g < groups; ++g)
    so.workspace_bytes =
        std::max(so.workspace_bytes, kjit::attention::backward_workspace_bytes(api[g].q, so));
  const DeviceBuffer separate_workspace(so.workspace_bytes);
  so.workspace = separate_workspace.data();
  res.bwd_grouped = median_ms(
      [&] {
        kjit::attention::backward_grouped(api.data(), groups, keys, prefix(p.dk, p.s),
                                          prefix(p.dv, p.s), bo, stream.handle());
      },
      stream.handle());
  res.bwd_separate = median_ms(
      [&] {
        long long at = 0;  // the group's rows in the dk_g / dv_g pool
        for (int g = 0; g < groups; ++g) {
          const long long len = windows[g][1];
          const TensorView dk_g(offset(p.dk_parts, at * hk * d * 2), kBf16, {len, hk, d}),
              dv_g(offset(p.dv_parts, at * hk * d * 2), kBf16, {len, hk, d});
          kjit::attention::backward_varlen(api[g].q, prefix(p.k, len), prefix(p.v, len), api[g].out,
                                           api[g].dout, api[g].lse, api[g].dq, dk_g, dv_g,
                                           varlen(g), so, stream.handle());
          at += len;
        }
      },
      stream.handle());
  return res;
}

void print_row(const Result& r, bool fwd_only) {
  std::printf("%-11s %6lld %2d %2d %2d %9.3f %9.3f %7.2fx", r.model.c_str(), r.s, r.w, r.r, r.g,
              r.fwd_grouped, r.fwd_separate, r.fwd_separate / r.fwd_grouped);
  if (fwd_only) {
    std::printf(" %9s %9s %8s", "-", "-", "-");
  } else {
    std::printf(" %9.3f %9.3f %7.2fx", r.bwd_grouped, r.bwd_separate,
                r.bwd_separate / r.bwd_grouped);
  }
  std::printf(" %9.1f %9.1f %7.0f %7.0f\n", r.kv_union_mb, r.kv_separate_mb,
              r.tflops(r.fwd_grouped), r.tflops(r.fwd_separate));
  std::fflush(stdout);
}

// Per (model, S, W, G): the mean and the minimum speedup over the ranks.
void print_summary(const std::vector<Result>& results, bool fwd_only) {
  std::printf("\nspeedup separate/grouped over the ranks of each (model, S, W, G): mean (min)\n");
  std::printf("%-11s %6s %2s %2s %18s %18s\n", "model", "S", "W", "G", "fwd", "bwd");
  for (std::size_t i = 0; i < results.size();) {
    std::size_t j = i;
    double fwd_sum = 0, bwd_sum = 0, fwd_min = 1e30, bwd_min = 1e30;
    for (; j < results.size() && results[j].model == results[i].model &&
           results[j].s == results[i].s && results[j].w == results[i].w &&
           results[j].g == results[i].g;
         ++j) {
      const double f = results[j].fwd_separate / results[j].fwd_grouped;
      fwd_sum += f;
      fwd_min = std::min(fwd_min, f);
      if (!fwd_only) {
        const double b = results[j].bwd_separate / results[j].bwd_grouped;
        bwd_sum += b;
        bwd_min = std::min(bwd_min, b);
      }
    }
    const double n = static_cast<double>(j - i);
    std::printf("%-11s %6lld %2d %2d %9.2fx (%5.2fx)", results[i].model.c_str(), results[i].s,
                results[i].w, results[i].g, fwd_sum / n, fwd_min);
    if (fwd_only) {
      std::printf(" %18s\n", "-");
    } else {
      std::printf(" %9.2fx (%5.2fx)\n", bwd_sum / n, bwd_min);
    }
    i = j;
  }
}

bool write_csv(const std::string& path, const std::vector<Result>& results, bool fwd_only) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) return false;
  std::fprintf(f,
               "model,S,W,r,G,fwd_grouped_ms,fwd_separate_ms,fwd_speedup,bwd_grouped_ms,"
               "bwd_separate_ms,bwd_speedup,kv_union_mb,kv_separate_mb,fwd_grouped_tflops,"
               "fwd_separate_tflops\n");
  for (const Result& r : results) {
    std::fprintf(f, "%s,%lld,%d,%d,%d,%.4f,%.4f,%.4f,", r.model.c_str(), r.s, r.w, r.r, r.g,
                 r.fwd_grouped, r.fwd_separate, r.fwd_separate / r.fwd_grouped);
    if (fwd_only) {
      std::fprintf(f, ",,,");
    } else {
      std::fprintf(f, "%.4f,%.4f,%.4f,", r.bwd_grouped, r.bwd_separate,
                   r.bwd_separate / r.bwd_grouped);
    }
    std::fprintf(f, "%.2f,%.2f,%.1f,%.1f\n", r.kv_union_mb, r.kv_separate_mb,
                 r.tflops(r.fwd_grouped), r.tflops(r.fwd_separate));
  }
  return std::fclose(f) == 0;
}

int usage() {
  std::fprintf(stderr,
               "usage: kjit_bench_attention_grouped [--csv FILE] [--fwd-only] "
               "[--only KEY=VALUE]...  (KEY: model, S, W, r, G)\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string csv;
  bool fwd_only = false;
  Filter filter;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--csv" && i + 1 < argc) {
      csv = argv[++i];
    } else if (arg == "--fwd-only") {
      fwd_only = true;
    } else if (arg == "--only" && i + 1 < argc) {
      const std::string kv = argv[++i];
      const std::size_t eq = kv.find('=');
      if (eq == std::string::npos) return usage();
      const std::string key = kv.substr(0, eq);
      if (key != "model" && key != "S" && key != "W" && key != "r" && key != "G") return usage();
      filter.only[key].push_back(kv.substr(eq + 1));
    } else {
      return usage();
    }
  }
  if (kjit::bench::no_gpu("attention_grouped")) return 0;
  kjit::Stream stream;
  std::printf("%s, kjit %s, grouped attention vs separate calls, bf16 causal, B = 1, median ms\n",
              kjit::device_info(kjit::current_device()).name.c_str(), kjit::version().c_str());
  std::printf(
      "fwd sep: one forward_varlen per group over its window prefix; bwd sep: one backward_varlen "
      "per group into its own dk_g/dv_g\n(the baseline does not sum the groups' dk/dv, which "
      "favours it); speedup = separate / grouped; K/V MB = one pass over the union of the windows "
      "vs over every group's window; TF/s = the forward's causal FLOPs / time\n");
  std::printf("%-11s %6s %2s %2s %2s %9s %9s %8s %9s %9s %8s %9s %9s %7s %7s\n", "model", "S", "W",
              "r", "G", "fwd grp", "fwd sep", "speedup", "bwd grp", "bwd sep", "speedup",
              "KV MB un", "KV MB sep", "TF grp", "TF sep");
  const std::vector<Model> models = {{"llama3-8b", 32, 8, 128, {8192, 16384, 32768, 65536}},
                                     {"llama3-70b", 64, 8, 128, {8192, 16384}}};
  const std::vector<Layout> all = layouts();
  std::vector<Result> results;
  for (const Model& m : models) {
    for (long long s : m.seqlens) {
      std::vector<const Layout*> rows;
      for (const Layout& l : all) {
        if (filter.accepts(m, s, l)) rows.push_back(&l);
      }
      if (rows.empty()) continue;
      Pools pools(m, s, !fwd_only);
      for (const Layout* l : rows) {
        results.push_back(run_row(m, pools, *l, fwd_only, stream));
        print_row(results.back(), fwd_only);
      }
    }
  }
  print_summary(results, fwd_only);
  if (!csv.empty()) {
    if (!write_csv(csv, results, fwd_only)) {
      std::fprintf(stderr, "attention_grouped: cannot write %s\n", csv.c_str());
      return 1;
    }
    std::printf("CSV: %s\n", csv.c_str());
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "attention_grouped: %s\n", e.what());
  return 1;
}

// Grouped attention (kjit::attention::forward_grouped / backward_grouped) on the GPU. Each case has
// G query groups over one packed K/V, every group with its own queries and, per sequence, a window
// [begin, end) of that sequence's keys. A group's rows are forward_varlen's over its queries and
// the window slices of K/V (causal bottom-right aligned to the window), so each group is checked:
// - against the fp64 CPU reference on its window slices with FlashAttention's bound (max|out -
//   ref| <= 2 max|lowprec - ref| + 1e-5, LSE relative 1e-5, -inf LSE and O = 0 exactly for rows
//   that see no key), or for shapes too large for the CPU against the naive fp32 GPU reference
//   (bf16, one sequence, prefix windows) with the same bound;
// - against kjit's own forward_varlen on the window K/V gathered on the host, within rtol = atol =
//   1e-3, each group's call on the grouped launch's loop and tile (a single group: forward_varlen
//   as the op runs it, bitwise: the op hands a single group to it);
// - backward: dq of every group and the one dk, dv (the groups' contributions summed, scattered to
//   the window positions; keys no query sees exactly 0) against the fp64 (or naive GPU) reference
//   with the backward test's bound (err <= 2 low_err + 1e-3 max(1, max|ref|)) and its 1e-2 count,
//   and against separate backward_varlen calls per group (their dk, dv added in double at the
//   window positions) within rtol = atol = 1e-2, where the relative part of dk, dv is taken of
//   the sum of the parts' magnitudes (the separate baseline rounds each group's part to the input
//   dtype before the sum, so a key whose parts cancel carries their rounding), counted as the
//   backward test does: at most max(1 in 10^4, 2 x the rounded reference's count) outside.
// The backward reads the grouped forward's out and lse, with a random dout. Inputs are fresh each
// run (the seed is printed), outputs poisoned. Stress tests (AttentionGroupedStress.*): 8 and 16
// groups, 32 sequences, 16k tokens in both dtypes, a 64k-token forward, a 32k-token backward, 100
// vs 9900 query tokens. AttentionGroupedRuns.*: repeated calls without device-memory growth, bad
// input refused before any device work.
#include <gtest/gtest.h>

#include <dlpack/dlpack.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kjit/attention.hpp"
#include "kjit/c_api.h"
#include "kjit/error.hpp"
#include "kjit/jit.hpp"
#include "ops/attention/flash_grouped_forward.hpp"
#include "ops/dispatch.hpp"
#include "tests/reference/attention_reference.hpp"
#include "tests/reference/naive_attention_gpu.hpp"
#include "tests/support/dl_tensor.hpp"
#include "tests/support/dtype_bits.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/isolated_cache.hpp"
#include "tests/support/seqlens.hpp"

namespace kjit::test {
namespace {

using attention::AttentionGroup;
using attention::BackwardOptions;
using attention::ForwardOptions;
using attention::SharedKeys;
using attention::Varlen;

using Window = std::array<int, 2>;  // [begin, end) within the sequence

struct GroupSpec {
  std::vector<int> seqlens_q;   // per sequence
  std::vector<Window> windows;  // per sequence
};

// What a case is checked against besides kjit's own separate calls.
enum class Reference { Fp64, NaiveGpu, SeparateOnly };

struct GroupedCase {
  std::string name;
  DType dtype = DType::BFloat16;
  int head_dim = 128;
  bool causal = true;
  int heads_q = 2, heads_k = 1;
  std::vector<int> seqlens_k;
  std::vector<GroupSpec> groups;
  bool backward = false;
  double input_scale = 1.0;
  float softmax_scale = 0.f;  // 0: 1 / sqrt(D)
  bool c_abi = false;
  bool own_workspace = false;
  Reference reference = Reference::Fp64;
  // The forward's main loop forced (0: the op's choice, the warp-specialised loop on sm_90a):
  // the wgmma loop (90) or the warp-specialised loop with the intra-warpgroup overlap (92).
  std::int64_t mainloop = 0;
};

void PrintTo(const GroupedCase& c, std::ostream* os) {
  *os << c.name << ": " << dtype_name(c.dtype) << " D=" << c.head_dim << (c.causal ? " causal" : "")
      << " H=" << c.heads_q << "/" << c.heads_k << " Sk=";
  for (int s : c.seqlens_k)
    *os << s << " ";
  for (std::size_t g = 0; g < c.groups.size(); ++g) {
    *os << "| group " << g << ":";
    for (std::size_t s = 0; s < c.groups[g].seqlens_q.size(); ++s) {
      *os << " " << c.groups[g].seqlens_q[s] << "q[" << c.groups[g].windows[s][0] << ","
          << c.groups[g].windows[s][1] << ")";
    }
  }
  if (c.backward) *os << " +backward";
  if (c.input_scale != 1.0) *os << " x" << c.input_scale;
  if (c.softmax_scale != 0.f) *os << " scale " << c.softmax_scale;
  if (c.c_abi) *os << " C ABI";
  if (c.own_workspace) *os << " caller's workspace";
}

GroupedCase make(std::string name, DType dtype, int d, bool causal, int hq, int hk,
                 std::vector<int> seqlens_k, std::vector<GroupSpec> groups, bool backward) {
  GroupedCase c;
  c.name = std::move(name);
  c.dtype = dtype;
  c.head_dim = d;
  c.causal = causal;
  c.heads_q = hq;
  c.heads_k = hk;
  c.seqlens_k = std::move(seqlens_k);
  c.groups = std::move(groups);
  c.backward = backward;
  return c;
}

// Zigzag context parallelism, rank r of W on one sequence of s tokens (2W chunks of c = s / 2W):
// group 0 = chunk r over the keys [0, (r + 1) c), group 1 = chunk 2W - 1 - r over [0, (2W - r) c).
std::vector<GroupSpec> zigzag(int s, int w, int r) {
  const int c = s / (2 * w);
  return {{{c}, {{0, (r + 1) * c}}}, {{c}, {{0, (2 * w - r) * c}}}};
}

// One sequence of s tokens in n chunks; group i = chunk ci over the keys [0, (ci + 1) c).
std::vector<GroupSpec> chunks(int s, int n, const std::vector<int>& indices) {
  const int c = s / n;
  std::vector<GroupSpec> out;
  for (int ci : indices)
    out.push_back({{c}, {{0, (ci + 1) * c}}});
  return out;
}

std::size_t at(std::int64_t token, int heads, int head, int d) {
  return (static_cast<std::size_t>(token) * heads + head) * d;
}

DeviceBuffer upload(const void* host, std::size_t bytes) {
  if (bytes == 0) return DeviceBuffer();  // an empty tensor: null data, as torch gives
  DeviceBuffer b(bytes);
  b.upload(host, bytes);
  return b;
}

DeviceBuffer poisoned(std::size_t bytes) {
  if (bytes == 0) return DeviceBuffer();
  DeviceBuffer b(bytes);
  b.fill_bytes(0xff);  // NaN: anything not written shows
  return b;
}

template <class T>
std::vector<T> download(const DeviceBuffer& b, std::size_t count) {
  std::vector<T> out(count);
  if (count) b.download(out.data(), count * sizeof(T));
  return out;
}

// The last window key (0-based in the window) that row i of sq sees; -1 for none.
int last_key(bool causal, int i, int sq, int len) {
  return causal ? std::min(len - 1, i + len - sq) : len - 1;
}

// One group's inputs and outputs: host bits, device buffers, downloaded results.
struct GroupData {
  std::vector<int> cu_q;
  std::vector<std::int32_t> windows;  // [B, 2]
  int tq = 0;
  std::vector<std::uint16_t> q, dout;
  DeviceBuffer q_d, out_d, lse_d, dout_d, dq_d, cu_q_d, windows_d;
  std::vector<std::uint16_t> out, dq;
  std::vector<float> lse;
  int seqlen_q(int s) const { return cu_q[s + 1] - cu_q[s]; }
  int begin(int s) const { return windows[2 * s]; }
  int end(int s) const { return windows[2 * s + 1]; }
};

// A case's tensors and the grouped calls on them.
struct Problem {
  const GroupedCase& c;
  const int b, d, hq, hk;
  std::vector<int> cu_k;
  int tk = 0;
  std::vector<std::uint16_t> k, v;
  DeviceBuffer k_d, v_d, cu_k_d, dk_d, dv_d, workspace;
  std::vector<std::uint16_t> dk, dv;
  std::vector<GroupData> groups;

  Problem(const GroupedCase& gc, unsigned seed)
      : c(gc),
        b(static_cast<int>(gc.seqlens_k.size())),
        d(gc.head_dim),
        hq(gc.heads_q),
        hk(gc.heads_k),
        cu_k(cumulative_seqlens(gc.seqlens_k)),
        tk(cu_k.back()),
        groups(gc.groups.size()) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal(0.0, c.input_scale);
    const auto fill = [&](std::vector<std::uint16_t>& buf, std::size_t n) {
      buf.resize(n);
      for (auto& x : buf)
        x = to_bits(c.dtype, normal(rng));
    };
    const std::size_t nk = static_cast<std::size_t>(tk) * hk * d;
    fill(k, nk);
    fill(v, nk);
    k_d = upload(k.data(), nk * 2);
    v_d = upload(v.data(), nk * 2);
    cu_k_d = upload(cu_k.data(), cu_k.size() * 4);
    for (std::size_t g = 0; g < groups.size(); ++g) {
      const GroupSpec& spec = c.groups[g];
      GroupData& gr = groups[g];
      EXPECT_EQ(spec.seqlens_q.size(), cu_k.size() - 1) << "case: group " << g;
      EXPECT_EQ(spec.windows.size(), cu_k.size() - 1) << "case: group " << g;
      gr.cu_q = cumulative_seqlens(spec.seqlens_q);
      gr.tq = gr.cu_q.back();
      for (const Window& w : spec.windows) {
        gr.windows.push_back(w[0]);
        gr.windows.push_back(w[1]);
      }
      const std::size_t nq = static_cast<std::size_t>(gr.tq) * hq * d;
      fill(gr.q, nq);
      if (c.backward) fill(gr.dout, nq);
      gr.q_d = upload(gr.q.data(), nq * 2);
      gr.dout_d = upload(gr.dout.data(), gr.dout.size() * 2);
      gr.cu_q_d = upload(gr.cu_q.data(), gr.cu_q.size() * 4);
      gr.windows_d = upload(gr.windows.data(), gr.windows.size() * 4);
      gr.out_d = poisoned(nq * 2);
      gr.lse_d = poisoned(static_cast<std::size_t>(hq) * gr.tq * 4);
      if (c.backward) gr.dq_d = poisoned(nq * 2);
    }
    if (c.backward) {
      dk_d = poisoned(nk * 2);
      dv_d = poisoned(nk * 2);
    }
  }

  int group_count() const { return static_cast<int>(groups.size()); }
  double scale() const {
    return c.softmax_scale > 0 ? static_cast<double>(c.softmax_scale)
                               : 1.0 / std::sqrt(static_cast<double>(d));
  }
  TensorView packed(const DeviceBuffer& buf, std::int64_t tokens, int heads) const {
    return TensorView(buf.data(), c.dtype, {tokens, heads, d});
  }
  TensorView lse_view(const GroupData& gr) const {
    return TensorView(gr.lse_d.data(), DType::Float32, {hq, gr.tq});
  }
  SharedKeys keys() const {
    return {packed(k_d, tk, hk), packed(v_d, tk, hk),
            TensorView(cu_k_d.data(), DType::Int32, {b + 1}), cu_k.data()};
  }
  std::vector<AttentionGroup> api_groups(bool backward) const {
    std::vector<AttentionGroup> out;
    for (const GroupData& gr : groups) {
      AttentionGroup a;
      a.q = packed(gr.q_d, gr.tq, hq);
      a.out = packed(gr.out_d, gr.tq, hq);
      a.lse = lse_view(gr);
      a.cu_seqlens_q = TensorView(gr.cu_q_d.data(), DType::Int32, {b + 1});
      a.host_cu_seqlens_q = gr.cu_q.data();
      a.windows = TensorView(gr.windows_d.data(), DType::Int32, {b, 2});
      a.host_windows = gr.windows.data();
      if (backward) {
        a.dout = packed(gr.dout_d, gr.tq, hq);
        a.dq = packed(gr.dq_d, gr.tq, hq);
      }
      out.push_back(a);
    }
    return out;
  }

  ForwardOptions forward_options() const {
    ForwardOptions o;
    o.causal = c.causal;
    o.softmax_scale = c.softmax_scale;
    return o;
  }
  BackwardOptions backward_options() const {
    BackwardOptions o;
    o.causal = c.causal;
    o.softmax_scale = c.softmax_scale;
    return o;
  }

  // The C ABI's view of the groups: DLTensors pointing into `api`'s views.
  struct DlGroup {
    DLTensor q, out, lse, cu_q, windows, dout, dq;
  };
  static std::vector<kjit_attention_group> c_groups(const std::vector<AttentionGroup>& api,
                                                    std::vector<DlGroup>& storage, bool backward) {
    storage.clear();
    storage.reserve(api.size());
    std::vector<kjit_attention_group> out;
    for (const AttentionGroup& a : api) {
      storage.push_back(
          {dl(a.q), dl(a.out), dl(a.lse), dl(a.cu_seqlens_q), dl(a.windows), dl(a.dout), dl(a.dq)});
      DlGroup& t = storage.back();
      out.push_back({&t.q, &t.out, &t.lse, &t.cu_q, a.host_cu_seqlens_q, &t.windows, a.host_windows,
                     backward ? &t.dout : nullptr, backward ? &t.dq : nullptr});
    }
    return out;
  }

  ops::GroupedForward::Problem forward_problem() const {
    const std::vector<AttentionGroup> api = api_groups(false);
    return ops::GroupedForward::validate(api.data(), group_count(), keys(), forward_options())
        .problem;
  }
  // The grouped forward's loop and tile: the forced loop at two warpgroups (as the grouped
  // default's tile), or the op's choice (the tuned table's, else the default).
  ops::FlashForward::Config forward_config(const ops::GroupedForward::Problem& problem) const {
    using ops::FlashForward;
    if (!c.mainloop)
      return ops::Dispatcher<ops::GroupedForward>::instance().choose(problem, arch::current());
    FlashForward::Config config = c.mainloop == FlashForward::kMainloopWgmma
                                      ? FlashForward::wgmma_config(problem.per_group())
                                      : FlashForward::warp_specialized_config(problem.per_group());
    config.mainloop = c.mainloop;
    config.block_m = std::min<std::int64_t>(config.block_m, 128);
    return config;
  }

  void forward(StreamHandle stream) {
    const std::vector<AttentionGroup> api = api_groups(false);
    const SharedKeys sk = keys();
    if (c.c_abi) {
      std::vector<DlGroup> storage;
      const std::vector<kjit_attention_group> cg = c_groups(api, storage, false);
      const DLTensor tk_ = dl(sk.k), tv = dl(sk.v), tcu = dl(sk.cu_seqlens_k);
      const kjit_status st =
          kjit_attention_forward_grouped(cg.data(), group_count(), &tk_, &tv, &tcu, cu_k.data(),
                                         c.softmax_scale, c.causal, stream);
      EXPECT_EQ(st, KJIT_SUCCESS) << kjit_last_error();
    } else if (c.mainloop) {
      // Launched through the family as the op would launch its own choice.
      using ops::GroupedForward;
      const ops::Call<GroupedForward> call =
          GroupedForward::validate(api.data(), group_count(), sk, forward_options());
      const ops::FlashForward::Config config = forward_config(call.problem);
      ASSERT_TRUE(GroupedForward::valid(config, call.problem, arch::current()));
      const Program program = load(GroupedForward::spec(config, call.problem, arch::current()));
      GroupedForward::launch(program, config, call.problem, call.args, stream);
    } else {
      attention::forward_grouped(api.data(), group_count(), sk, forward_options(), stream);
    }
  }

  void backward(StreamHandle stream) {
    const std::vector<AttentionGroup> api = api_groups(true);
    const SharedKeys sk = keys();
    BackwardOptions o = backward_options();
    const TensorView vdk = packed(dk_d, tk, hk), vdv = packed(dv_d, tk, hk);
    if (c.c_abi) {
      std::vector<DlGroup> storage;
      const std::vector<kjit_attention_group> cg = c_groups(api, storage, true);
      if (c.own_workspace) {
        std::size_t bytes = 0;
        ASSERT_EQ(kjit_attention_backward_grouped_workspace_bytes(cg.data(), group_count(), &bytes),
                  KJIT_SUCCESS)
            << kjit_last_error();
        o.workspace_bytes = bytes;
        workspace = poisoned(bytes);
        o.workspace = workspace.data();
      }
      const DLTensor tk_ = dl(sk.k), tv = dl(sk.v), tcu = dl(sk.cu_seqlens_k), tdk = dl(vdk),
                     tdv = dl(vdv);
      const kjit_status st = kjit_attention_backward_grouped(
          cg.data(), group_count(), &tk_, &tv, &tcu, cu_k.data(), &tdk, &tdv, c.softmax_scale,
          c.causal, o.workspace, o.workspace_bytes, stream);
      EXPECT_EQ(st, KJIT_SUCCESS) << kjit_last_error();
    } else {
      if (c.own_workspace) {
        o.workspace_bytes = attention::backward_grouped_workspace_bytes(api.data(), group_count());
        workspace = poisoned(o.workspace_bytes);
        o.workspace = workspace.data();
      }
      attention::backward_grouped(api.data(), group_count(), sk, vdk, vdv, o, stream);
    }
  }

  void download_forward() {
    for (GroupData& gr : groups) {
      gr.out = download<std::uint16_t>(gr.out_d, static_cast<std::size_t>(gr.tq) * hq * d);
      gr.lse = download<float>(gr.lse_d, static_cast<std::size_t>(hq) * gr.tq);
    }
  }
  void download_backward() {
    for (GroupData& gr : groups)
      gr.dq = download<std::uint16_t>(gr.dq_d, static_cast<std::size_t>(gr.tq) * hq * d);
    dk = download<std::uint16_t>(dk_d, static_cast<std::size_t>(tk) * hk * d);
    dv = download<std::uint16_t>(dv_d, dk.size());
  }

  // Keys some query row of some group sees (a non-empty window with queries in its sequence:
  // bottom-right alignment lets the segment's last row see the whole window).
  std::vector<bool> seen_keys() const {
    std::vector<bool> seen(tk, false);
    for (const GroupData& gr : groups) {
      for (int s = 0; s < b; ++s) {
        if (gr.seqlen_q(s) == 0) continue;
        for (int j = gr.begin(s); j < gr.end(s); ++j)
          seen[cu_k[s] + j] = true;
      }
    }
    return seen;
  }
};

// Rows [first, first + count) of one head of packed [T, heads, D] bits, as doubles.
std::vector<double> slice(const std::vector<std::uint16_t>& src, DType t, int first, int count,
                          int heads, int head, int d) {
  std::vector<double> out(static_cast<std::size_t>(count) * d);
  for (int i = 0; i < count; ++i) {
    for (int x = 0; x < d; ++x)
      out[static_cast<std::size_t>(i) * d + x] =
          from_bits(t, src[at(first + i, heads, head, d) + x]);
  }
  return out;
}

bool outside(double got, double ref, double tol, double magnitude) {
  return std::abs(got - ref) > tol + tol * magnitude;
}

// The max error of one output against a reference and against the reference with rounded
// intermediates, and their counts outside rtol = atol = 1e-2.
struct ErrorStats {
  DType dtype;
  double err = 0, low_err = 0, ref_max = 0;
  long mismatches = 0, low_mismatches = 0, total = 0;
  void add(double got, double ref, double low) {
    const double rounded = round_to(dtype, low);
    err = std::max(err, std::abs(got - ref));
    low_err = std::max(low_err, std::abs(rounded - ref));
    ref_max = std::max(ref_max, std::abs(ref));
    mismatches += outside(got, ref, 1e-2, std::abs(ref));
    low_mismatches += outside(rounded, ref, 1e-2, std::abs(ref));
    ++total;
  }
  // The backward test's checks: the bound, and unless the inputs are scaled the 1e-2 count.
  void expect_gradient(const std::string& what, bool count) const {
    EXPECT_LE(err, 2 * low_err + 1e-3 * std::max(1.0, ref_max))
        << what << ": low-precision reference error " << low_err << ", max |ref| " << ref_max;
    if (count) {
      EXPECT_LE(mismatches, std::max((total + 9999) / 10000, 2 * low_mismatches))
          << what << ": " << mismatches << " of " << total
          << " elements outside rtol = atol = 1e-2 (max error " << err
          << "; the rounded reference has " << low_mismatches << ")";
    }
  }
};

// The rounded reference's 1e-2 counts, which size the allowance of the separate-call comparison.
struct LowCounts {
  std::vector<long> dq;
  long dk = 0, dv = 0;
};

// ---- forward against the fp64 CPU reference on the window slices ----
void check_forward_fp64(const Problem& p) {
  const GroupedCase& c = p.c;
  const double scale = p.scale();
  for (int g = 0; g < p.group_count(); ++g) {
    const GroupData& gr = p.groups[g];
    double err = 0, low_err = 0, lse_err = 0;
    long unseen_rows_wrong = 0;
    std::string first_wrong;
    for (int s = 0; s < p.b; ++s) {
      const int sq = gr.seqlen_q(s), begin = gr.begin(s), len = gr.end(s) - begin;
      for (int h = 0; h < p.hq && sq > 0; ++h) {
        const int kvh = h / (p.hq / p.hk);
        const auto qs = slice(gr.q, c.dtype, gr.cu_q[s], sq, p.hq, h, p.d);
        const auto ks = slice(p.k, c.dtype, p.cu_k[s] + begin, len, p.hk, kvh, p.d);
        const auto vs = slice(p.v, c.dtype, p.cu_k[s] + begin, len, p.hk, kvh, p.d);
        const auto ref = kjit::reference::attention(qs, ks, vs, sq, len, p.d, scale, c.causal);
        const auto low = kjit::reference::attention(qs, ks, vs, sq, len, p.d, scale, c.causal,
                                                    [&](double x) { return round_to(c.dtype, x); });
        for (int i = 0; i < sq; ++i) {
          const bool sees = last_key(c.causal, i, sq, len) >= 0;
          for (int x = 0; x < p.d; ++x) {
            const double got = from_bits(c.dtype, gr.out[at(gr.cu_q[s] + i, p.hq, h, p.d) + x]);
            if (!std::isfinite(got)) {
              ADD_FAILURE() << "group " << g << " out seq " << s << " row " << i << " head " << h
                            << " dim " << x << " = " << got;
              return;
            }
            if (!sees && got != 0 && unseen_rows_wrong++ == 0) {
              first_wrong = "out seq " + std::to_string(s) + " row " + std::to_string(i) +
                            " head " + std::to_string(h) + " = " + std::to_string(got);
            }
            err = std::max(err, std::abs(got - ref.out[i * p.d + x]));
            low_err = std::max(
                low_err, std::abs(round_to(c.dtype, low.out[i * p.d + x]) - ref.out[i * p.d + x]));
          }
          const double got_lse = gr.lse[static_cast<std::size_t>(h) * gr.tq + gr.cu_q[s] + i];
          if (std::isinf(ref.lse[i])) {
            if (!(std::isinf(got_lse) && got_lse < 0) && unseen_rows_wrong++ == 0) {
              first_wrong = "lse seq " + std::to_string(s) + " row " + std::to_string(i) +
                            " head " + std::to_string(h) + " = " + std::to_string(got_lse);
            }
          } else {
            lse_err =
                std::max(lse_err, std::abs(got_lse - ref.lse[i]) / (1 + std::abs(ref.lse[i])));
          }
        }
      }
    }
    EXPECT_LE(err, 2 * low_err + 1e-5)
        << "group " << g << ": same-dtype reference error " << low_err;
    EXPECT_LE(lse_err, 1e-5) << "group " << g << ": LSE relative error";
    EXPECT_EQ(unseen_rows_wrong, 0)
        << "group " << g << ": rows that see no key must give O = 0 and LSE = -inf; "
        << first_wrong;
  }
}

// ---- forward against the naive fp32 GPU reference (bf16, one sequence, prefix windows) ----
bool naive_reference_fits(const Problem& p) {
  if (p.c.dtype != DType::BFloat16 || p.b != 1) return false;
  for (const GroupData& gr : p.groups) {
    if (gr.begin(0) != 0) return false;
  }
  return true;
}

void check_forward_naive(const Problem& p) {
  ASSERT_TRUE(naive_reference_fits(p)) << "the naive GPU reference takes bf16 prefix windows of "
                                          "one sequence";
  const float scale = static_cast<float>(p.scale());
  for (int g = 0; g < p.group_count(); ++g) {
    const GroupData& gr = p.groups[g];
    if (gr.tq == 0) continue;
    const int len = gr.end(0);
    const auto ref = reference::naive_attention_gpu(gr.q_d, p.k_d, p.v_d, gr.tq, len, p.hq, p.hk,
                                                    p.d, scale, p.c.causal, false);
    const auto low = reference::naive_attention_gpu(gr.q_d, p.k_d, p.v_d, gr.tq, len, p.hq, p.hk,
                                                    p.d, scale, p.c.causal, true);
    double err = 0, low_err = 0, lse_err = 0;
    for (std::size_t i = 0; i < gr.out.size(); ++i) {
      const double got = from_bits(p.c.dtype, gr.out[i]);
      ASSERT_TRUE(std::isfinite(got)) << "group " << g << " out[" << i << "]";
      err = std::max(err, std::abs(got - ref.out[i]));
      low_err = std::max(low_err, std::abs(round_to(p.c.dtype, low.out[i]) - ref.out[i]));
    }
    for (std::size_t i = 0; i < gr.lse.size(); ++i) {
      if (std::isinf(ref.lse[i])) {
        EXPECT_TRUE(std::isinf(gr.lse[i]) && gr.lse[i] < 0) << "group " << g << " lse[" << i << "]";
      } else {
        lse_err = std::max(lse_err, std::abs(static_cast<double>(gr.lse[i]) - ref.lse[i]) /
                                        (1 + std::abs(ref.lse[i])));
      }
    }
    EXPECT_LE(err, 2 * low_err + 1e-5) << "group " << g << ": bf16-P reference error " << low_err;
    EXPECT_LE(lse_err, 1e-5) << "group " << g << ": LSE relative error";
  }
}

// A group's windows gathered on the host into a packed K/V of their own, one sequence each, on
// which forward_varlen / backward_varlen compute what the group computes.
struct Gathered {
  std::vector<int> cu;
  int tokens = 0;
  DeviceBuffer k, v, cu_d;
};

Gathered gather(const Problem& p, const GroupData& gr) {
  Gathered w;
  std::vector<int> lengths;
  for (int s = 0; s < p.b; ++s)
    lengths.push_back(gr.end(s) - gr.begin(s));
  w.cu = cumulative_seqlens(lengths);
  w.tokens = w.cu.back();
  const std::size_t row = static_cast<std::size_t>(p.hk) * p.d;
  std::vector<std::uint16_t> k(w.tokens * row), v(k.size());
  for (int s = 0; s < p.b; ++s) {
    for (int j = 0; j < lengths[s]; ++j) {
      const std::size_t from = (static_cast<std::size_t>(p.cu_k[s]) + gr.begin(s) + j) * row,
                        to = (static_cast<std::size_t>(w.cu[s]) + j) * row;
      std::copy(p.k.begin() + from, p.k.begin() + from + row, k.begin() + to);
      std::copy(p.v.begin() + from, p.v.begin() + from + row, v.begin() + to);
    }
  }
  w.k = upload(k.data(), k.size() * 2);
  w.v = upload(v.data(), v.size() * 2);
  w.cu_d = upload(w.cu.data(), w.cu.size() * 4);
  return w;
}

Varlen varlen_of(const Problem& p, const GroupData& gr, const Gathered& w) {
  return {TensorView(gr.cu_q_d.data(), DType::Int32, {p.b + 1}),
          TensorView(w.cu_d.data(), DType::Int32, {p.b + 1}), gr.cu_q.data(), w.cu.data()};
}

// ---- forward against separate forward_varlen calls on the gathered windows ----
void check_forward_separate(const Problem& p, const Stream& stream) {
  const bool single = p.group_count() == 1;
  // Several groups: each group's call on the grouped launch's loop and tile (forward_varlen's own
  // default may be another loop, as at hd 256), so that the results differ only where a window's
  // keys fall into tiles differently.
  const ops::FlashForward::Config config =
      single ? ops::FlashForward::Config{} : p.forward_config(p.forward_problem());
  for (int g = 0; g < p.group_count(); ++g) {
    const GroupData& gr = p.groups[g];
    if (gr.tq == 0) continue;
    const Gathered w = gather(p, gr);
    // No window key at all: the rows are O = 0, LSE = -inf, checked against the reference.
    if (w.tokens == 0) continue;
    const std::size_t nq = static_cast<std::size_t>(gr.tq) * p.hq * p.d;
    DeviceBuffer out = poisoned(nq * 2), lse = poisoned(static_cast<std::size_t>(p.hq) * gr.tq * 4);
    const TensorView q = p.packed(gr.q_d, gr.tq, p.hq), k = p.packed(w.k, w.tokens, p.hk),
                     v = p.packed(w.v, w.tokens, p.hk), o = p.packed(out, gr.tq, p.hq),
                     l = TensorView(lse.data(), DType::Float32, {p.hq, gr.tq});
    if (single) {
      attention::forward_varlen(q, k, v, o, l, varlen_of(p, gr, w), p.forward_options(),
                                stream.handle());
    } else {
      using ops::FlashForward;
      const ops::Call<FlashForward> call =
          FlashForward::validate_varlen(q, k, v, o, l, varlen_of(p, gr, w), p.forward_options());
      ASSERT_TRUE(FlashForward::valid(config, call.problem, arch::current()));
      FlashForward::launch(load(FlashForward::spec(config, call.problem, arch::current())), config,
                           call.problem, call.args, stream.handle());
    }
    stream.synchronize();
    const auto sep_out = download<std::uint16_t>(out, nq);
    const auto sep_lse = download<float>(lse, static_cast<std::size_t>(p.hq) * gr.tq);
    if (single) {
      // The kernel is forward_varlen's: a single group must give its bits.
      long differ = 0;
      for (std::size_t i = 0; i < nq; ++i)
        differ += sep_out[i] != gr.out[i];
      EXPECT_EQ(differ, 0) << "a single group: " << differ << " of " << nq
                           << " output elements differ bitwise from forward_varlen's";
      EXPECT_EQ(std::memcmp(sep_lse.data(), gr.lse.data(), sep_lse.size() * 4), 0)
          << "a single group: the LSE differs bitwise from forward_varlen's";
      continue;
    }
    long bad = 0;
    double max_diff = 0;
    std::string first;
    for (std::size_t i = 0; i < nq; ++i) {
      const double a = from_bits(p.c.dtype, gr.out[i]), e = from_bits(p.c.dtype, sep_out[i]);
      max_diff = std::max(max_diff, std::abs(a - e));
      if (!(std::abs(a - e) <= 1e-3 + 1e-3 * std::abs(e)) && bad++ == 0)
        first = "out[" + std::to_string(i) + "] " + std::to_string(a) + " vs " + std::to_string(e);
    }
    for (std::size_t i = 0; i < sep_lse.size(); ++i) {
      const double a = gr.lse[i], e = sep_lse[i];
      const bool same = std::isinf(e) ? a == e : std::abs(a - e) <= 1e-3 + 1e-3 * std::abs(e);
      if (!same && bad++ == 0)
        first = "lse[" + std::to_string(i) + "] " + std::to_string(a) + " vs " + std::to_string(e);
    }
    EXPECT_EQ(bad, 0) << "group " << g << ": elements outside rtol = atol = 1e-3 of forward_varlen "
                      << "on the window's K/V (max |out diff| " << max_diff
                      << "); first: " << first;
  }
}

// ---- backward against the fp64 CPU reference ----
LowCounts check_backward_fp64(const Problem& p) {
  const GroupedCase& c = p.c;
  const double scale = p.scale();
  const int per_kv = p.hq / p.hk;
  const bool count = c.input_scale == 1.0;
  const std::size_t nk = static_cast<std::size_t>(p.tk) * p.hk * p.d;
  std::vector<double> ref_k(nk), ref_v(nk), low_k(nk), low_v(nk);
  LowCounts counts;
  for (int g = 0; g < p.group_count(); ++g) {
    const GroupData& gr = p.groups[g];
    ErrorStats dq{c.dtype};
    long unseen_nonzero = 0;
    for (int s = 0; s < p.b; ++s) {
      const int sq = gr.seqlen_q(s), begin = gr.begin(s), len = gr.end(s) - begin;
      if (sq == 0) continue;
      for (int kvh = 0; kvh < p.hk; ++kvh) {
        const auto ks = slice(p.k, c.dtype, p.cu_k[s] + begin, len, p.hk, kvh, p.d);
        const auto vs = slice(p.v, c.dtype, p.cu_k[s] + begin, len, p.hk, kvh, p.d);
        for (int h = kvh * per_kv; h < (kvh + 1) * per_kv; ++h) {
          const auto qs = slice(gr.q, c.dtype, gr.cu_q[s], sq, p.hq, h, p.d);
          const auto dos = slice(gr.dout, c.dtype, gr.cu_q[s], sq, p.hq, h, p.d);
          const auto ref =
              kjit::reference::attention_backward(qs, ks, vs, dos, sq, len, p.d, scale, c.causal);
          const auto low =
              kjit::reference::attention_backward(qs, ks, vs, dos, sq, len, p.d, scale, c.causal,
                                                  [&](double x) { return round_to(c.dtype, x); });
          for (int j = 0; j < len; ++j) {
            for (int x = 0; x < p.d; ++x) {
              const std::size_t full = at(p.cu_k[s] + begin + j, p.hk, kvh, p.d) + x,
                                e = static_cast<std::size_t>(j) * p.d + x;
              ref_k[full] += ref.dk[e];
              ref_v[full] += ref.dv[e];
              low_k[full] += low.dk[e];
              low_v[full] += low.dv[e];
            }
          }
          for (int i = 0; i < sq; ++i) {
            const bool sees = last_key(c.causal, i, sq, len) >= 0;
            for (int x = 0; x < p.d; ++x) {
              const double got = from_bits(c.dtype, gr.dq[at(gr.cu_q[s] + i, p.hq, h, p.d) + x]);
              if (!std::isfinite(got)) {
                ADD_FAILURE() << "group " << g << " dq seq " << s << " row " << i << " head " << h
                              << " = " << got;
                return counts;
              }
              unseen_nonzero += !sees && got != 0;
              dq.add(got, ref.dq[i * p.d + x], low.dq[i * p.d + x]);
            }
          }
        }
      }
    }
    dq.expect_gradient("group " + std::to_string(g) + " dq", count);
    EXPECT_EQ(unseen_nonzero, 0) << "group " << g << ": dq of rows that see no key must be 0";
    counts.dq.push_back(dq.low_mismatches);
  }
  const std::vector<bool> seen = p.seen_keys();
  const char* names[2] = {"dk", "dv"};
  const std::vector<std::uint16_t>* got[2] = {&p.dk, &p.dv};
  const std::vector<double>* refs[2] = {&ref_k, &ref_v};
  const std::vector<double>* lows[2] = {&low_k, &low_v};
  for (int t = 0; t < 2; ++t) {
    ErrorStats stats{c.dtype};
    long unseen_nonzero = 0;
    for (std::size_t i = 0; i < nk; ++i) {
      const double value = from_bits(c.dtype, (*got[t])[i]);
      if (!std::isfinite(value)) {
        ADD_FAILURE() << names[t] << " key " << i / (p.hk * p.d) << " head " << i / p.d % p.hk
                      << " = " << value;
        return counts;
      }
      if (!seen[i / (static_cast<std::size_t>(p.hk) * p.d)]) {
        unseen_nonzero += value != 0;
        continue;
      }
      stats.add(value, (*refs[t])[i], (*lows[t])[i]);
    }
    stats.expect_gradient(names[t], count);
    EXPECT_EQ(unseen_nonzero, 0) << names[t] << " of keys no query sees must be 0";
    (t == 0 ? counts.dk : counts.dv) = stats.low_mismatches;
  }
  return counts;
}

// ---- backward against the naive fp32 GPU reference (bf16, one sequence, prefix windows) ----
LowCounts check_backward_naive(const Problem& p) {
  LowCounts counts;
  EXPECT_TRUE(naive_reference_fits(p));
  if (!naive_reference_fits(p)) return counts;
  const float scale = static_cast<float>(p.scale());
  const auto bf = DType::BFloat16;
  const std::size_t nk = static_cast<std::size_t>(p.tk) * p.hk * p.d;
  std::vector<double> ref_k(nk), ref_v(nk), low_k(nk), low_v(nk);
  for (int g = 0; g < p.group_count(); ++g) {
    const GroupData& gr = p.groups[g];
    counts.dq.push_back(0);
    if (gr.tq == 0) continue;
    const int len = gr.end(0);
    const auto forward = reference::naive_attention_gpu(gr.q_d, p.k_d, p.v_d, gr.tq, len, p.hq,
                                                        p.hk, p.d, scale, p.c.causal, false);
    const auto ref =
        reference::naive_attention_backward_gpu(gr.q_d, p.k_d, p.v_d, gr.dout_d, forward, gr.tq,
                                                len, p.hq, p.hk, p.d, scale, p.c.causal, false);
    const auto low =
        reference::naive_attention_backward_gpu(gr.q_d, p.k_d, p.v_d, gr.dout_d, forward, gr.tq,
                                                len, p.hq, p.hk, p.d, scale, p.c.causal, true);
    ErrorStats dq{bf};
    for (std::size_t i = 0; i < gr.dq.size(); ++i) {
      const double got = from_bits(bf, gr.dq[i]);
      if (!std::isfinite(got)) {
        ADD_FAILURE() << "group " << g << " dq[" << i << "] = " << got;
        return counts;
      }
      dq.add(got, ref.dq[i], low.dq[i]);
    }
    dq.expect_gradient("group " + std::to_string(g) + " dq", false);
    counts.dq.back() = dq.low_mismatches;
    // One sequence, prefix windows: the window's keys are the first `len` of k.
    for (std::size_t i = 0; i < ref.dk.size(); ++i) {
      ref_k[i] += ref.dk[i];
      ref_v[i] += ref.dv[i];
      low_k[i] += low.dk[i];
      low_v[i] += low.dv[i];
    }
  }
  const std::vector<bool> seen = p.seen_keys();
  const char* names[2] = {"dk", "dv"};
  const std::vector<std::uint16_t>* got[2] = {&p.dk, &p.dv};
  const std::vector<double>* refs[2] = {&ref_k, &ref_v};
  const std::vector<double>* lows[2] = {&low_k, &low_v};
  for (int t = 0; t < 2; ++t) {
    ErrorStats stats{bf};
    long unseen_nonzero = 0;
    for (std::size_t i = 0; i < nk; ++i) {
      const double value = from_bits(bf, (*got[t])[i]);
      if (!std::isfinite(value)) {
        ADD_FAILURE() << names[t] << "[" << i << "] = " << value;
        return counts;
      }
      if (!seen[i / (static_cast<std::size_t>(p.hk) * p.d)]) {
        unseen_nonzero += value != 0;
        continue;
      }
      stats.add(value, (*refs[t])[i], (*lows[t])[i]);
    }
    stats.expect_gradient(names[t], false);
    EXPECT_EQ(unseen_nonzero, 0) << names[t] << " of keys no query sees must be 0";
    (t == 0 ? counts.dk : counts.dv) = stats.low_mismatches;
  }
  return counts;
}

// ---- backward against separate backward_varlen calls on the gathered windows ----
void check_backward_separate(const Problem& p, const Stream& stream, const LowCounts& low) {
  const GroupedCase& c = p.c;
  const bool count = c.input_scale == 1.0;
  const std::size_t nk = static_cast<std::size_t>(p.tk) * p.hk * p.d;
  std::vector<double> sum_k(nk), sum_v(nk), mag_k(nk), mag_v(nk);
  const auto allowed = [](long total, long low_count) {
    return std::max((total + 9999) / 10000, 2 * low_count);
  };
  for (int g = 0; g < p.group_count(); ++g) {
    const GroupData& gr = p.groups[g];
    if (gr.tq == 0) continue;
    const Gathered w = gather(p, gr);
    if (w.tokens == 0) continue;  // dq = 0: checked against the reference
    const std::size_t nq = static_cast<std::size_t>(gr.tq) * p.hq * p.d,
                      nw = static_cast<std::size_t>(w.tokens) * p.hk * p.d;
    DeviceBuffer dq = poisoned(nq * 2), dk = poisoned(nw * 2), dv = poisoned(nw * 2);
    attention::backward_varlen(
        p.packed(gr.q_d, gr.tq, p.hq), p.packed(w.k, w.tokens, p.hk), p.packed(w.v, w.tokens, p.hk),
        p.packed(gr.out_d, gr.tq, p.hq), p.packed(gr.dout_d, gr.tq, p.hq), p.lse_view(gr),
        p.packed(dq, gr.tq, p.hq), p.packed(dk, w.tokens, p.hk), p.packed(dv, w.tokens, p.hk),
        varlen_of(p, gr, w), p.backward_options(), stream.handle());
    stream.synchronize();
    const auto sep_dq = download<std::uint16_t>(dq, nq);
    const auto sep_dk = download<std::uint16_t>(dk, nw);
    const auto sep_dv = download<std::uint16_t>(dv, nw);
    long bad = 0;
    double max_diff = 0;
    for (std::size_t i = 0; i < nq; ++i) {
      const double a = from_bits(c.dtype, gr.dq[i]), e = from_bits(c.dtype, sep_dq[i]);
      max_diff = std::max(max_diff, std::abs(a - e));
      bad += outside(a, e, 1e-2, std::abs(e));
    }
    if (count) {
      EXPECT_LE(bad,
                allowed(static_cast<long>(nq), g < static_cast<int>(low.dq.size()) ? low.dq[g] : 0))
          << "group " << g << " dq: " << bad << " of " << nq
          << " elements outside rtol = atol = 1e-2 of backward_varlen's (max diff " << max_diff
          << ")";
    }
    for (int s = 0; s < p.b; ++s) {
      for (int j = 0; j < gr.end(s) - gr.begin(s); ++j) {
        for (int kvh = 0; kvh < p.hk; ++kvh) {
          for (int x = 0; x < p.d; ++x) {
            const std::size_t full = at(p.cu_k[s] + gr.begin(s) + j, p.hk, kvh, p.d) + x,
                              part = at(w.cu[s] + j, p.hk, kvh, p.d) + x;
            const double pk = from_bits(c.dtype, sep_dk[part]),
                         pv = from_bits(c.dtype, sep_dv[part]);
            sum_k[full] += pk;
            sum_v[full] += pv;
            mag_k[full] += std::abs(pk);
            mag_v[full] += std::abs(pv);
          }
        }
      }
    }
  }
  if (!count) return;
  const char* names[2] = {"dk", "dv"};
  const std::vector<std::uint16_t>* got[2] = {&p.dk, &p.dv};
  const std::vector<double>* sums[2] = {&sum_k, &sum_v};
  const std::vector<double>* mags[2] = {&mag_k, &mag_v};
  for (int t = 0; t < 2; ++t) {
    long bad = 0;
    double max_diff = 0;
    for (std::size_t i = 0; i < nk; ++i) {
      const double a = from_bits(c.dtype, (*got[t])[i]), e = (*sums[t])[i];
      max_diff = std::max(max_diff, std::abs(a - e));
      bad += outside(a, e, 1e-2, (*mags[t])[i]);
    }
    EXPECT_LE(bad, allowed(static_cast<long>(nk), t == 0 ? low.dk : low.dv))
        << names[t] << ": " << bad << " of " << nk
        << " elements outside rtol = atol = 1e-2 of the sum of separate backward_varlen calls "
        << "(max diff " << max_diff << ")";
  }
}

void run_case(const GroupedCase& c, unsigned seed) {
  Problem p(c, seed);
  Stream stream;
  p.forward(stream.handle());
  stream.synchronize();
  p.download_forward();
  if (c.reference == Reference::Fp64) check_forward_fp64(p);
  if (c.reference == Reference::NaiveGpu) check_forward_naive(p);
  check_forward_separate(p, stream);
  if (!c.backward || ::testing::Test::HasFatalFailure()) return;
  p.backward(stream.handle());
  stream.synchronize();
  p.download_backward();
  LowCounts low;
  if (c.reference == Reference::Fp64) low = check_backward_fp64(p);
  if (c.reference == Reference::NaiveGpu) low = check_backward_naive(p);
  check_backward_separate(p, stream, low);
}

class AttentionGrouped : public SharedKernelStore,
                         public ::testing::WithParamInterface<GroupedCase> {};

TEST_P(AttentionGrouped, MatchesReferenceAndSeparateCalls) {
  KJIT_REQUIRE_GPU();
  if (GetParam().mainloop && !arch::current().has_wgmma())
    GTEST_SKIP() << "the wgmma loops need sm_90a; this card is " << arch::current().name();
  const unsigned seed = std::random_device{}();  // fresh inputs every run; printed on failure
  SCOPED_TRACE("input seed " + std::to_string(seed));
  run_case(GetParam(), seed);
}

std::vector<GroupedCase> cases() {
  const DType bf = DType::BFloat16, fp = DType::Float16;
  std::vector<GroupedCase> out;
  // Zigzag W = 2 (2 groups): both ranks causal with the backward, and the full mask.
  for (int r : {0, 1})
    out.push_back(make("zigzag_w2_r" + std::to_string(r), bf, 128, true, 2, 1, {512},
                       zigzag(512, 2, r), true));
  out.push_back(make("zigzag_w2_full", fp, 128, false, 2, 1, {512}, zigzag(512, 2, 1), false));
  // Nested prefixes, W = 4 rank 1: windows [0, 2c) and [0, 7c).
  out.push_back(make("zigzag_w4_r1", bf, 128, true, 2, 1, {1024}, zigzag(1024, 4, 1), true));
  // Three groups, different windows (prefixes of one sequence), both masks.
  const std::vector<GroupSpec> three = {
      {{64}, {{0, 200}}}, {{100}, {{0, 450}}}, {{37}, {{0, 600}}}};
  for (bool causal : {true, false}) {
    out.push_back(make(std::string("three_groups") + (causal ? "_causal" : "_full"), fp, 64, causal,
                       2, 1, {600}, three, true));
  }
  // Four groups over two sequences, hd 256, windows anywhere (begin > 0, one key, the last key).
  out.push_back(make("four_groups_d256", bf, 256, false, 2, 1, {300, 257},
                     {{{40, 30}, {{0, 300}, {0, 257}}},
                      {{17, 64}, {{0, 100}, {57, 257}}},
                      {{64, 1}, {{150, 300}, {0, 1}}},
                      {{5, 33}, {{299, 300}, {0, 200}}}},
                     true));
  out.push_back(make("four_groups_d256_causal", fp, 256, true, 2, 2, {300, 257},
                     {{{40, 30}, {{0, 300}, {0, 257}}},
                      {{17, 64}, {{0, 100}, {57, 257}}},
                      {{64, 1}, {{150, 300}, {0, 1}}},
                      {{5, 33}, {{299, 300}, {0, 200}}}},
                     false));
  // GQA 32/8 on short sequences.
  out.push_back(make("gqa_32x8", bf, 128, true, 32, 8, {96, 70},
                     {{{48, 70}, {{0, 96}, {0, 70}}}, {{30, 20}, {{0, 64}, {10, 70}}}}, true));
  // Variable-length sequences 128..1024 (B = 3), three groups, windows with begin > 0 too.
  const std::vector<GroupSpec> varlen = {{{32, 128, 128}, {{0, 64}, {0, 320}, {0, 512}}},
                                         {{64, 64, 128}, {{0, 128}, {0, 640}, {0, 1024}}},
                                         {{16, 100, 64}, {{64, 128}, {100, 600}, {512, 1024}}}};
  out.push_back(make("varlen_b3", bf, 64, true, 2, 1, {128, 640, 1024}, varlen, true));
  out.back().own_workspace = true;
  out.push_back(make("varlen_b3_full", fp, 128, false, 2, 1, {128, 640, 1024}, varlen, false));
  // Overlapping windows with begin > 0: [100, 400) and [50, 300).
  for (bool causal : {true, false}) {
    out.push_back(make(std::string("begin_gt_0") + (causal ? "_causal" : "_full"), fp, 128, causal,
                       2, 1, {512}, {{{120}, {{100, 400}}}, {{90}, {{50, 300}}}}, true));
  }
  // All groups on the same window (one of them with as many queries as keys).
  out.push_back(make("same_window", bf, 64, true, 4, 2, {300},
                     {{{50}, {{0, 300}}}, {{80}, {{0, 300}}}, {{300}, {{0, 300}}}}, true));
  out.push_back(make("same_window_b2", fp, 128, false, 2, 1, {200, 130},
                     {{{20, 30}, {{40, 180}, {0, 130}}}, {{64, 9}, {{40, 180}, {0, 130}}}}, false));
  // A single group: bitwise forward_varlen's. Whole sequences (the same K/V), and a window.
  out.push_back(make("single_group", bf, 128, true, 2, 1, {200, 1, 333},
                     {{{150, 1, 333}, {{0, 200}, {0, 1}, {0, 333}}}}, true));
  out.push_back(
      make("single_group_window", fp, 128, false, 2, 1, {300}, {{{77}, {{30, 250}}}}, true));
  // Single-token sequences and windows (one empty).
  out.push_back(make("single_tokens", bf, 128, true, 2, 1, {1, 1, 5, 1},
                     {{{1, 1, 1, 1}, {{0, 1}, {0, 1}, {2, 3}, {0, 1}}},
                      {{1, 0, 2, 1}, {{0, 1}, {0, 0}, {0, 5}, {1, 1}}}},
                     true));
  out.push_back(make("single_tokens_full", fp, 64, false, 2, 1, {1, 1, 5, 1},
                     {{{1, 1, 1, 1}, {{0, 1}, {0, 1}, {2, 3}, {0, 1}}},
                      {{1, 0, 2, 1}, {{0, 1}, {0, 0}, {0, 5}, {1, 1}}}},
                     false));
  // An empty group (no query tokens, null data), empty windows (rows O = 0, LSE = -inf, dq = 0),
  // a group whose every window is empty, and keys no query sees (dk = dv = 0).
  const std::vector<GroupSpec> empties = {{{0, 0}, {{0, 100}, {0, 64}}},
                                          {{30, 40}, {{40, 40}, {0, 64}}},
                                          {{20, 0}, {{60, 100}, {10, 20}}},
                                          {{10, 5}, {{0, 0}, {64, 64}}}};
  out.push_back(make("empty_group_and_windows", bf, 128, true, 2, 1, {100, 64}, empties, true));
  out.push_back(
      make("empty_group_and_windows_full", fp, 64, false, 2, 1, {100, 64}, empties, true));
  // Head dims 96 and 192.
  out.push_back(make("d96", bf, 96, true, 2, 1, {256}, zigzag(256, 2, 0), true));
  out.push_back(
      make("d192", fp, 192, false, 2, 1, {256}, {{{64}, {{0, 256}}}, {{40}, {{100, 200}}}}, true));
  // A non-default softmax scale.
  out.push_back(make("softmax_scale", fp, 64, true, 2, 1, {600}, three, true));
  out.back().softmax_scale = 0.3f;
  // Inputs x10: the bound only.
  out.push_back(make("inputs_x10", bf, 128, true, 2, 1, {384}, zigzag(384, 2, 1), true));
  out.back().input_scale = 10.0;
  // The C ABI: a forward (with an empty group) and a backward with the caller's workspace.
  out.push_back(make("c_abi_forward", fp, 64, true, 2, 1, {200, 150},
                     {{{40, 50}, {{0, 200}, {0, 150}}},
                      {{0, 0}, {{0, 10}, {0, 10}}},
                      {{60, 30}, {{20, 120}, {0, 75}}}},
                     false));
  out.back().c_abi = true;
  out.push_back(make("c_abi_backward", bf, 128, true, 2, 1, {256}, zigzag(256, 2, 1), true));
  out.back().c_abi = true;
  out.back().own_workspace = true;
  // The forward on the other sm_90a loops, the wgmma one and loop 91 (the grouped
  // default is the overlap loop up to hd 192; the backward as usual): zigzag, causal and
  // full, windows with begin > 0, GQA, empty groups and windows, inputs x10, hd 64/128/192,
  // single tokens.
  for (const char* name :
       {"zigzag_w2_r0", "zigzag_w2_full", "three_groups_causal", "varlen_b3", "gqa_32x8",
        "begin_gt_0_causal", "empty_group_and_windows", "inputs_x10", "d192", "single_tokens"}) {
    const auto base =
        std::find_if(out.begin(), out.end(), [&](const GroupedCase& c) { return c.name == name; });
    if (base == out.end()) throw std::logic_error(std::string("no grouped case ") + name);
    for (auto [suffix, mainloop] : {std::pair{"_wgmma", ops::FlashForward::kMainloopWgmma},
                                    std::pair{"_ws", ops::FlashForward::kMainloopWgmmaWs}}) {
      GroupedCase forced = *base;
      forced.name += suffix;
      forced.mainloop = mainloop;
      out.push_back(forced);
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(All, AttentionGrouped, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<GroupedCase>& i) {
                           return i.param.name + "_" + std::to_string(i.index);
                         });

// ---- stress ----

using AttentionGroupedStress = IsolatedCache;

void run_seeded(const GroupedCase& c) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("input seed " + std::to_string(seed));
  run_case(c, seed);
}

TEST_F(AttentionGroupedStress, EightGroups) {
  KJIT_REQUIRE_GPU();
  std::vector<GroupSpec> groups;
  for (int i = 0; i < 8; ++i)
    groups.push_back({{16 + 8 * i, 25}, {{0, 32 * (i + 1)}, {10 * i, 200 - 5 * i}}});
  run_seeded(make("eight_groups", DType::BFloat16, 64, true, 2, 1, {256, 200}, groups, true));
}

// The whole causal attention of one sequence cut into 16 chunks, one group each.
TEST_F(AttentionGroupedStress, SixteenGroups) {
  KJIT_REQUIRE_GPU();
  std::vector<int> all(16);
  for (int i = 0; i < 16; ++i)
    all[i] = i;
  run_seeded(
      make("sixteen_groups", DType::Float16, 128, true, 2, 1, {512}, chunks(512, 16, all), true));
}

TEST_F(AttentionGroupedStress, ThirtyTwoSequences) {
  KJIT_REQUIRE_GPU();
  std::vector<int> seqlens_k;
  GroupSpec g0, g1;
  for (int s = 0; s < 32; ++s) {
    const int len = 1 + (s * 37) % 160;
    seqlens_k.push_back(len);
    g0.seqlens_q.push_back(s % 3 == 0 ? 0 : 1 + (s * 7) % 24);
    g0.windows.push_back({0, (len + 1) / 2});
    g1.seqlens_q.push_back(1 + (s * 5) % 16);
    g1.windows.push_back({len / 4, len});
  }
  run_seeded(
      make("thirty_two_sequences", DType::BFloat16, 128, true, 4, 1, seqlens_k, {g0, g1}, true));
}

// 16k tokens, zigzag W = 4 rank 1 (chunks of 2048 over [0, 4096) and [0, 14336)), GQA 8/2:
// against separate calls, and in bf16 against the naive GPU reference too.
TEST_F(AttentionGroupedStress, SixteenKTokensBf16) {
  KJIT_REQUIRE_GPU();
  GroupedCase c =
      make("16k_bf16", DType::BFloat16, 128, true, 8, 2, {16384}, zigzag(16384, 4, 1), false);
  c.reference = Reference::NaiveGpu;
  run_seeded(c);
}

TEST_F(AttentionGroupedStress, SixteenKTokensFp16) {
  KJIT_REQUIRE_GPU();
  GroupedCase c =
      make("16k_fp16", DType::Float16, 128, true, 8, 2, {16384}, zigzag(16384, 4, 1), false);
  c.reference = Reference::SeparateOnly;
  run_seeded(c);
}

// One 64k-token sequence, zigzag W = 2 rank 0: chunks of 16k over [0, 16k) and [0, 64k).
TEST_F(AttentionGroupedStress, Forward64kTokens) {
  KJIT_REQUIRE_GPU();
  GroupedCase c =
      make("64k_forward", DType::BFloat16, 128, true, 4, 1, {65536}, zigzag(65536, 2, 0), false);
  c.reference = Reference::SeparateOnly;
  run_seeded(c);
}

// One 32k-token sequence, zigzag W = 2 rank 1: chunks of 8k over [0, 16k) and [0, 24k); against
// the naive GPU backward and separate backward_varlen calls.
TEST_F(AttentionGroupedStress, Backward32kTokens) {
  KJIT_REQUIRE_GPU();
  GroupedCase c =
      make("32k_backward", DType::BFloat16, 128, true, 2, 1, {32768}, zigzag(32768, 2, 1), true);
  c.reference = Reference::NaiveGpu;
  run_seeded(c);
}

// A grid of many waves (32k keys x 8 key/value heads: 2048 blocks, over 6 a multiprocessor on
// any current GPU), whose blocks take key tiles fastest; every case above is a grid of a few
// waves, whose blocks take heads fastest. Against separate backward_varlen calls.
TEST_F(AttentionGroupedStress, BackwardManyWaves) {
  KJIT_REQUIRE_GPU();
  GroupedCase c = make("many_waves_backward", DType::BFloat16, 128, true, 8, 8, {32768},
                       zigzag(32768, 2, 1), true);
  c.reference = Reference::SeparateOnly;
  run_seeded(c);
}

// 100 query tokens against 9900, together the causal attention of one 10000-token sequence.
TEST_F(AttentionGroupedStress, ImbalancedGroups) {
  KJIT_REQUIRE_GPU();
  GroupedCase c = make("imbalanced", DType::BFloat16, 64, true, 4, 2, {10000},
                       {{{100}, {{0, 100}}}, {{9900}, {{0, 10000}}}}, true);
  c.reference = Reference::NaiveGpu;
  run_seeded(c);
}

// ---- runs ----

using AttentionGroupedRuns = IsolatedCache;

TEST_F(AttentionGroupedRuns, RepeatedCallsDoNotGrowDeviceMemory) {
  KJIT_REQUIRE_GPU();
  const GroupedCase c =
      make("repeated", DType::Float16, 64, true, 4, 2, {256, 128},
           {{{64, 32}, {{0, 128}, {0, 64}}}, {{64, 32}, {{0, 256}, {0, 128}}}}, true);
  Problem p(c, std::random_device{}());
  Stream stream;
  auto call = [&] {
    p.forward(stream.handle());
    p.backward(stream.handle());
  };
  for (int i = 0; i < 10; ++i)
    call();
  stream.synchronize();
  std::size_t free_before = 0, free_after = 0;
  memory_info(&free_before, nullptr);
  for (int i = 0; i < 300; ++i)
    call();
  stream.synchronize();
  memory_info(&free_after, nullptr);
  EXPECT_LE(free_before - std::min(free_before, free_after), std::size_t{2} << 20)
      << "free device memory fell from " << free_before << " to " << free_after;
}

// Each bad input throws InvalidArgument naming the group (and the sequence, for windows) before
// anything runs: the poisoned outputs stay as they were.
TEST_F(AttentionGroupedRuns, BadInputIsRefused) {
  KJIT_REQUIRE_GPU();
  const GroupedCase c = make("bad", DType::BFloat16, 64, true, 2, 1, {12, 20},
                             {{{4, 6}, {{0, 12}, {0, 20}}}, {{3, 5}, {{2, 10}, {5, 20}}}}, true);
  Problem p(c, std::random_device{}());
  const SharedKeys keys = p.keys();
  const TensorView vdk = p.packed(p.dk_d, p.tk, p.hk), vdv = p.packed(p.dv_d, p.tk, p.hk);
  const auto expect_refused = [&](const std::function<void()>& call, const std::string& what,
                                  std::initializer_list<const char*> needles) {
    try {
      call();
      ADD_FAILURE() << "accepted: " << what;
    } catch (const InvalidArgument& e) {
      for (const char* needle : needles) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
            << what << ": expected \"" << needle << "\" in: " << e.what();
      }
    }
  };
  // Through the forward and the backward, each time with the groups as changed.
  const auto both = [&](const std::vector<AttentionGroup>& groups, const std::string& what,
                        std::initializer_list<const char*> needles) {
    std::vector<AttentionGroup> fwd = groups;
    for (AttentionGroup& g : fwd)
      g.dout = g.dq = TensorView();
    expect_refused(
        [&] {
          attention::forward_grouped(fwd.data(), static_cast<int>(fwd.size()), keys,
                                     p.forward_options(), nullptr);
        },
        "forward: " + what, needles);
    expect_refused(
        [&] {
          attention::backward_grouped(groups.data(), static_cast<int>(groups.size()), keys, vdk,
                                      vdv, p.backward_options(), nullptr);
        },
        "backward: " + what, needles);
  };
  const std::vector<AttentionGroup> good = p.api_groups(true);
  {
    std::vector<AttentionGroup> g = good;
    const std::int32_t windows[] = {2, 10, 5, 21};  // sequence 1 holds 20 keys
    g[1].host_windows = windows;
    both(g, "a window past the sequence", {"group 1", "sequence 1", "[5, 21)"});
  }
  {
    std::vector<AttentionGroup> g = good;
    const std::int32_t windows[] = {5, 3, 0, 20};
    g[0].host_windows = windows;
    both(g, "begin > end", {"group 0", "sequence 0", "[5, 3)"});
  }
  {
    std::vector<AttentionGroup> g = good;
    const std::int32_t windows[] = {-1, 4, 0, 20};
    g[1].host_windows = windows;
    both(g, "a negative begin", {"group 1", "sequence 0", "[-1, 4)"});
  }
  {
    // Group 1 over one sequence, the keys over two.
    std::vector<AttentionGroup> g = good;
    const std::int32_t cu_q[] = {0, p.groups[1].tq};
    g[1].cu_seqlens_q = TensorView(p.groups[1].cu_q_d.data(), DType::Int32, {2});
    g[1].host_cu_seqlens_q = cu_q;
    g[1].windows = TensorView(p.groups[1].windows_d.data(), DType::Int32, {1, 2});
    both(g, "another B", {"group 1"});
  }
  both({}, "no group", {"16"});
  {
    std::vector<AttentionGroup> g(17, good[0]);
    both(g, "17 groups", {"16", "17"});
  }
  BackwardOptions deterministic = p.backward_options();
  deterministic.deterministic = true;
  expect_refused(
      [&] { attention::backward_grouped(good.data(), 2, keys, vdk, vdv, deterministic, nullptr); },
      "deterministic backward", {"deterministic"});
  synchronize(nullptr);
  for (const GroupData& gr : p.groups) {
    const auto out =
        download<std::uint16_t>(gr.out_d, static_cast<std::size_t>(gr.tq) * p.hq * p.d);
    const auto dq = download<std::uint16_t>(gr.dq_d, out.size());
    EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](std::uint16_t x) { return x == 0xffff; }))
        << "a refused call wrote out";
    EXPECT_TRUE(std::all_of(dq.begin(), dq.end(), [](std::uint16_t x) { return x == 0xffff; }))
        << "a refused call wrote dq";
  }
  const auto dk = download<std::uint16_t>(p.dk_d, static_cast<std::size_t>(p.tk) * p.hk * p.d);
  EXPECT_TRUE(std::all_of(dk.begin(), dk.end(), [](std::uint16_t x) { return x == 0xffff; }))
      << "a refused call wrote dk";
}

}  // namespace
}  // namespace kjit::test

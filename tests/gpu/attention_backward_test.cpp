// Attention backward on the GPU against the fp64 CPU reference. The forward runs first on the GPU
// (its out and lse feed the backward, as in training). For each of dq, dk, dv, FlashAttention's
// bound: max|ours - ref| <= 2 max|lowprec - ref| + atol, lowprec rounding P and dP to the input
// dtype; and the seeds' tolerance as a second check (|ours - ref| <= 1e-2 + 1e-2 |ref|) for
// unit-scale inputs, which at most 1 element in 10^4 (rounded up) may miss: bf16 gradients summed
// over ~100 keys land single elements at 0.011-0.014 (measured, 2026-11-25), while the bound above
// holds; for inputs x10 the gradients grow 10-100x and only the bound applies. Outputs are
// poisoned, inputs fresh each run. Head dims x dtypes x causal x GQA x batched/varlen (empty,
// 1-token and non-tile-multiple sequences, Sq != Sk both ways), inputs x10, the deterministic
// mode bitwise, the caller's workspace, 1000 calls without memory growth, the C ABI; a 32k-token
// causal sequence against the naive fp32 GPU reference; finite differences of kjit's own
// forward.
#include <gtest/gtest.h>

#include <dlpack/dlpack.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <tuple>

#include "kjit/attention.hpp"
#include "kjit/c_api.h"
#include "kjit/jit.hpp"
#include "ops/attention/flash_backward.hpp"
#include "tests/reference/attention_reference.hpp"
#include "tests/reference/naive_attention_gpu.hpp"
#include "tests/support/bf16_buffers.hpp"
#include "tests/support/dl_tensor.hpp"
#include "tests/support/dtype_bits.hpp"
#include "tests/support/forced_launch.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/isolated_cache.hpp"
#include "tests/support/seqlens.hpp"

namespace kjit::test {
namespace {

using attention::BackwardOptions;
using attention::Varlen;
using ops::FlashBackward;

struct BwdCase {
  DType dtype;
  int head_dim;
  bool causal;
  int heads_q, heads_k;
  bool varlen;
  std::vector<int> seqlens_q, seqlens_k;  // batched: every entry equal
  double input_scale = 1.0;
  bool deterministic = false;
  bool c_abi = false;
  bool own_workspace = false;
  // Through the family with the default config changed where these are set (-1: the op's
  // choice): the main loop (80 mma.sync, 90 wgmma), its query tile and stages, the dq strategy.
  int mainloop = -1, block_m = -1, stages = -1, dq_atomic = -1;
  bool forced() const { return mainloop >= 0 || block_m >= 0 || stages >= 0 || dq_atomic >= 0; }
};

void PrintTo(const BwdCase& c, std::ostream* os) {
  *os << dtype_name(c.dtype) << " D=" << c.head_dim << (c.causal ? " causal" : "")
      << " H=" << c.heads_q << "/" << c.heads_k << (c.varlen ? " varlen" : " batched") << " Sq/Sk=";
  for (std::size_t i = 0; i < c.seqlens_q.size(); ++i)
    *os << c.seqlens_q[i] << "/" << c.seqlens_k[i] << " ";
  if (c.input_scale != 1.0) *os << " x" << c.input_scale;
  if (c.deterministic) *os << " deterministic";
  if (c.c_abi) *os << " C ABI";
  if (c.own_workspace) *os << " caller's workspace";
  if (c.mainloop >= 0) *os << (c.mainloop == 90 ? " wgmma" : " mma.sync");
  if (c.block_m >= 0) *os << " block_m " << c.block_m;
  if (c.stages >= 0) *os << " stages " << c.stages;
  if (c.dq_atomic >= 0) *os << (c.dq_atomic ? " dq atomics" : " dq pass");
}

// The case's config when it forces one: the default with the case's changes (the block_n of a
// forced main loop is its head dim's).
FlashBackward::Config forced_config(const BwdCase& c, const FlashBackward::Problem& p) {
  FlashBackward::Config config = FlashBackward::default_config(p, arch::current());
  if (c.mainloop >= 0 && c.mainloop != config.mainloop) {
    config.mainloop = c.mainloop;
    config.block_m = 64;
    config.block_n =
        c.mainloop == FlashBackward::kMainloopWgmma ? (c.head_dim <= 128 ? 128 : 64) : 64;
    config.stages = c.mainloop == FlashBackward::kMainloopWgmma ? 2 : 1;
  }
  if (c.block_m >= 0) config.block_m = c.block_m;
  if (c.stages >= 0) config.stages = c.stages;
  if (c.dq_atomic >= 0) config.dq_atomic = c.dq_atomic;
  return config;
}

FlashBackward::Problem problem_of(const BwdCase& c) {
  const auto longest = [](const std::vector<int>& v) {
    return *std::max_element(v.begin(), v.end());
  };
  return {c.dtype,
          static_cast<std::int64_t>(c.seqlens_q.size()),
          c.heads_q,
          c.heads_k,
          c.head_dim,
          longest(c.seqlens_q),
          longest(c.seqlens_k),
          c.causal,
          c.deterministic};
}

// The case's gradients as raw bits [dq, dk, dv] (for determinism checks), after checking them.
std::vector<std::vector<std::uint16_t>> run_case(const BwdCase& c, unsigned seed,
                                                 bool check = true) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, c.input_scale);
  const int b = static_cast<int>(c.seqlens_q.size()), d = c.head_dim, hq = c.heads_q,
            hk = c.heads_k;
  const std::vector<int> cu_q = cumulative_seqlens(c.seqlens_q),
                         cu_k = cumulative_seqlens(c.seqlens_k);
  const int tq = cu_q.back(), tk = cu_k.back();
  const std::size_t nq = static_cast<std::size_t>(tq) * hq * d,
                    nk = static_cast<std::size_t>(tk) * hk * d;
  std::vector<std::uint16_t> q(nq), k(nk), v(nk), dout(nq);
  for (auto* buf : {&q, &k, &v, &dout}) {
    for (auto& x : *buf)
      x = to_bits(c.dtype, normal(rng));
  }
  auto device = [](const std::vector<std::uint16_t>& h) {
    DeviceBuffer buf(h.size() * 2 + 16);
    buf.upload(h.data(), h.size() * 2);
    return buf;
  };
  DeviceBuffer bq = device(q), bk = device(k), bv = device(v), bdout = device(dout);
  DeviceBuffer bout(nq * 2 + 16), blse(static_cast<std::size_t>(hq) * tq * 4 + 16),
      bdq(nq * 2 + 16), bdk(nk * 2 + 16), bdv(nk * 2 + 16), bcu_q(cu_q.size() * 4),
      bcu_k(cu_k.size() * 4);
  bcu_q.upload(cu_q.data(), bcu_q.size());
  bcu_k.upload(cu_k.data(), bcu_k.size());
  for (DeviceBuffer* out : {&bout, &blse, &bdq, &bdk, &bdv})
    out->fill_bytes(0xff);  // NaN: anything not written shows
  Stream stream;
  const long long sq0 = c.seqlens_q[0], sk0 = c.seqlens_k[0];
  auto view = [&](const DeviceBuffer& buf, int tokens, int heads, int seq) {
    return c.varlen ? TensorView(buf.data(), c.dtype, {tokens, heads, d})
                    : TensorView(buf.data(), c.dtype, {b, seq, heads, d});
  };
  const TensorView vq = view(bq, tq, hq, sq0), vk = view(bk, tk, hk, sk0),
                   vv = view(bv, tk, hk, sk0), vout = view(bout, tq, hq, sq0),
                   vdout = view(bdout, tq, hq, sq0), vdq = view(bdq, tq, hq, sq0),
                   vdk = view(bdk, tk, hk, sk0), vdv = view(bdv, tk, hk, sk0);
  const TensorView vlse = c.varlen ? TensorView(blse.data(), DType::Float32, {hq, tq})
                                   : TensorView(blse.data(), DType::Float32, {b, hq, sq0});
  const Varlen seqlens{TensorView(bcu_q.data(), DType::Int32, {b + 1}),
                       TensorView(bcu_k.data(), DType::Int32, {b + 1}), cu_q.data(), cu_k.data()};
  attention::ForwardOptions fo;
  fo.causal = c.causal;
  if (c.varlen) {
    attention::forward_varlen(vq, vk, vv, vout, vlse, seqlens, fo, stream.handle());
  } else {
    attention::forward(vq, vk, vv, vout, vlse, fo, stream.handle());
  }
  BackwardOptions o;
  o.causal = c.causal;
  o.deterministic = c.deterministic;
  DeviceBuffer workspace;
  if (c.own_workspace) {
    o.workspace_bytes = attention::backward_workspace_bytes(vq, o);
    workspace = DeviceBuffer(o.workspace_bytes);
    workspace.fill_bytes(0xff);
    o.workspace = workspace.data();
  }
  if (c.forced()) {
    ops::Call<FlashBackward> call =
        c.varlen ? FlashBackward::validate_varlen(vq, vk, vv, vout, vdout, vlse, vdq, vdk, vdv,
                                                  seqlens, o)
                 : FlashBackward::validate(vq, vk, vv, vout, vdout, vlse, vdq, vdk, vdv, o);
    const FlashBackward::Config config = forced_config(c, call.problem);
    const std::int64_t rows = c.varlen ? tq : static_cast<std::int64_t>(b) * sq0;
    workspace = DeviceBuffer(FlashBackward::workspace_bytes(rows, hq, d, c.deterministic));
    workspace.fill_bytes(0xff);
    FlashBackward::attach_workspace(call.args, workspace.data(), rows, d, c.deterministic);
    launch_forced(config, call, stream.handle());
  } else if (c.c_abi) {
    const DLTensor tq_ = dl(vq), tk_ = dl(vk), tv_ = dl(vv), to_ = dl(vout), tdo = dl(vdout),
                   tl = dl(vlse), tdq = dl(vdq), tdk = dl(vdk), tdv = dl(vdv),
                   tcq = dl(seqlens.cu_seqlens_q), tck = dl(seqlens.cu_seqlens_k);
    const kjit_status st =
        c.varlen ? kjit_attention_backward_varlen(&tq_, &tk_, &tv_, &to_, &tdo, &tl, &tdq, &tdk,
                                                  &tdv, &tcq, &tck, cu_q.data(), cu_k.data(), 0.f,
                                                  c.causal, c.deterministic, o.workspace,
                                                  o.workspace_bytes, stream.handle())
                 : kjit_attention_backward(&tq_, &tk_, &tv_, &to_, &tdo, &tl, &tdq, &tdk, &tdv, 0.f,
                                           c.causal, c.deterministic, o.workspace,
                                           o.workspace_bytes, stream.handle());
    EXPECT_EQ(st, KJIT_SUCCESS) << kjit_last_error();
  } else if (c.varlen) {
    attention::backward_varlen(vq, vk, vv, vout, vdout, vlse, vdq, vdk, vdv, seqlens, o,
                               stream.handle());
  } else {
    attention::backward(vq, vk, vv, vout, vdout, vlse, vdq, vdk, vdv, o, stream.handle());
  }
  stream.synchronize();
  std::vector<std::vector<std::uint16_t>> got(3);
  got[0].resize(nq);
  got[1].resize(nk);
  got[2].resize(nk);
  bdq.download(got[0].data(), nq * 2);
  bdk.download(got[1].data(), nk * 2);
  bdv.download(got[2].data(), nk * 2);
  if (!check) return got;

  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  const int group = hq / hk;
  const char* names[3] = {"dq", "dk", "dv"};
  double err[3] = {}, low_err[3] = {}, ref_max[3] = {};
  long mismatches[3] = {}, low_mismatches[3] = {}, total[3] = {};
  auto outside = [](double g, double r) { return std::abs(g - r) > 1e-2 + 1e-2 * std::abs(r); };
  auto at = [&](int token, int heads, int head) {
    return (static_cast<std::size_t>(token) * heads + head) * d;
  };
  for (int s = 0; s < b; ++s) {
    const int sq = c.seqlens_q[s], sk = c.seqlens_k[s];
    for (int kvh = 0; kvh < hk; ++kvh) {
      std::vector<double> ks(static_cast<std::size_t>(sk) * d), vs(ks.size());
      for (int j = 0; j < sk; ++j) {
        for (int x = 0; x < d; ++x) {
          ks[j * d + x] = from_bits(c.dtype, k[at(cu_k[s] + j, hk, kvh) + x]);
          vs[j * d + x] = from_bits(c.dtype, v[at(cu_k[s] + j, hk, kvh) + x]);
        }
      }
      std::vector<double> dk_ref(ks.size()), dv_ref(ks.size()), dk_low(ks.size()),
          dv_low(ks.size());
      for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
        std::vector<double> qs(static_cast<std::size_t>(sq) * d), dos(qs.size());
        for (int i = 0; i < sq; ++i) {
          for (int x = 0; x < d; ++x) {
            qs[i * d + x] = from_bits(c.dtype, q[at(cu_q[s] + i, hq, h) + x]);
            dos[i * d + x] = from_bits(c.dtype, dout[at(cu_q[s] + i, hq, h) + x]);
          }
        }
        const auto ref =
            kjit::reference::attention_backward(qs, ks, vs, dos, sq, sk, d, scale, c.causal);
        const auto low =
            kjit::reference::attention_backward(qs, ks, vs, dos, sq, sk, d, scale, c.causal,
                                                [&](double x) { return round_to(c.dtype, x); });
        for (std::size_t e = 0; e < ks.size(); ++e) {
          dk_ref[e] += ref.dk[e];
          dv_ref[e] += ref.dv[e];
          dk_low[e] += low.dk[e];
          dv_low[e] += low.dv[e];
        }
        for (int i = 0; i < sq; ++i) {
          for (int x = 0; x < d; ++x) {
            const double r = ref.dq[i * d + x];
            const double g = from_bits(c.dtype, got[0][at(cu_q[s] + i, hq, h) + x]);
            if (!std::isfinite(g)) {
              ADD_FAILURE() << "dq seq " << s << " row " << i << " head " << h << " = " << g;
              return got;
            }
            err[0] = std::max(err[0], std::abs(g - r));
            low_err[0] = std::max(low_err[0], std::abs(round_to(c.dtype, low.dq[i * d + x]) - r));
            ref_max[0] = std::max(ref_max[0], std::abs(r));
            mismatches[0] += outside(g, r);
            low_mismatches[0] += outside(round_to(c.dtype, low.dq[i * d + x]), r);
            ++total[0];
          }
        }
      }
      for (int t = 1; t < 3; ++t) {
        const std::vector<double>& ref = t == 1 ? dk_ref : dv_ref;
        const std::vector<double>& low = t == 1 ? dk_low : dv_low;
        for (int j = 0; j < sk; ++j) {
          for (int x = 0; x < d; ++x) {
            const double r = ref[j * d + x];
            const double g = from_bits(c.dtype, got[t][at(cu_k[s] + j, hk, kvh) + x]);
            if (!std::isfinite(g)) {
              ADD_FAILURE() << names[t] << " seq " << s << " key " << j << " head " << kvh << " = "
                            << g;
              return got;
            }
            err[t] = std::max(err[t], std::abs(g - r));
            low_err[t] = std::max(low_err[t], std::abs(round_to(c.dtype, low[j * d + x]) - r));
            ref_max[t] = std::max(ref_max[t], std::abs(r));
            mismatches[t] += outside(g, r);
            low_mismatches[t] += outside(round_to(c.dtype, low[j * d + x]), r);
            ++total[t];
          }
        }
      }
    }
  }
  for (int t = 0; t < 3; ++t) {
    EXPECT_LE(err[t], 2 * low_err[t] + 1e-3 * std::max(1.0, ref_max[t]))
        << names[t] << ": low-precision reference error " << low_err[t] << ", max |ref| "
        << ref_max[t];
    // The seed's rtol = atol = 1e-2, counted: at most 1 in 10000 elements outside, or twice as
    // many as the reference with rounded intermediates has (a GQA sum of many heads in bf16 can
    // put a few elements of any low-precision backward past 1e-2).
    if (c.input_scale == 1.0) {
      EXPECT_LE(mismatches[t], std::max((total[t] + 9999) / 10000, 2 * low_mismatches[t]))
          << names[t] << ": " << mismatches[t] << " of " << total[t]
          << " elements outside rtol = atol = 1e-2 (max error " << err[t]
          << "; the rounded reference has " << low_mismatches[t] << ")";
    }
  }
  return got;
}

class AttentionBackward : public SharedKernelStore,
                          public ::testing::WithParamInterface<BwdCase> {};

TEST_P(AttentionBackward, MatchesDoubleReference) {
  KJIT_REQUIRE_GPU();
  const BwdCase& c = GetParam();
  if (c.forced()) {
    const FlashBackward::Problem p = problem_of(c);
    if (!FlashBackward::valid(forced_config(c, p), p, arch::current()))
      GTEST_SKIP() << "the forced config does not run on " << arch::current().name();
  }
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("input seed " + std::to_string(seed));
  run_case(GetParam(), seed);
}

std::vector<BwdCase> cases() {
  std::vector<BwdCase> out;
  const std::vector<int> varlen_q = {1, 0, 77, 130, 64, 5}, varlen_k = {1, 3, 77, 200, 64, 0};
  for (DType dtype : {DType::Float16, DType::BFloat16}) {
    for (int d : {64, 96, 128, 192, 256}) {
      for (bool causal : {false, true}) {
        out.push_back({dtype, d, causal, 2, 1, false, {97, 97}, {97, 97}});
        if (dtype == DType::BFloat16)
          out.push_back({dtype, d, causal, 2, 2, true, varlen_q, varlen_k});
      }
    }
  }
  for (bool causal : {false, true}) {
    for (auto [hq, hk] : {std::pair{1, 1}, {8, 1}, {32, 8}, {5, 1}})
      out.push_back({DType::BFloat16, 128, causal, hq, hk, false, {70}, {70}});
    // Sq != Sk both ways (bottom-right causal).
    out.push_back({DType::BFloat16, 128, causal, 2, 1, false, {50, 50}, {130, 130}});
    out.push_back({DType::Float16, 64, causal, 2, 1, false, {130}, {50}});
  }
  // The other dq strategy than the default's, and where the default is the wgmma loop (sm_90a)
  // the mma.sync loop, on both layouts; the wgmma loop's other tiles: 64 query rows at hd 64
  // (one dQ block, alternating between the warpgroups), three stages.
  for (int d : {64, 128, 256}) {
    for (bool varlen : {false, true}) {
      BwdCase forced{DType::BFloat16, d, true, 4, 2, varlen, {100, 100}, {100, 100}};
      if (varlen) {
        forced.seqlens_q = {1, 130, 0, 77};
        forced.seqlens_k = {1, 200, 3, 77};
      }
      forced.dq_atomic = 0;
      out.push_back(forced);
      forced.dq_atomic = -1;
      forced.mainloop = 80;
      forced.dtype = DType::Float16;
      out.push_back(forced);
    }
  }
  for (auto [d, block_m, stages] :
       {std::tuple{64, 64, 2}, {64, 64, 3}, {64, 128, 3}, {128, 64, 3}}) {
    for (bool causal : {false, true}) {
      BwdCase forced{DType::BFloat16, d, causal, 6, 2, false, {333}, {333}};
      forced.mainloop = 90;
      forced.block_m = block_m;
      forced.stages = stages;
      out.push_back(forced);
    }
  }
  // One to five query tiles per block (heads x tiles), so that stages are used once, refilled
  // once, or twice.
  for (int d : {64, 128, 256}) {
    for (auto [hq, s] : {std::pair{1, 50}, {2, 50}, {3, 50}, {1, 300}})
      out.push_back({DType::BFloat16, d, false, hq, 1, false, {s}, {s}});
  }
  BwdCase big = {DType::BFloat16, 128, true, 2, 1, false, {96}, {96}, 10.0};
  out.push_back(big);
  big.dtype = DType::Float16;
  out.push_back(big);
  for (bool varlen : {false, true}) {
    BwdCase det{DType::BFloat16, 128, true, 4, 2, varlen, {100, 100}, {100, 100}};
    det.deterministic = true;
    out.push_back(det);
    BwdCase abi{DType::Float16, 64, false, 2, 1, varlen, {90, 33}, {90, 33}};
    if (!varlen) abi.seqlens_q = abi.seqlens_k = {90, 90};
    abi.c_abi = true;
    abi.own_workspace = varlen;
    out.push_back(abi);
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(All, AttentionBackward, ::testing::ValuesIn(cases()));

using AttentionBackwardRuns = IsolatedCache;

TEST_F(AttentionBackwardRuns, DeterministicModeIsBitwiseReproducible) {
  KJIT_REQUIRE_GPU();
  BwdCase c{DType::BFloat16, 128, true, 8, 2, false, {300}, {300}};
  c.deterministic = true;
  const unsigned seed = std::random_device{}();
  const auto first = run_case(c, seed, false);
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(run_case(c, seed, false), first) << "run " << i + 2 << " differs";
}

// One causal sequence of 32k tokens (hd 128, GQA 2/1) through the op's own path, against the
// naive fp32 GPU reference with FlashAttention's bound for each gradient (the low-precision
// reference rounds P and dP to bf16, as the CPU one does).
TEST_F(AttentionBackwardRuns, CausalSequenceOf32kTokensMatchesTheNaiveGpuReference) {
  KJIT_REQUIRE_GPU();
  const int s = 32768, hq = 2, hk = 1, d = 128;
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("input seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const std::size_t nq = std::size_t{1} * s * hq * d, nk = std::size_t{1} * s * hk * d;
  const Bf16Input q = random_bf16(nq, rng), k = random_bf16(nk, rng), v = random_bf16(nk, rng),
                  dout = random_bf16(nq, rng);
  DeviceBuffer out(nq * 2), lse(std::size_t{1} * hq * s * 4), dq(nq * 2), dk(nk * 2), dv(nk * 2);
  for (DeviceBuffer* b : {&dq, &dk, &dv})
    b->fill_bytes(0xff);
  const auto bf = DType::BFloat16;
  const TensorView vq(q.device.data(), bf, {1, s, hq, d}), vk(k.device.data(), bf, {1, s, hk, d}),
      vv(v.device.data(), bf, {1, s, hk, d}), vout(out.data(), bf, {1, s, hq, d}),
      vdout(dout.device.data(), bf, {1, s, hq, d}), vdq(dq.data(), bf, {1, s, hq, d}),
      vdk(dk.data(), bf, {1, s, hk, d}), vdv(dv.data(), bf, {1, s, hk, d}),
      vlse(lse.data(), DType::Float32, {1, hq, s});
  Stream stream;
  attention::ForwardOptions fo;
  fo.causal = true;
  attention::forward(vq, vk, vv, vout, vlse, fo, stream.handle());
  BackwardOptions o;
  o.causal = true;
  attention::backward(vq, vk, vv, vout, vdout, vlse, vdq, vdk, vdv, o, stream.handle());
  stream.synchronize();

  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  const auto forward = reference::naive_attention_gpu(q.device, k.device, v.device, s, s, hq, hk, d,
                                                      scale, true, false);
  const auto ref = reference::naive_attention_backward_gpu(
      q.device, k.device, v.device, dout.device, forward, s, s, hq, hk, d, scale, true, false);
  const auto low = reference::naive_attention_backward_gpu(
      q.device, k.device, v.device, dout.device, forward, s, s, hq, hk, d, scale, true, true);
  const char* names[3] = {"dq", "dk", "dv"};
  const DeviceBuffer* got[3] = {&dq, &dk, &dv};
  const std::vector<float>* refs[3] = {&ref.dq, &ref.dk, &ref.dv};
  const std::vector<float>* lows[3] = {&low.dq, &low.dk, &low.dv};
  for (int t = 0; t < 3; ++t) {
    const std::vector<float> ours = download_bf16(*got[t]);
    double err = 0, low_err = 0, ref_max = 0;
    for (std::size_t i = 0; i < ours.size(); ++i) {
      ASSERT_TRUE(std::isfinite(ours[i])) << names[t] << "[" << i << "]";
      const double r = (*refs[t])[i];
      err = std::max(err, std::abs(ours[i] - r));
      low_err = std::max(low_err, std::abs(round_to(bf, (*lows[t])[i]) - r));
      ref_max = std::max(ref_max, std::abs(r));
    }
    EXPECT_LE(err, 2 * low_err + 1e-3 * std::max(1.0, ref_max))
        << names[t] << ": low-precision reference error " << low_err << ", max |ref| " << ref_max;
  }
}

// The gradients are those of the forward kjit computes: for f = sum(dO * O(q, k, v)), with O from
// kjit's forward on bf16 inputs, the central difference of f along a random bf16 step of each
// input matches <gradient, step> within the rounding of O (each evaluation of f is off by at most
// sum |dO| |O| 2^-9) and 2% of the product.
TEST_F(AttentionBackwardRuns, GradientsAreThoseOfTheForward) {
  KJIT_REQUIRE_GPU();
  const int s = 64, h = 1, d = 64;
  const std::size_t n = std::size_t{1} * s * h * d;
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("input seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const auto bf = DType::BFloat16;
  Bf16Input inputs[3] = {random_bf16(n, rng), random_bf16(n, rng), random_bf16(n, rng)};  // q, k, v
  const Bf16Input dout = random_bf16(n, rng);
  DeviceBuffer out(n * 2), lse(std::size_t{1} * s * 4),
      grads[3] = {DeviceBuffer(n * 2), DeviceBuffer(n * 2), DeviceBuffer(n * 2)};
  const auto view = [&](const DeviceBuffer& b) { return TensorView(b.data(), bf, {1, s, h, d}); };
  const TensorView vlse(lse.data(), DType::Float32, {1, h, s});
  attention::ForwardOptions fo;
  fo.causal = true;
  Stream stream;
  const std::vector<float> dout_values = download_bf16(dout.device);
  // f and its rounding bound, for the inputs as they are on the device now.
  const auto f = [&](double* bound) {
    attention::forward(view(inputs[0].device), view(inputs[1].device), view(inputs[2].device),
                       view(out), vlse, fo, stream.handle());
    stream.synchronize();
    const std::vector<float> o = download_bf16(out);
    double sum = 0;
    *bound = 0;
    for (std::size_t i = 0; i < n; ++i) {
      sum += static_cast<double>(dout_values[i]) * o[i];
      *bound += std::abs(static_cast<double>(dout_values[i]) * o[i]) * std::ldexp(1.0, -8);
    }
    return sum;
  };
  double unused = 0;
  f(&unused);
  BackwardOptions o;
  o.causal = true;
  attention::backward(view(inputs[0].device), view(inputs[1].device), view(inputs[2].device),
                      view(out), view(dout.device), vlse, view(grads[0]), view(grads[1]),
                      view(grads[2]), o, stream.handle());
  stream.synchronize();
  std::uniform_int_distribution<int> sign(0, 1);
  const char* names[3] = {"q", "k", "v"};
  for (int t = 0; t < 3; ++t) {
    const std::vector<float> grad = download_bf16(grads[t]);
    const std::vector<std::uint16_t> base = inputs[t].host;
    std::vector<std::uint16_t> plus(n), minus(n);
    double predicted = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double x = from_bits(bf, base[i]), step = sign(rng) ? 1.0 / 32 : -1.0 / 32;
      plus[i] = to_bits(bf, x + step);
      minus[i] = to_bits(bf, x - step);
      predicted += grad[i] * (from_bits(bf, plus[i]) - from_bits(bf, minus[i]));
    }
    double bound_plus = 0, bound_minus = 0;
    inputs[t].device.upload(plus.data(), n * 2);
    const double f_plus = f(&bound_plus);
    inputs[t].device.upload(minus.data(), n * 2);
    const double f_minus = f(&bound_minus);
    inputs[t].device.upload(base.data(), n * 2);
    EXPECT_NEAR(f_plus - f_minus, predicted, bound_plus + bound_minus + 0.02 * std::abs(predicted))
        << "d/d" << names[t];
  }
}

TEST_F(AttentionBackwardRuns, RepeatedCallsDoNotGrowDeviceMemory) {
  KJIT_REQUIRE_GPU();
  const int b = 2, s = 128, h = 4, d = 64;
  const std::size_t n = static_cast<std::size_t>(b) * s * h * d;
  DeviceBuffer q(n * 2), k(n * 2), v(n * 2), out(n * 2), dout(n * 2), lse(b * h * s * 4), dq(n * 2),
      dk(n * 2), dv(n * 2);
  for (DeviceBuffer* buf : {&q, &k, &v, &dout})
    buf->fill_bytes(0x3c);  // 1.0-ish halves: finite everywhere
  auto t = [&](DeviceBuffer& buf) { return TensorView(buf.data(), DType::Float16, {b, s, h, d}); };
  const TensorView vlse(lse.data(), DType::Float32, {b, h, s});
  Stream stream;
  attention::forward(t(q), t(k), t(v), t(out), vlse, {}, stream.handle());
  auto call = [&] {
    attention::backward(t(q), t(k), t(v), t(out), t(dout), vlse, t(dq), t(dk), t(dv), {},
                        stream.handle());
  };
  for (int i = 0; i < 10; ++i)
    call();
  stream.synchronize();
  std::size_t free_before = 0, free_after = 0;
  memory_info(&free_before, nullptr);
  for (int i = 0; i < 1000; ++i)
    call();
  stream.synchronize();
  memory_info(&free_after, nullptr);
  EXPECT_LE(free_before - std::min(free_before, free_after), std::size_t{2} << 20)
      << "free device memory fell from " << free_before << " to " << free_after;
}

TEST_F(AttentionBackwardRuns, BadInputIsRefused) {
  KJIT_REQUIRE_GPU();
  const int b = 1, s = 16, h = 2, d = 64;
  const std::size_t n = static_cast<std::size_t>(b) * s * h * d;
  DeviceBuffer q(n * 2), lse(b * h * s * 4), small(64);
  const TensorView t(q.data(), DType::BFloat16, {b, s, h, d});
  const TensorView vlse(lse.data(), DType::Float32, {b, h, s});
  const TensorView wrong_dtype(q.data(), DType::Float16, {b, s, h, d});
  const TensorView wrong_shape(q.data(), DType::BFloat16, {b, s - 1, h, d});
  auto refused = [&](const TensorView& dq, const TensorView& l, const BackwardOptions& o,
                     const char* expected) {
    try {
      attention::backward(t, t, t, t, t, l, dq, t, t, o, nullptr);
      ADD_FAILURE() << "accepted: " << expected;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  };
  refused(wrong_dtype, vlse, {}, "dq");
  refused(wrong_shape, vlse, {}, "dq must have q's shape");
  refused(t, TensorView(lse.data(), DType::Float32, {b, h, s + 1}), {}, "lse must be");
  BackwardOptions tiny;
  tiny.workspace = small.data();
  tiny.workspace_bytes = 64;
  refused(t, vlse, tiny, "the workspace holds 64 bytes");
}

}  // namespace
}  // namespace kjit::test

// Zigzag attention over the world's ranks (mpirun -n W, W = 1, 2, 4, 8), as the reference fork
// tests it: rank 0 draws q, k, v and dout (bf16) for the global sequences and runs kjit's own
// single-GPU varlen forward and backward on them; inputs, dout and the reference results are
// broadcast; every rank runs zigzag_forward and zigzag_backward on its zigzag slice and compares
// its slice of the reference with the fork's asserts: out max < 0.01 and mean < 1e-5, dq max
// < 0.01 and mean < 1e-5, dk and dv max < 0.1 and mean < 3e-4 or, where short sequences make the
// gradients large, one bf16 step of their mean magnitude (the LSE within 1e-4). Small cases
// also meet FlashAttention's bound against the fp64 CPU reference for out, lse and dq (dk and dv
// are summed across ranks in bf16, an extra rounding the bound does not model: they keep the
// fork's tolerances). Each rank also runs its two chunks as two separate forward_varlen calls
// and compares (rtol = atol = 1e-3): the grouped path must compute what the fork's two calls do.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kjit/attention.hpp"
#include "kjit/comm.hpp"
#include "kjit/device.hpp"
#include "kjit/zigzag.hpp"
#include "tests/dist/dist_world.hpp"
#include "tests/reference/attention_reference.hpp"
#include "tests/reference/zigzag_reference.hpp"
#include "tests/support/bf16_buffers.hpp"
#include "tests/support/dtype_bits.hpp"
#include "tests/support/seqlens.hpp"
#include "util/half_float.hpp"

namespace kjit::test {
namespace {

struct Scenario {
  const char* name;
  std::vector<int> lengths;  // global sequences: multiples of 16, so any W up to 8 divides them
  int hq = 8, hk = 2, d = 128;
  int heads_k_stride = 0;  // 0: all K/V heads in one step
  bool causal = true;
  bool fp64 = false;   // also against the fp64 CPU reference
  int only_world = 0;  // run at this world size only (0: every one)
};

void PrintTo(const Scenario& s, std::ostream* os) {
  *os << s.name;
}

std::vector<Scenario> scenarios() {
  std::vector<Scenario> out = {
      // The fork's benchmark cu_seqlens sets (8k tokens) and its test's shape family.
      {"one_8k", {8192}},
      {"fork_256_7392_544", {256, 7392, 544}},
      {"two_4k", {4096, 4096}},
      {"fork_five", {3104, 3200, 1600, 160, 128}},
      // GQA 32/8 at Llama-3-8B's head dim, every heads_k_stride.
      {"gqa32_8_stride_all", {8192}, 32, 8, 128, 0},
      {"gqa32_8_stride1", {256, 7392, 544}, 32, 8, 128, 1},
      {"gqa32_8_stride2", {4096, 4096}, 32, 8, 128, 2},
      {"mha_stride1", {2048, 1024}, 4, 4, 64, 1},
      // Many short sequences, one empty; not causal; head dims 64 and 256.
      {"many_short",
       {16, 32, 48, 0, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 16, 32, 48}},
      {"not_causal", {1024, 3072}, 8, 2, 128, 0, false},
      {"hd64", {2048, 512}, 8, 8, 64, 2},
      {"hd256", {2048}, 4, 2, 256},
      // Small enough for the fp64 CPU reference.
      {"fp64_small", {128, 256}, 2, 1, 64, 0, true, true},
      {"fp64_gqa", {64, 192, 32}, 4, 2, 128, 1, true, true},
      {"fp64_not_causal", {96, 160}, 2, 2, 64, 0, false, true},
      // One 128k-token sequence across 8 ranks.
      {"one_128k", {131072}, 4, 1, 128, 0, true, false, 8},
  };
  return out;
}

// Global bf16 data, the same on every rank after the broadcast from rank 0.
struct Global {
  std::vector<std::uint16_t> bits;
  DeviceBuffer device;
  explicit Global(std::size_t n) : bits(n), device(std::max<std::size_t>(2, n * 2)) {}
  void broadcast(comm::Communicator& comm, StreamHandle stream) {
    comm.broadcast({device.data(), bits.size(), DType::BFloat16},
                   {device.data(), bits.size(), DType::BFloat16}, 0, stream);
  }
  void download() { device.download(bits.data(), bits.size() * 2); }
};

std::vector<float> to_float(const std::vector<std::uint16_t>& bits) {
  std::vector<float> out(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i)
    out[i] = bf16_to_float(bits[i]);
  return out;
}

// Rows [T, width] -> the rows of `to` (tokens by global index).
template <class T>
std::vector<T> rows_for(const std::vector<T>& global, const reference::TokenRows& to,
                        std::size_t width) {
  reference::TokenRows identity(global.size() / std::max<std::size_t>(width, 1));
  for (std::size_t i = 0; i < identity.size(); ++i)
    identity[i] = static_cast<std::int64_t>(i);
  return reference::move_rows(global, identity, to, width);
}

// lse [H, T] -> [H, rows of `to`].
std::vector<float> lse_for(const std::vector<float>& lse, int heads,
                           const reference::TokenRows& to) {
  const std::size_t tokens = lse.size() / heads;
  std::vector<float> out(static_cast<std::size_t>(heads) * to.size());
  for (int h = 0; h < heads; ++h) {
    for (std::size_t i = 0; i < to.size(); ++i)
      out[h * to.size() + i] = lse[h * tokens + static_cast<std::size_t>(to[i])];
  }
  return out;
}

struct Diff {
  double max = 0, mean = 0, magnitude = 0;  // magnitude: mean |want|
};
Diff diff(const std::vector<float>& got, const std::vector<float>& want) {
  Diff d;
  double sum = 0, size = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double e = std::abs(static_cast<double>(got[i]) - want[i]);
    if (!std::isfinite(got[i])) return {INFINITY, INFINITY, 0};
    d.max = std::max(d.max, e);
    sum += e;
    size += std::abs(static_cast<double>(want[i]));
  }
  d.mean = got.empty() ? 0 : sum / static_cast<double>(got.size());
  d.magnitude = got.empty() ? 0 : size / static_cast<double>(got.size());
  return d;
}

std::vector<float> download_floats(const DeviceBuffer& b, std::size_t n) {
  std::vector<float> out(n);
  b.download(out.data(), n * 4);
  return out;
}

class Zigzag : public ::testing::TestWithParam<Scenario> {};

TEST_P(Zigzag, SlicesMatchTheSingleGpuAttention) {
  if (!has_gpu()) GTEST_SKIP() << "needs a CUDA GPU (device buffers)";
  comm::Communicator& comm = world();
  const int w = comm.size(), r = comm.rank();
  const Scenario& sc = GetParam();
  if (sc.only_world && sc.only_world != w)
    GTEST_SKIP() << sc.name << " runs at W = " << sc.only_world << " only";
  const std::vector<int> cu = cumulative_seqlens(sc.lengths);
  const int b = static_cast<int>(sc.lengths.size());
  const std::size_t t = static_cast<std::size_t>(cu.back());
  const std::size_t q_width = static_cast<std::size_t>(sc.hq) * sc.d,
                    k_width = static_cast<std::size_t>(sc.hk) * sc.d;
  const float scale = 1.f / std::sqrt(static_cast<float>(sc.d));
  Stream stream;

  // Rank 0: inputs and the single-GPU reference; then everything is broadcast.
  Global q(t * q_width), k(t * k_width), v(t * k_width), dout(t * q_width), out(t * q_width),
      dq(t * q_width), dk(t * k_width), dv(t * k_width);
  DeviceBuffer lse(std::max<std::size_t>(4, t * sc.hq * 4)), cu_device(cu.size() * 4);
  cu_device.upload(cu.data(), cu_device.size());
  const TensorView cu_view(cu_device.data(), DType::Int32, {b + 1});
  const auto packed = [&](Global& g, int heads) {
    return TensorView(g.device.data(), DType::BFloat16,
                      {static_cast<std::int64_t>(t), heads, sc.d});
  };
  const TensorView lse_view(lse.data(), DType::Float32, {sc.hq, static_cast<std::int64_t>(t)});
  if (r == 0) {
    std::mt19937 rng(static_cast<std::uint32_t>(run_seed() ^ std::hash<std::string>()(sc.name)));
    std::normal_distribution<float> normal(0.f, 1.f);
    for (Global* g : {&q, &k, &v, &dout}) {
      for (auto& x : g->bits)
        x = float_to_bf16(normal(rng));
      g->device.upload(g->bits.data(), g->bits.size() * 2);
    }
    const attention::Varlen seqlens{cu_view, cu_view, cu.data(), cu.data()};
    attention::ForwardOptions fo;
    fo.softmax_scale = scale;
    fo.causal = sc.causal;
    attention::forward_varlen(packed(q, sc.hq), packed(k, sc.hk), packed(v, sc.hk),
                              packed(out, sc.hq), lse_view, seqlens, fo, stream.handle());
    attention::BackwardOptions bo;
    bo.softmax_scale = scale;
    bo.causal = sc.causal;
    attention::backward_varlen(packed(q, sc.hq), packed(k, sc.hk), packed(v, sc.hk),
                               packed(out, sc.hq), packed(dout, sc.hq), lse_view, packed(dq, sc.hq),
                               packed(dk, sc.hk), packed(dv, sc.hk), seqlens, bo, stream.handle());
  }
  for (Global* g : {&q, &k, &v, &dout, &out, &dq, &dk, &dv})
    g->broadcast(comm, stream.handle());
  comm.broadcast({lse.data(), t * sc.hq, DType::Float32}, {lse.data(), t * sc.hq, DType::Float32},
                 0, stream.handle());
  comm.synchronize(stream.handle());
  for (Global* g : {&q, &k, &v, &dout, &out, &dq, &dk, &dv})
    g->download();
  const std::vector<float> ref_lse = download_floats(lse, t * sc.hq);

  // This rank's slice of everything.
  const reference::TokenRows mine = reference::zigzag_local_rows(cu, w, r);
  const std::size_t tl = mine.size();
  ASSERT_EQ(tl * w, t);
  const auto upload_local = [&](const Global& g, std::size_t width) {
    const std::vector<std::uint16_t> local = rows_for(g.bits, mine, width);
    DeviceBuffer d(std::max<std::size_t>(2, local.size() * 2));
    d.upload(local.data(), local.size() * 2);
    return d;
  };
  const DeviceBuffer lq = upload_local(q, q_width), lk = upload_local(k, k_width),
                     lv = upload_local(v, k_width), ldout = upload_local(dout, q_width);
  DeviceBuffer lout(std::max<std::size_t>(2, tl * q_width * 2)),
      llse(std::max<std::size_t>(4, tl * sc.hq * 4)), ldq(lout.size()),
      ldk(std::max<std::size_t>(2, tl * k_width * 2)), ldv(ldk.size());
  for (DeviceBuffer* x : {&lout, &llse, &ldq, &ldk, &ldv})
    x->fill_bytes(0xff);  // NaN
  const auto local = [&](const DeviceBuffer& d, int heads) {
    return TensorView(d.data(), DType::BFloat16, {static_cast<std::int64_t>(tl), heads, sc.d});
  };
  const TensorView llse_view(llse.data(), DType::Float32, {sc.hq, static_cast<std::int64_t>(tl)});
  const cp::ZigzagSequences seqs{cu_view, cu.data()};
  cp::ZigzagOptions options;
  options.softmax_scale = scale;
  options.causal = sc.causal;
  options.heads_k_stride = sc.heads_k_stride;
  cp::zigzag_forward(comm, local(lq, sc.hq), local(lk, sc.hk), local(lv, sc.hk), local(lout, sc.hq),
                     llse_view, seqs, options, stream.handle());
  cp::zigzag_backward(comm, local(lq, sc.hq), local(lk, sc.hk), local(lv, sc.hk),
                      local(lout, sc.hq), local(ldout, sc.hq), llse_view, local(ldq, sc.hq),
                      local(ldk, sc.hk), local(ldv, sc.hk), seqs, options, stream.handle());
  comm.synchronize(stream.handle());

  const std::vector<float> got_out = download_bf16(lout), got_dq = download_bf16(ldq),
                           got_dk = download_bf16(ldk), got_dv = download_bf16(ldv),
                           got_lse = download_floats(llse, tl * sc.hq);
  const Diff d_out = diff(got_out, rows_for(to_float(out.bits), mine, q_width));
  const Diff d_dq = diff(got_dq, rows_for(to_float(dq.bits), mine, q_width));
  const Diff d_dk = diff(got_dk, rows_for(to_float(dk.bits), mine, k_width));
  const Diff d_dv = diff(got_dv, rows_for(to_float(dv.bits), mine, k_width));
  std::vector<float> want_lse = lse_for(ref_lse, sc.hq, mine), lse_got = got_lse;
  double lse_err = 0;
  for (std::size_t i = 0; i < want_lse.size(); ++i) {
    if (std::isinf(want_lse[i])) {
      EXPECT_TRUE(std::isinf(lse_got[i]) && lse_got[i] < 0) << "lse " << i << " = " << lse_got[i];
    } else {
      lse_err = std::max(lse_err, std::abs(static_cast<double>(lse_got[i]) - want_lse[i]));
    }
  }
  std::printf(
      "[ zigzag   ] %s rank %d/%d: out %.3g/%.3g dq %.3g/%.3g dk %.3g/%.3g dv %.3g/%.3g "
      "(max/mean), mean |dk| %.3g |dv| %.3g, lse %.3g\n",
      sc.name, r, w, d_out.max, d_out.mean, d_dq.max, d_dq.mean, d_dk.max, d_dk.mean, d_dv.max,
      d_dv.mean, d_dk.magnitude, d_dv.magnitude, lse_err);
  EXPECT_LT(d_out.max, 0.01) << "rank " << r;
  EXPECT_LT(d_out.mean, 1e-5) << "rank " << r;
  EXPECT_LT(d_dq.max, 0.01) << "rank " << r;
  EXPECT_LT(d_dq.mean, 1e-5) << "rank " << r;
  EXPECT_LT(d_dk.max, 0.1) << "rank " << r;
  // dk and dv are summed over the ranks from partials each rounded to bf16 (as the fork's are):
  // its 3e-4 on its long sequences' small gradients, at most one bf16 step (2^-8) of their mean
  // magnitude where short sequences make them large.
  const double dk_mean = std::max(3e-4, std::ldexp(d_dk.magnitude, -8)),
               dv_mean = std::max(3e-4, std::ldexp(d_dv.magnitude, -8));
  EXPECT_LT(d_dk.mean, dk_mean) << "rank " << r;
  EXPECT_LT(d_dv.max, 0.1) << "rank " << r;
  EXPECT_LT(d_dv.mean, dv_mean) << "rank " << r;
  EXPECT_LT(lse_err, 1e-4) << "rank " << r;

  // The fork's two calls: each chunk kind over its prefix of the (gathered) keys.
  {
    const reference::TokenRows split = reference::zigzag_split_rows(cu, w, r);
    const std::size_t half = tl / 2;
    std::vector<float> separate(tl * q_width);
    for (int kind = 0; kind < 2; ++kind) {
      const int chunk = kind == 0 ? r : 2 * w - 1 - r;
      const int key_chunks = sc.causal ? chunk + 1 : 2 * w;
      const reference::TokenRows q_rows(split.begin() + kind * half,
                                        split.begin() + (kind + 1) * half);
      const reference::TokenRows k_rows = reference::zigzag_chunk_rows(cu, w, 0, key_chunks);
      std::vector<int> cu_q(b + 1), cu_k(b + 1);
      for (int s = 0; s <= b; ++s) {
        cu_q[s] = cu[s] / (2 * w);
        cu_k[s] = key_chunks * cu_q[s];
      }
      const auto upload = [](const std::vector<std::uint16_t>& x) {
        DeviceBuffer d(std::max<std::size_t>(2, x.size() * 2));
        d.upload(x.data(), x.size() * 2);
        return d;
      };
      const DeviceBuffer sq = upload(rows_for(q.bits, q_rows, q_width)),
                         sk = upload(rows_for(k.bits, k_rows, k_width)),
                         sv = upload(rows_for(v.bits, k_rows, k_width));
      DeviceBuffer so(std::max<std::size_t>(2, half * q_width * 2)), scu_q(cu_q.size() * 4),
          scu_k(cu_k.size() * 4);
      scu_q.upload(cu_q.data(), scu_q.size());
      scu_k.upload(cu_k.data(), scu_k.size());
      const auto rows = [&](const DeviceBuffer& d, std::size_t n, int heads) {
        return TensorView(d.data(), DType::BFloat16, {static_cast<std::int64_t>(n), heads, sc.d});
      };
      attention::ForwardOptions fo;
      fo.softmax_scale = scale;
      fo.causal = sc.causal;
      attention::forward_varlen(
          rows(sq, half, sc.hq), rows(sk, k_rows.size(), sc.hk), rows(sv, k_rows.size(), sc.hk),
          rows(so, half, sc.hq), TensorView(),
          {TensorView(scu_q.data(), DType::Int32, {b + 1}),
           TensorView(scu_k.data(), DType::Int32, {b + 1}), cu_q.data(), cu_k.data()},
          fo, stream.handle());
      stream.synchronize();
      const std::vector<float> part = download_bf16(so);
      // Its rows in the rank's local order (the other kind's rows are zeros: the two add up).
      const std::vector<float> placed = reference::move_rows(part, q_rows, mine, q_width);
      for (std::size_t i = 0; i < separate.size(); ++i)
        separate[i] += placed[i];
    }
    long outside = 0;
    for (std::size_t i = 0; i < separate.size(); ++i)
      outside += std::abs(got_out[i] - separate[i]) > 1e-3 + 1e-3 * std::abs(separate[i]);
    // One bf16 step is 2^-9 of |x| in [0.25, 0.5), above 1e-3: allow the count the grouped
    // attention's own test allows against separate calls, 1 in 10^4.
    const long allowed = static_cast<long>((separate.size() + 9999) / 10000);
    EXPECT_LE(outside, allowed) << "rank " << r << ": " << outside
                                << " elements outside rtol = atol = 1e-3 of the two separate calls";
  }

  if (!sc.fp64) return;
  // FlashAttention's bound against fp64 for out, lse and dq, per sequence and head.
  const std::vector<float> gq = to_float(q.bits), gk = to_float(k.bits), gv = to_float(v.bits),
                           gdout = to_float(dout.bits);
  std::vector<double> ref_out(t * q_width), low_out(t * q_width), ref_dq(t * q_width),
      low_dq(t * q_width), ref_lse64(t * sc.hq);
  const auto round_bf16 = [](double x) { return round_to(DType::BFloat16, x); };
  for (int s = 0; s < b; ++s) {
    const int len = sc.lengths[s];
    for (int h = 0; h < sc.hq && len > 0; ++h) {
      const int kvh = h / (sc.hq / sc.hk);
      std::vector<double> qs(len * sc.d), ks(len * sc.d), vs(len * sc.d), ds(len * sc.d);
      for (int i = 0; i < len; ++i) {
        for (int x = 0; x < sc.d; ++x) {
          const std::size_t row = static_cast<std::size_t>(cu[s] + i);
          qs[i * sc.d + x] = gq[row * q_width + h * sc.d + x];
          ds[i * sc.d + x] = gdout[row * q_width + h * sc.d + x];
          ks[i * sc.d + x] = gk[row * k_width + kvh * sc.d + x];
          vs[i * sc.d + x] = gv[row * k_width + kvh * sc.d + x];
        }
      }
      const auto ref = reference::attention(qs, ks, vs, len, len, sc.d, scale, sc.causal);
      const auto low =
          reference::attention(qs, ks, vs, len, len, sc.d, scale, sc.causal, round_bf16);
      const auto grad =
          reference::attention_backward(qs, ks, vs, ds, len, len, sc.d, scale, sc.causal);
      const auto low_grad = reference::attention_backward(qs, ks, vs, ds, len, len, sc.d, scale,
                                                          sc.causal, round_bf16);
      for (int i = 0; i < len; ++i) {
        const std::size_t row = static_cast<std::size_t>(cu[s] + i);
        ref_lse64[h * t + row] = ref.lse[i];
        for (int x = 0; x < sc.d; ++x) {
          ref_out[row * q_width + h * sc.d + x] = ref.out[i * sc.d + x];
          low_out[row * q_width + h * sc.d + x] = round_bf16(low.out[i * sc.d + x]);
          ref_dq[row * q_width + h * sc.d + x] = grad.dq[i * sc.d + x];
          low_dq[row * q_width + h * sc.d + x] = round_bf16(low_grad.dq[i * sc.d + x]);
        }
      }
    }
  }
  const std::vector<double> mine_ref_out = rows_for(ref_out, mine, q_width),
                            mine_ref_dq = rows_for(ref_dq, mine, q_width);
  // The bound's scale, the low-precision reference's error, over the whole problem as
  // FlashAttention's test takes it (and as the single-GPU backward test does): on one rank's rows
  // alone it can fall below the error of the single-GPU result this rank equals bit for bit.
  double err = 0, low_err = 0, dq_err = 0, dq_low_err = 0, dq_max = 0;
  for (std::size_t i = 0; i < ref_out.size(); ++i) {
    low_err = std::max(low_err, std::abs(low_out[i] - ref_out[i]));
    dq_low_err = std::max(dq_low_err, std::abs(low_dq[i] - ref_dq[i]));
    dq_max = std::max(dq_max, std::abs(ref_dq[i]));
  }
  for (std::size_t i = 0; i < mine_ref_out.size(); ++i) {
    err = std::max(err, std::abs(got_out[i] - mine_ref_out[i]));
    dq_err = std::max(dq_err, std::abs(got_dq[i] - mine_ref_dq[i]));
  }
  EXPECT_LE(err, 2 * low_err + 1e-5) << "rank " << r << ": out against fp64";
  EXPECT_LE(dq_err, 2 * dq_low_err + 1e-3 * std::max(1.0, dq_max)) << "rank " << r << ": dq";
  for (int h = 0; h < sc.hq; ++h) {
    for (std::size_t i = 0; i < tl; ++i) {
      const double want = ref_lse64[h * t + static_cast<std::size_t>(mine[i])];
      EXPECT_NEAR(got_lse[h * tl + i], want, 1e-5 * (1 + std::abs(want)))
          << "rank " << r << " lse head " << h << " row " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fork, Zigzag, ::testing::ValuesIn(scenarios()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace kjit::test

// Attention forward on the GPU against the fp64 CPU reference, with FlashAttention's bound:
// max|out - ref| <= 2 max|lowprec - ref| + atol, where lowprec rounds P (and the output) to the
// input dtype; the same for LSE in fp32. Head dims x dtypes x causal x GQA x batched/varlen
// (empty, 1-token and non-tile-multiple sequences, Sq != Sk), inputs x10, bitwise reruns.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "kjit/attention.hpp"
#include "kjit/c_api.h"
#include "kjit/jit.hpp"
#include "ops/attention/flash_forward.hpp"
#include "tests/reference/attention_reference.hpp"
#include "tests/support/dtype_bits.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/isolated_cache.hpp"
#include "tests/support/seqlens.hpp"
#include "util/half_float.hpp"

namespace kjit::test {
namespace {

using attention::forward;
using attention::forward_varlen;
using attention::ForwardOptions;
using attention::Varlen;
using ops::FlashForward;

struct AttnCase {
  DType dtype;
  int head_dim;
  bool causal;
  int heads_q, heads_k;
  bool varlen;
  std::vector<int> seqlens_q, seqlens_k;  // batched: every entry equal
  double input_scale = 1.0;
  // 0: the op's choice for this device (kjit::attention::forward); kMainloopMma: the mma.sync
  // kernel forced through the plan, so that sm_90a machines test the sm_80 main loop too;
  // kMainloopWgmma: the sm_90a loop the op does not choose up to hd 192, forced likewise;
  // kMainloopWgmmaWsOverlap: the warp-specialised loop with the intra-warpgroup overlap;
  // kMainloopWgmmaWsPersistent: that over persistent blocks; any warp-specialised loop with
  // ws_block_n: another key tile (FA3's).
  std::int64_t mainloop = 0;
  std::int64_t ws_block_n = 0;
};

void PrintTo(const AttnCase& c, std::ostream* os) {
  *os << dtype_name(c.dtype) << " D=" << c.head_dim << (c.causal ? " causal" : "")
      << " H=" << c.heads_q << "/" << c.heads_k << (c.varlen ? " varlen" : " batched") << " Sq/Sk=";
  for (std::size_t i = 0; i < c.seqlens_q.size(); ++i)
    *os << c.seqlens_q[i] << "/" << c.seqlens_k[i] << " ";
  if (c.input_scale != 1.0) *os << " x" << c.input_scale;
  if (c.mainloop) *os << " mainloop " << c.mainloop;
  if (c.ws_block_n) *os << " block_n " << c.ws_block_n;
}

// A main loop other than the op's choice, launched through the family as the op would launch its
// own: mma.sync with sm_80's default config, the wgmma loop with its usual tile, or a
// warp-specialised loop with its usual tile or ws_block_n keys a tile.
void run_forced(std::int64_t mainloop, std::int64_t ws_block_n, const ops::Call<FlashForward>& call,
                StreamHandle stream) {
  FlashForward::Config config{mainloop};
  if (config.warp_specialized()) {
    config = FlashForward::warp_specialized_config(call.problem);
    config.mainloop = mainloop;
    if (ws_block_n) config.block_n = ws_block_n;
  } else {
    config = mainloop == FlashForward::kMainloopWgmma
                 ? FlashForward::wgmma_config(call.problem)
                 : FlashForward::default_config(call.problem, "sm_80");
  }
  ASSERT_TRUE(FlashForward::valid(config, call.problem, arch::current()));
  const Program program = load(FlashForward::spec(config, call.problem, arch::current()));
  FlashForward::launch(program, config, call.problem, call.args, stream);
}

// Runs the case; returns the raw output bytes (for determinism checks).
std::vector<std::uint16_t> run_case(const AttnCase& c, unsigned seed, bool check = true) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, c.input_scale);
  const int b = static_cast<int>(c.seqlens_q.size()), d = c.head_dim, hq = c.heads_q,
            hk = c.heads_k;
  const std::vector<int> cu_q = cumulative_seqlens(c.seqlens_q),
                         cu_k = cumulative_seqlens(c.seqlens_k);
  const int tq = cu_q.back(), tk = cu_k.back();
  // Token-major storage [T, H, D] for both layouts (batched views it as [B, S, H, D]).
  std::vector<std::uint16_t> q(static_cast<std::size_t>(tq) * hq * d),
      k(static_cast<std::size_t>(tk) * hk * d), v(k.size());
  for (auto* buf : {&q, &k, &v}) {
    for (auto& x : *buf)
      x = to_bits(c.dtype, normal(rng));
  }
  DeviceBuffer dq(q.size() * 2 + 16), dk(k.size() * 2 + 16), dv(v.size() * 2 + 16),
      dout(q.size() * 2 + 16), dlse(static_cast<std::size_t>(hq) * tq * 4 + 16),
      dcu_q(cu_q.size() * 4), dcu_k(cu_k.size() * 4);
  dq.upload(q.data(), q.size() * 2);
  dk.upload(k.data(), k.size() * 2);
  dv.upload(v.data(), v.size() * 2);
  dcu_q.upload(cu_q.data(), dcu_q.size());
  dcu_k.upload(cu_k.data(), dcu_k.size());
  dout.fill_bytes(0xff);
  dlse.fill_bytes(0xff);
  Stream stream;
  ForwardOptions options;
  options.causal = c.causal;
  if (c.varlen) {
    Varlen s{TensorView(dcu_q.data(), DType::Int32, {b + 1}),
             TensorView(dcu_k.data(), DType::Int32, {b + 1}), cu_q.data(), cu_k.data()};
    const TensorView vq(dq.data(), c.dtype, {tq, hq, d}), vk(dk.data(), c.dtype, {tk, hk, d}),
        vv(dv.data(), c.dtype, {tk, hk, d}), vout(dout.data(), c.dtype, {tq, hq, d}),
        vlse(dlse.data(), DType::Float32, {hq, tq});
    if (c.mainloop) {
      run_forced(c.mainloop, c.ws_block_n,
                 FlashForward::validate_varlen(vq, vk, vv, vout, vlse, s, options),
                 stream.handle());
    } else {
      forward_varlen(vq, vk, vv, vout, vlse, s, options, stream.handle());
    }
  } else {
    const long long sq = c.seqlens_q[0], sk = c.seqlens_k[0];
    const TensorView vq(dq.data(), c.dtype, {b, sq, hq, d}), vk(dk.data(), c.dtype, {b, sk, hk, d}),
        vv(dv.data(), c.dtype, {b, sk, hk, d}), vout(dout.data(), c.dtype, {b, sq, hq, d}),
        vlse(dlse.data(), DType::Float32, {b, hq, sq});
    if (c.mainloop) {
      run_forced(c.mainloop, c.ws_block_n, FlashForward::validate(vq, vk, vv, vout, vlse, options),
                 stream.handle());
    } else {
      forward(vq, vk, vv, vout, vlse, options, stream.handle());
    }
  }
  stream.synchronize();
  std::vector<std::uint16_t> out(q.size());
  std::vector<float> lse(static_cast<std::size_t>(hq) * tq);
  dout.download(out.data(), out.size() * 2);
  dlse.download(lse.data(), lse.size() * 4);
  if (!check) return out;

  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  double max_err = 0, max_low_err = 0, max_lse_err = 0;
  for (int s = 0; s < b; ++s) {
    const int sq = c.seqlens_q[s], sk = c.seqlens_k[s];
    for (int h = 0; h < hq; ++h) {
      const int kvh = h / (hq / hk);
      std::vector<double> qs(static_cast<std::size_t>(sq) * d),
          ks(static_cast<std::size_t>(sk) * d), vs(ks.size());
      for (int i = 0; i < sq; ++i) {
        for (int x = 0; x < d; ++x)
          qs[i * d + x] =
              from_bits(c.dtype, q[((cu_q[s] + i) * hq + h) * static_cast<std::size_t>(d) + x]);
      }
      for (int j = 0; j < sk; ++j) {
        for (int x = 0; x < d; ++x) {
          ks[j * d + x] =
              from_bits(c.dtype, k[((cu_k[s] + j) * hk + kvh) * static_cast<std::size_t>(d) + x]);
          vs[j * d + x] =
              from_bits(c.dtype, v[((cu_k[s] + j) * hk + kvh) * static_cast<std::size_t>(d) + x]);
        }
      }
      const auto ref = reference::attention(qs, ks, vs, sq, sk, d, scale, c.causal);
      const auto low = reference::attention(qs, ks, vs, sq, sk, d, scale, c.causal,
                                            [&](double p) { return round_to(c.dtype, p); });
      for (int i = 0; i < sq; ++i) {
        for (int x = 0; x < d; ++x) {
          const double got =
              from_bits(c.dtype, out[((cu_q[s] + i) * hq + h) * static_cast<std::size_t>(d) + x]);
          if (!std::isfinite(got)) {
            ADD_FAILURE() << "out seq " << s << " row " << i << " head " << h << " dim " << x
                          << " = " << got;
            return out;
          }
          max_err = std::max(max_err, std::abs(got - ref.out[i * d + x]));
          max_low_err = std::max(
              max_low_err, std::abs(round_to(c.dtype, low.out[i * d + x]) - ref.out[i * d + x]));
        }
        const std::size_t li = c.varlen
                                   ? static_cast<std::size_t>(h) * tq + cu_q[s] + i
                                   : (static_cast<std::size_t>(s) * hq + h) * c.seqlens_q[0] + i;
        const double got_lse = lse[li];
        if (std::isinf(ref.lse[i])) {
          EXPECT_TRUE(std::isinf(got_lse) && got_lse < 0)
              << "lse " << s << "/" << h << "/" << i << " = " << got_lse;
        } else {
          max_lse_err =
              std::max(max_lse_err, std::abs(got_lse - ref.lse[i]) / (1 + std::abs(ref.lse[i])));
        }
      }
    }
  }
  EXPECT_LE(max_err, 2 * max_low_err + 1e-5) << "same-dtype reference error " << max_low_err;
  EXPECT_LE(max_lse_err, 1e-5) << "LSE relative error";
  return out;
}

class AttentionForward : public SharedKernelStore,
                         public ::testing::WithParamInterface<AttnCase> {};

TEST_P(AttentionForward, MatchesDoubleReference) {
  KJIT_REQUIRE_GPU();
  if (GetParam().mainloop >= FlashForward::kMainloopWgmma && !arch::current().has_wgmma())
    GTEST_SKIP() << "the wgmma loops need sm_90a; this card is " << arch::current().name();
  const unsigned seed = std::random_device{}();  // fresh inputs every run; printed on failure
  SCOPED_TRACE("input seed " + std::to_string(seed));
  run_case(GetParam(), seed);
}

std::vector<AttnCase> cases() {
  std::vector<AttnCase> out;
  const std::vector<int> varlen_q = {1, 0, 77, 130, 64, 5}, varlen_k = {1, 3, 77, 200, 64, 0};
  for (DType dtype : {DType::Float16, DType::BFloat16}) {
    for (int d : {64, 96, 128, 192, 256}) {
      for (bool causal : {false, true}) {
        // sm_90a: the overlap loop by default (over persistent blocks where causal); the wgmma
        // loop, the warp-specialised loop without the overlap and the other overlap loop forced
        // (not hd 96, which has none of them).
        const bool sm90 = d % 64 == 0;
        const std::int64_t other_overlap = causal ? FlashForward::kMainloopWgmmaWsOverlap
                                                  : FlashForward::kMainloopWgmmaWsPersistent;
        for (std::int64_t mainloop :
             {std::int64_t{0}, FlashForward::kMainloopMma, FlashForward::kMainloopWgmma,
              FlashForward::kMainloopWgmmaWs, other_overlap}) {
          if (!sm90 && mainloop >= FlashForward::kMainloopWgmma) continue;
          for (auto [hq, hk] : std::vector<std::pair<int, int>>{{1, 1}, {8, 1}, {32, 8}}) {
            out.push_back({dtype, d, causal, hq, hk, false, {97, 97}, {97, 97}, 1.0, mainloop});
            out.push_back({dtype, d, causal, hq, hk, true, varlen_q, varlen_k, 1.0, mainloop});
          }
          // Sq < Sk; Sq > Sk (early rows see nothing when causal).
          out.push_back({dtype, d, causal, 2, 1, false, {61}, {130}, 1.0, mainloop});
          out.push_back({dtype, d, causal, 2, 1, false, {150}, {40}, 1.0, mainloop});
          // Enough key tiles (6 to 11) for the main loops' steady state, a partial one last.
          out.push_back({dtype, d, causal, 4, 2, false, {257, 257}, {700, 700}, 1.0, mainloop});
        }
      }
    }
  }
  // Persistent blocks that take several items each (8 sequences of 640, 8 heads: 256 items at hd
  // 64, 320 at hd 128, on 132 SMs; 5 key tiles an item when not causal), causal and not.
  for (int d : {64, 128}) {
    for (bool causal : {false, true}) {
      out.push_back({DType::BFloat16, d, causal, 8, 2, false, std::vector<int>(8, 640),
                     std::vector<int>(8, 640), 1.0, FlashForward::kMainloopWgmmaWsPersistent});
    }
  }
  // The warp-specialised loops' other key tiles (FA3's 176 at hd 128, 112 at hd 192, 80 at hd
  // 256): batched with a steady state and a partial last tile, and varlen.
  for (DType dtype : {DType::Float16, DType::BFloat16}) {
    for (int d : {64, 128, 192, 256}) {
      for (auto ws : {FlashForward::kMainloopWgmmaWs, FlashForward::kMainloopWgmmaWsOverlap,
                      FlashForward::kMainloopWgmmaWsPersistent}) {
        for (std::int64_t n : FlashForward::kWsBlockNs) {
          for (bool causal : {false, true}) {
            const FlashForward::Problem problem{dtype, 1, 1, 1, d, 1, 1, causal};
            FlashForward::Config config = FlashForward::warp_specialized_config(problem);
            const bool default_tile = n == config.block_n;
            config.mainloop = ws;
            config.block_n = n;
            if (default_tile || !FlashForward::valid(config, problem, "sm_90a")) continue;
            out.push_back({dtype, d, causal, 4, 2, false, {257, 257}, {700, 700}, 1.0, ws, n});
            out.push_back({dtype, d, causal, 8, 1, true, varlen_q, varlen_k, 1.0, ws, n});
          }
        }
      }
    }
  }
  for (std::int64_t mainloop :
       {std::int64_t{0}, FlashForward::kMainloopMma, FlashForward::kMainloopWgmma}) {
    for (DType dtype : {DType::Float16, DType::BFloat16}) {  // inputs x10
      out.push_back({dtype, 128, true, 2, 2, false, {200, 200}, {200, 200}, 10.0, mainloop});
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(All, AttentionForward, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<AttnCase>& i) {
                           const AttnCase& c = i.param;
                           return std::string(dtype_name(c.dtype)) + "_d" +
                                  std::to_string(c.head_dim) + (c.causal ? "_causal" : "") + "_h" +
                                  std::to_string(c.heads_q) + "x" + std::to_string(c.heads_k) +
                                  (c.varlen ? "_varlen" : "_batched") +
                                  (c.mainloop == FlashForward::kMainloopMma     ? "_mma"
                                   : c.mainloop == FlashForward::kMainloopWgmma ? "_wgmma"
                                   : c.mainloop == FlashForward::kMainloopWgmmaWsOverlap
                                       ? "_overlap"
                                   : c.mainloop == FlashForward::kMainloopWgmmaWsPersistent
                                       ? "_persistent"
                                   : c.mainloop == FlashForward::kMainloopWgmmaWs ? "_ws"
                                                                                  : "") +
                                  (c.ws_block_n ? "_n" + std::to_string(c.ws_block_n) : "") + "_" +
                                  std::to_string(i.index);
                         });

// The persistent loop's blocks claim their items at run time: a call of many items each (8
// sequences of 1000, 8 heads: 512 items at hd 128) gives the same bits every time.
TEST(AttentionForwardDeterminism, PersistentClaimsGiveIdenticalBits) {
  KJIT_REQUIRE_GPU();
  if (!arch::current().has_wgmma())
    GTEST_SKIP() << "the persistent loop needs sm_90a; this card is " << arch::current().name();
  for (bool causal : {false, true}) {
    const AttnCase c{DType::BFloat16,
                     128,
                     causal,
                     8,
                     2,
                     false,
                     std::vector<int>(8, 1000),
                     std::vector<int>(8, 1000),
                     1.0,
                     FlashForward::kMainloopWgmmaWsPersistent};
    const unsigned seed = std::random_device{}();
    EXPECT_EQ(run_case(c, seed, false), run_case(c, seed, false)) << "causal " << causal;
  }
}

TEST(AttentionForwardDeterminism, BitwiseIdenticalOnRerun) {
  KJIT_REQUIRE_GPU();
  const bool sm90 = arch::current().has_wgmma();
  for (std::int64_t mainloop :
       {std::int64_t{0}, FlashForward::kMainloopMma, sm90 ? FlashForward::kMainloopWgmma : 0,
        sm90 ? FlashForward::kMainloopWgmmaWsOverlap : 0,
        sm90 ? FlashForward::kMainloopWgmmaWsPersistent : 0}) {
    const AttnCase c{DType::BFloat16, 128,           true, 4,       2, true,
                     {300, 7, 129},   {300, 9, 500}, 1.0,  mainloop};
    const unsigned seed = std::random_device{}();
    EXPECT_EQ(run_case(c, seed, false), run_case(c, seed, false)) << "mainloop " << mainloop;
  }
}

}  // namespace
}  // namespace kjit::test

namespace kjit::test {
namespace {

// Sk = 0 with NULL K/V pointers, as torch hands over an empty tensor: O = 0 and LSE = -inf for
// every row, through the C++ API (every main loop) and the C ABI.
TEST(AttentionForwardEmpty, NoKeysGiveZeroOutputAndMinusInfLse) {
  KJIT_REQUIRE_GPU();
  const std::int64_t b = 2, sq = 70, h = 4, d = 128;
  DeviceBuffer q(b * sq * h * d * 2), out(b * sq * h * d * 2), lse(b * h * sq * 4);
  std::vector<std::uint16_t> ones(static_cast<std::size_t>(b * sq * h * d), 0x3f80);  // bf16 1.0
  q.upload(ones.data(), q.size());
  const TensorView vq(q.data(), DType::BFloat16, {b, sq, h, d}),
      vk(nullptr, DType::BFloat16, {b, 0, h, d}), vout(out.data(), DType::BFloat16, {b, sq, h, d}),
      vlse(lse.data(), DType::Float32, {b, h, sq});
  auto check = [&](const char* how) {
    std::vector<std::uint16_t> o(static_cast<std::size_t>(b * sq * h * d));
    std::vector<float> l(static_cast<std::size_t>(b * h * sq));
    out.download(o.data(), out.size());
    lse.download(l.data(), lse.size());
    for (std::uint16_t x : o)
      ASSERT_EQ(bf16_to_float(x), 0.f) << how;
    for (float x : l)
      ASSERT_TRUE(std::isinf(x) && x < 0) << how << ": " << x;
  };
  for (bool causal : {false, true}) {
    ForwardOptions options;
    options.causal = causal;
    Stream stream;
    out.fill_bytes(0xff);
    lse.fill_bytes(0xff);
    forward(vq, vk, vk, vout, vlse, options, stream.handle());
    stream.synchronize();
    check("forward");
    out.fill_bytes(0xff);
    lse.fill_bytes(0xff);
    run_forced(FlashForward::kMainloopMma, 0,
               FlashForward::validate(vq, vk, vk, vout, vlse, options), stream.handle());
    stream.synchronize();
    check("mma.sync loop");
    if (arch::current().has_wgmma()) {
      for (std::int64_t loop : {FlashForward::kMainloopWgmma, FlashForward::kMainloopWgmmaWsOverlap,
                                FlashForward::kMainloopWgmmaWsPersistent}) {
        out.fill_bytes(0xff);
        lse.fill_bytes(0xff);
        run_forced(loop, 0, FlashForward::validate(vq, vk, vk, vout, vlse, options),
                   stream.handle());
        stream.synchronize();
        check(("loop " + std::to_string(loop)).c_str());
      }
    }
  }
  int64_t q_shape[] = {b, sq, h, d}, k_shape[] = {b, 0, h, d}, lse_shape[] = {b, h, sq};
  DLTensor tq{q.data(), {kDLCUDA, 0}, 4, {kDLBfloat, 16, 1}, q_shape, nullptr, 0};
  DLTensor tk{nullptr, {kDLCUDA, 0}, 4, {kDLBfloat, 16, 1}, k_shape, nullptr, 0};
  DLTensor tout{out.data(), {kDLCUDA, 0}, 4, {kDLBfloat, 16, 1}, q_shape, nullptr, 0};
  DLTensor tlse{lse.data(), {kDLCUDA, 0}, 3, {kDLFloat, 32, 1}, lse_shape, nullptr, 0};
  out.fill_bytes(0xff);
  lse.fill_bytes(0xff);
  ASSERT_EQ(kjit_attention_forward(&tq, &tk, &tk, &tout, &tlse, 0.f, 1, nullptr), KJIT_SUCCESS)
      << kjit_last_error();
  synchronize(nullptr);
  check("C ABI");
}

}  // namespace
}  // namespace kjit::test

// MoE load statistics and balancing losses on the GPU against the fp64 reference
// (tests/reference/moe_reference's `balance`): counts exactly, f and P within fp32's rounding of a
// sum, the losses within 1e-4 relative, the bias update exactly as fp32 computes it, and the same
// bits on a second run (every sum in a fixed order). Softmax probabilities of random logits in
// each logits dtype, sequences (one empty) or none, ids out of range, skewed routing, no tokens,
// a forced chunk size beside the op's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kjit/jit.hpp"
#include "kjit/moe.hpp"
#include "ops/moe/balance.hpp"
#include "tests/reference/moe_reference.hpp"
#include "tests/support/dtype_bits.hpp"
#include "tests/support/forced_launch.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/isolated_cache.hpp"

namespace kjit::test {
namespace {

struct BalanceCase {
  const char* name;
  int tokens, top_k, experts;
  DType logits = DType::Float32;           // Int32: no logits (no z-loss)
  std::vector<int> sequence_lengths = {};  // empty: one sequence, no cu_seqlens
  bool skewed = false, invalid = false, bias = false;
  std::int64_t chunk_tokens = 0;  // forced through the family when set
};

void PrintTo(const BalanceCase& c, std::ostream* os) {
  *os << c.name;
}

class MoeBalanceTest : public SharedKernelStore,
                       public ::testing::WithParamInterface<BalanceCase> {};

TEST_P(MoeBalanceTest, MatchesTheReference) {
  KJIT_REQUIRE_GPU();
  const BalanceCase& c = GetParam();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "input seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 2.0);
  std::uniform_int_distribution<int> expert(0, c.experts - 1);
  const int t = c.tokens, e = c.experts, k = c.top_k;
  const bool has_logits = c.logits != DType::Int32;
  // Logits in their dtype, probabilities their softmax (in fp32 on the device's side).
  std::vector<double> logits(static_cast<std::size_t>(t) * e), probs(logits.size());
  std::vector<float> probs32(logits.size()), logits32(logits.size());
  std::vector<std::uint16_t> logits16(logits.size());
  for (int i = 0; i < t; ++i) {
    double max = -1e300, sum = 0;
    for (int j = 0; j < e; ++j) {
      double& v = logits[static_cast<std::size_t>(i) * e + j];
      v = normal(rng);
      if (c.logits == DType::BFloat16 || c.logits == DType::Float16) {
        logits16[static_cast<std::size_t>(i) * e + j] = to_bits(c.logits, v);
        v = from_bits(c.logits, logits16[static_cast<std::size_t>(i) * e + j]);
      } else {
        logits32[static_cast<std::size_t>(i) * e + j] = static_cast<float>(v);
        v = logits32[static_cast<std::size_t>(i) * e + j];
      }
      max = std::max(max, v);
    }
    for (int j = 0; j < e; ++j)
      sum += std::exp(logits[static_cast<std::size_t>(i) * e + j] - max);
    for (int j = 0; j < e; ++j) {
      const std::size_t at = static_cast<std::size_t>(i) * e + j;
      probs32[at] = static_cast<float>(std::exp(logits[at] - max) / sum);
      probs[at] = probs32[at];
    }
  }
  std::vector<int> ids(static_cast<std::size_t>(t) * k);
  for (int& v : ids)
    v = c.skewed && rng() % 3 != 0 ? 0 : expert(rng);
  if (c.invalid) {
    for (std::size_t i = 0; i < ids.size(); i += 13)
      ids[i] = i % 2 ? -3 : e + 5;
  }
  std::vector<int> cu_seqlens;
  if (!c.sequence_lengths.empty()) {
    cu_seqlens.push_back(0);
    for (int l : c.sequence_lengths)
      cu_seqlens.push_back(cu_seqlens.back() + l);
    ASSERT_EQ(cu_seqlens.back(), t);
  }
  const int max_seqlen = c.sequence_lengths.empty() ? t
                                                    : *std::max_element(c.sequence_lengths.begin(),
                                                                        c.sequence_lengths.end());
  std::vector<float> bias(static_cast<std::size_t>(e));
  for (float& b : bias)
    b = static_cast<float>(normal(rng) * 0.01);

  DeviceBuffer dids(std::max<std::size_t>(ids.size() * 4, 4)),
      dprobs(std::max<std::size_t>(probs32.size() * 4, 4)),
      dlogits(std::max<std::size_t>(logits32.size() * 4, 4)),
      dcu(std::max<std::size_t>(cu_seqlens.size() * 4, 4)), dbias(e * 4), dcounts(e * 4), df(e * 4),
      dp(e * 4), dlosses(16);
  if (!ids.empty()) dids.upload(ids.data(), ids.size() * 4);
  if (!probs32.empty()) dprobs.upload(probs32.data(), probs32.size() * 4);
  if (c.logits == DType::Float32 && !logits32.empty()) {
    dlogits.upload(logits32.data(), logits32.size() * 4);
  } else if (has_logits && !logits16.empty()) {
    dlogits.upload(logits16.data(), logits16.size() * 2);
  }
  if (!cu_seqlens.empty()) dcu.upload(cu_seqlens.data(), cu_seqlens.size() * 4);
  moe::BalanceOptions options;
  options.aux_coeff = 0.01f;
  options.z_coeff = 0.001f;
  options.bias_rate = 1e-3f;
  const TensorView vids(dids.data(), DType::Int32, {t, k}),
      vprobs(dprobs.data(), DType::Float32, {t, e}),
      vlogits = has_logits ? TensorView(dlogits.data(), c.logits, {t, e}) : TensorView(),
      vcu = cu_seqlens.empty() ? TensorView()
                               : TensorView(dcu.data(), DType::Int32,
                                            {static_cast<std::int64_t>(cu_seqlens.size())}),
      vbias = c.bias ? TensorView(dbias.data(), DType::Float32, {e}) : TensorView();
  const moe::BalanceStats stats{
      TensorView(dcounts.data(), DType::Int32, {e}), TensorView(df.data(), DType::Float32, {e}),
      TensorView(dp.data(), DType::Float32, {e}), TensorView(dlosses.data(), DType::Float32, {4})};
  Stream stream;
  struct Result {
    std::vector<int> counts;
    std::vector<float> f, p, losses, bias;
  };
  auto run = [&] {
    dbias.upload(bias.data(), bias.size() * 4);
    for (DeviceBuffer* b : {&dcounts, &df, &dp, &dlosses})
      b->fill_bytes(0xff);
    if (c.chunk_tokens) {
      const ops::Call<ops::MoeBalance> call =
          ops::MoeBalance::validate(vids, vprobs, vlogits, vcu, max_seqlen, vbias, options, stats);
      const ops::MoeBalance::Config config{c.chunk_tokens};
      launch_forced(config, call, stream.handle());
    } else {
      moe::balance(vids, vprobs, vlogits, vcu, max_seqlen, vbias, options, stats, stream.handle());
    }
    stream.synchronize();
    Result r{std::vector<int>(e), std::vector<float>(e), std::vector<float>(e),
             std::vector<float>(4), std::vector<float>(e)};
    dcounts.download(r.counts.data(), e * 4);
    df.download(r.f.data(), e * 4);
    dp.download(r.p.data(), e * 4);
    dlosses.download(r.losses.data(), 16);
    dbias.download(r.bias.data(), e * 4);
    return r;
  };
  const Result got = run();

  const reference::Balance want =
      reference::balance(ids, probs, has_logits ? logits : std::vector<double>{}, cu_seqlens, t, k,
                         e, options.aux_coeff, options.z_coeff);
  EXPECT_EQ(got.counts, want.counts);
  for (int i = 0; i < e; ++i) {
    EXPECT_NEAR(got.f[i], want.f[i], 1e-6 * want.f[i] + 1e-9) << "f " << i;
    // A sum of T fp32 probabilities: T ulps of the sum at most.
    EXPECT_NEAR(got.p[i], want.p[i], 1e-7 * std::max(t, 1) * want.p[i] + 1e-9) << "P " << i;
  }
  const double want_losses[4] = {want.aux, want.seq_aux, want.z, want.max_vio};
  const char* names[4] = {"aux", "seq_aux", "z", "max_vio"};
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(got.losses[i], want_losses[i], 1e-4 * std::abs(want_losses[i]) + 1e-7) << names[i];
  }
  if (c.bias) {
    const float mean = static_cast<float>(k) * t / e;
    for (int i = 0; i < e; ++i) {
      const float gap = mean - static_cast<float>(want.counts[i]);
      const float expected =
          bias[i] + options.bias_rate * static_cast<float>((gap > 0) - (gap < 0));
      EXPECT_EQ(got.bias[i], expected) << "bias " << i;
    }
  } else {
    // Not asked: the buffer keeps what was uploaded.
    EXPECT_EQ(got.bias, bias);
  }
  const Result again = run();
  EXPECT_EQ(again.counts, got.counts);
  EXPECT_EQ(again.f, got.f);
  EXPECT_EQ(again.p, got.p);
  EXPECT_EQ(again.losses, got.losses) << "the same bits run to run";
}

std::vector<BalanceCase> cases() {
  const DType f32 = DType::Float32, bf16 = DType::BFloat16, fp16 = DType::Float16;
  return {{"glm_bf16_logits", 3000, 4, 64, bf16},
          {"deepseek_v3_sequences_bias", 1000, 8, 256, f32, {300, 0, 450, 250}, false, false, true},
          {"three_experts_fp16", 77, 2, 3, fp16},
          {"no_logits_invalid_ids", 500, 4, 64, DType::Int32, {}, false, true},
          {"skewed_forced_chunk_64", 2000, 4, 64, f32, {1000, 1000}, true, false, true, 64},
          {"thousand_experts", 300, 8, 1000, bf16},
          {"no_tokens", 0, 4, 64, f32}};
}

INSTANTIATE_TEST_SUITE_P(All, MoeBalanceTest, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return std::string(info.param.name); });

// A sequence longer than max_seqlen leaves tokens unread: the losses are NaN, not a plausible
// value.
TEST(MoeBalanceRuns, ATooShortMaxSeqlenMakesTheLossesNaN) {
  KJIT_REQUIRE_GPU();
  constexpr int kT = 1000, kE = 8, kK = 2;
  std::vector<int> ids(kT * kK), cu{0, 600, 1000};
  for (std::size_t i = 0; i < ids.size(); ++i)
    ids[i] = static_cast<int>(i % kE);
  std::vector<float> probs(kT * kE, 1.f / kE);
  DeviceBuffer dids(ids.size() * 4), dprobs(probs.size() * 4), dcu(cu.size() * 4), counts(kE * 4),
      f(kE * 4), p(kE * 4), losses(16);
  dids.upload(ids.data(), dids.size());
  dprobs.upload(probs.data(), dprobs.size());
  dcu.upload(cu.data(), dcu.size());
  Stream stream;
  moe::balance(
      TensorView(dids.data(), DType::Int32, {kT, kK}),
      TensorView(dprobs.data(), DType::Float32, {kT, kE}), TensorView(),
      TensorView(dcu.data(), DType::Int32, {3}), 300, TensorView(), {},
      {TensorView(counts.data(), DType::Int32, {kE}), TensorView(f.data(), DType::Float32, {kE}),
       TensorView(p.data(), DType::Float32, {kE}), TensorView(losses.data(), DType::Float32, {4})},
      stream.handle());
  stream.synchronize();
  float got[4];
  losses.download(got, 16);
  for (float v : got)
    EXPECT_TRUE(std::isnan(v)) << v;
}

}  // namespace
}  // namespace kjit::test

// The MoE router on the GPU against the fp64 reference (tests/reference/moe_reference): the
// expert ids exactly (ties to the lower id; where fp32 and fp64 scores order two experts
// differently, their choice scores must be within 1e-5: a near tie), the weights within 1e-5
// relative. GLM-4.7-Flash's, DeepSeek-V3's (grouped), Qwen3's and Mixtral's routers, an expert
// count that is not a multiple of 32, logits on a coarse grid (many exact ties), bf16 logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kjit/moe.hpp"
#include "tests/reference/moe_reference.hpp"
#include "tests/support/dtype_bits.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/isolated_cache.hpp"

namespace kjit::test {
namespace {

struct RouterCase {
  const char* name;
  DType dtype;
  int tokens, experts;
  moe::RouterOptions options;
  bool bias = false;
  bool coarse = false;    // logits on a grid of 1/4: exact ties
  int row_pad = 0;        // logits rows this many elements longer than E
  bool one_lane = false;  // experts 0, 32, 64, ... (one lane's) far ahead: every round goes there
};

void PrintTo(const RouterCase& c, std::ostream* os) {
  *os << c.name;
}

class MoeRouterTest : public SharedKernelStore, public ::testing::WithParamInterface<RouterCase> {};

TEST_P(MoeRouterTest, MatchesDoubleReference) {
  KJIT_REQUIRE_GPU();
  const RouterCase& c = GetParam();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "input seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  const int t = c.tokens, e = c.experts, k = c.options.top_k;
  std::vector<double> logits(static_cast<std::size_t>(t) * e), bias(c.bias ? e : 0);
  for (double& x : logits)
    x = c.coarse ? std::round(normal(rng) * 4) / 4 : normal(rng);
  if (c.one_lane) {
    for (std::size_t i = 0; i < logits.size(); i += 32)  // E a multiple of 32: the same lane
      logits[i] += 8;
  }
  for (double& x : bias)
    x = std::round(normal(rng) * 64) / 1024;  // small, like a trained correction bias
  // The device's input: fp32, or the dtype's rounding (the reference reads the rounded values).
  std::vector<float> as_float(logits.size());
  std::vector<std::uint16_t> as_bits(logits.size());
  for (std::size_t i = 0; i < logits.size(); ++i) {
    if (c.dtype == DType::Float32) {
      as_float[i] = static_cast<float>(logits[i]);
      logits[i] = as_float[i];
    } else {
      as_bits[i] = to_bits(c.dtype, logits[i]);
      logits[i] = from_bits(c.dtype, as_bits[i]);
    }
  }
  std::vector<float> bias_f(bias.begin(), bias.end());
  const std::size_t elem = c.dtype == DType::Float32 ? 4 : 2;
  const int row = e + c.row_pad;
  std::vector<unsigned char> padded(static_cast<std::size_t>(t) * row * elem, 0);
  for (int token = 0; token < t; ++token) {
    const void* from =
        c.dtype == DType::Float32
            ? static_cast<const void*>(&as_float[static_cast<std::size_t>(token) * e])
            : static_cast<const void*>(&as_bits[static_cast<std::size_t>(token) * e]);
    std::memcpy(&padded[static_cast<std::size_t>(token) * row * elem], from, e * elem);
  }
  DeviceBuffer dlogits(padded.size() + 16), dbias(e * 4), dids(static_cast<std::size_t>(t) * k * 4),
      dweights(static_cast<std::size_t>(t) * k * 4);
  dlogits.upload(padded.data(), padded.size());
  if (c.bias) dbias.upload(bias_f.data(), e * 4);
  dids.fill_bytes(0xff);
  dweights.fill_bytes(0xff);
  Stream stream;
  moe::router_topk(TensorView(dlogits.data(), c.dtype, {t, e}, {row, 1}),
                   c.bias ? TensorView(dbias.data(), DType::Float32, {e}) : TensorView(),
                   TensorView(dids.data(), DType::Int32, {t, k}),
                   TensorView(dweights.data(), DType::Float32, {t, k}), c.options, stream.handle());
  stream.synchronize();
  std::vector<int> ids(static_cast<std::size_t>(t) * k);
  std::vector<float> weights(ids.size());
  dids.download(ids.data(), ids.size() * 4);
  dweights.download(weights.data(), weights.size() * 4);

  reference::RouterConfig config;
  config.sigmoid = c.options.sigmoid;
  config.bias = bias;
  config.groups = c.options.groups;
  config.topk_groups = c.options.topk_groups;
  config.top_k = k;
  config.renormalize = c.options.renormalize;
  config.scaling = c.options.scaling;
  const reference::Routing want = reference::route(logits, t, e, config);
  // The reference's choice scores, to tell a near tie from a wrong pick.
  auto choice = [&](int token, int expert) {
    const double* l = &logits[static_cast<std::size_t>(token) * e];
    double s;
    if (c.options.sigmoid) {
      s = 1 / (1 + std::exp(-l[expert]));
    } else {
      double max = l[0], sum = 0;
      for (int x = 0; x < e; ++x)
        max = std::max(max, l[x]);
      for (int x = 0; x < e; ++x)
        sum += std::exp(l[x] - max);
      s = std::exp(l[expert] - max) / sum;
    }
    return s + (c.bias ? bias[expert] : 0.0);
  };
  // Group scores (grouped routers): the sum of a group's two best reference choices with a bias,
  // the best without.
  const int per_group = e / c.options.groups;
  auto group_score = [&](int token, int g) {
    std::vector<double> members;
    for (int x = g * per_group; x < (g + 1) * per_group; ++x)
      members.push_back(choice(token, x));
    std::sort(members.rbegin(), members.rend());
    return members[0] + (per_group > 1 && c.bias ? members[1] : 0.0);
  };
  int near_ties = 0;
  for (int token = 0; token < t; ++token) {
    double chosen = 0;  // the device's picks' unbiased scores, for its weights
    std::vector<double> score_of(k);
    for (int j = 0; j < k; ++j) {
      const std::size_t at = static_cast<std::size_t>(token) * k + j;
      ASSERT_TRUE(ids[at] >= 0 && ids[at] < e) << "token " << token << " slot " << j;
      for (int x = 0; x < j; ++x)
        ASSERT_NE(ids[at], ids[static_cast<std::size_t>(token) * k + x]) << "token " << token;
      score_of[j] = choice(token, ids[at]) - (c.bias ? bias[ids[at]] : 0.0);
      chosen += score_of[j];
      if (ids[at] == want.ids[at]) continue;
      // A different pick is right only across a near tie: of the two experts (never an exact
      // tie: that goes to the lower id), or of their groups.
      const double a = choice(token, ids[at]), b = choice(token, want.ids[at]);
      const bool group_tie =
          c.options.groups > 1 && std::abs(group_score(token, ids[at] / per_group) -
                                           group_score(token, want.ids[at] / per_group)) <= 1e-5;
      ASSERT_TRUE((a != b && std::abs(a - b) <= 1e-5) || group_tie)
          << "token " << token << " slot " << j << ": expert " << ids[at] << " (" << a
          << "), reference " << want.ids[at] << " (" << b << ")";
      ++near_ties;
    }
    // Weights of the device's own picks: a near-tie swap changes the renormalisation.
    for (int j = 0; j < k; ++j) {
      const std::size_t at = static_cast<std::size_t>(token) * k + j;
      const double w = (c.options.renormalize ? score_of[j] / (chosen + 1e-20) : score_of[j]) *
                       c.options.scaling;
      EXPECT_NEAR(weights[at], w, 1e-5 * std::max(1.0, std::abs(w)))
          << "token " << token << " slot " << j;
    }
  }
  EXPECT_LE(near_ties, t * k / 100) << "near ties";
}

std::vector<RouterCase> cases() {
  moe::RouterOptions glm;
  glm.sigmoid = true;
  glm.top_k = 4;
  glm.renormalize = true;
  glm.scaling = 1.8f;
  moe::RouterOptions dsv3 = glm;
  dsv3.top_k = 8;
  dsv3.groups = 8;
  dsv3.topk_groups = 4;
  dsv3.scaling = 2.5f;
  moe::RouterOptions qwen;
  qwen.top_k = 8;
  qwen.renormalize = true;
  moe::RouterOptions mixtral = qwen;
  mixtral.top_k = 2;
  moe::RouterOptions plain;
  plain.top_k = 3;
  moe::RouterOptions nine_groups = glm;  // groups not aligned to the 32 lanes
  nine_groups.top_k = 6;
  nine_groups.groups = 9;
  nine_groups.topk_groups = 3;
  moe::RouterOptions single = glm;  // groups of one expert
  single.groups = 16;
  single.topk_groups = 4;
  moe::RouterOptions top32 = qwen, all20 = qwen, top1 = glm;
  top32.top_k = 32;
  all20.top_k = 20;
  top1.top_k = 1;
  moe::RouterOptions scaled = plain;  // scaling without renormalisation
  scaled.top_k = 5;
  scaled.scaling = 2.0f;
  return {{"glm_fp32", DType::Float32, 1000, 64, glm, true},
          {"groups_of_8_of_72_coarse", DType::Float32, 300, 72, nine_groups, false, true},
          {"groups_of_1_coarse", DType::Float32, 300, 16, single, false, true},
          {"forty_experts_scaled", DType::Float32, 200, 40, scaled},
          {"glm_fp16_strided_rows", DType::Float16, 150, 64, glm, true, false, 24},
          {"glm_bf16", DType::BFloat16, 257, 64, glm, true},
          {"glm_coarse_ties", DType::Float32, 500, 64, glm, false, true},
          {"deepseek_v3_grouped", DType::Float32, 300, 256, dsv3, true},
          {"deepseek_v3_coarse_ties", DType::BFloat16, 200, 256, dsv3, true, true},
          {"qwen3_softmax", DType::Float32, 333, 128, qwen},
          {"mixtral_softmax_fp16", DType::Float16, 1000, 8, mixtral},
          {"twenty_experts", DType::Float32, 64, 20, plain},
          {"one_token", DType::Float32, 1, 64, glm, true},
          {"softmax_coarse_ties", DType::Float32, 400, 96, plain, false, true},
          // One lane holds every winner (its cache refilled round after round), ties among them.
          {"one_lane_wins_all_coarse", DType::Float32, 200, 256, qwen, false, true, 0, true},
          {"thousand_experts_top32_coarse", DType::Float32, 100, 1024, top32, false, true},
          {"every_expert_chosen", DType::Float32, 100, 20, all20},
          {"top1_bf16", DType::BFloat16, 300, 64, top1, true}};
}

INSTANTIATE_TEST_SUITE_P(All, MoeRouterTest, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace kjit::test

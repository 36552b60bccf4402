#include "ops/moe/router.hpp"

#include <algorithm>
#include <cmath>
#include <tuple>

#include <fmt/format.h>

#include "ops/dispatch.hpp"
#include "ops/tensor_checks.hpp"

namespace kjit::ops {
namespace {

const TensorChecks kRouterCheck("moe router");

}  // namespace

void MoeRouter::check(const Problem& p) {
  if (p.experts < 1 || p.experts > 1024)
    kRouterCheck.fail(
        fmt::format("the experts (logits' last dim) must be 1 to 1024, got {}", p.experts));
  if (p.top_k < 1 || p.top_k > std::min<std::int64_t>(32, p.experts))
    kRouterCheck.fail(
        fmt::format("top_k must be 1 to min(32, E = {}), got {}", p.experts, p.top_k));
  if (p.groups < 1 || p.groups > 32 || p.experts % p.groups != 0 || p.topk_groups < 1 ||
      p.topk_groups > p.groups) {
    kRouterCheck.fail(fmt::format(
        "groups ({}) must divide E ({}), be at most 32, and topk_groups ({}) be 1 to groups",
        p.groups, p.experts, p.topk_groups));
  }
  if (p.top_k > p.topk_groups * (p.experts / p.groups)) {
    kRouterCheck.fail(fmt::format("top_k {} is more than the {} experts of the {} kept groups",
                                  p.top_k, p.topk_groups * (p.experts / p.groups), p.topk_groups));
  }
  if (p.tokens < 0 || p.tokens > (1ll << 31) - 1 - 256)
    kRouterCheck.fail(fmt::format("{} tokens: at most 2^31 - 257", p.tokens));
}

KernelSpec MoeRouter::spec(const Config&, const Problem& p, const Arch& arch) {
  KernelSpec s(sources()[0],
               {fmt::format("kjit::moe::router_topk<{}, {}, {}, {}, {}, {}, {}>", cxx_type(p.dtype),
                            p.experts, p.top_k, p.sigmoid ? "true" : "false", p.groups,
                            p.topk_groups, p.renormalize ? "true" : "false")});
  s.arch = arch.name();
  return s;
}

void MoeRouter::launch(const Program& program, const Config& c, const Problem& p, const Args& args,
                       StreamHandle stream) {
  if (p.tokens == 0) return;
  const auto blocks = static_cast<unsigned>((p.tokens + c.warps_per_block - 1) / c.warps_per_block);
  program.kernel().launch(
      {{blocks}, {static_cast<unsigned>(32 * c.warps_per_block)}, 0, stream, {}}, args);
}

std::vector<MoeRouter::Problem> MoeRouter::shipped(const Arch&) {
  std::vector<Problem> out;
  for (DType dtype : {DType::Float32, DType::BFloat16}) {
    out.push_back({dtype, 1, 64, 4, 1, 1, true, true});    // GLM-4.7-Flash
    out.push_back({dtype, 1, 256, 8, 8, 4, true, true});   // DeepSeek-V3
    out.push_back({dtype, 1, 128, 8, 1, 1, false, true});  // Qwen3-30B-A3B
    out.push_back({dtype, 1, 8, 2, 1, 1, false, true});    // Mixtral
  }
  return out;
}

std::vector<TensorSpec> MoeRouter::tensors(const Problem& p) {
  using Role = TensorSpec::Role;
  return {{"logits", p.dtype, {p.tokens, p.experts}},
          {"ids", DType::Int32, {p.tokens, p.top_k}, Role::Output},
          {"weights", DType::Float32, {p.tokens, p.top_k}, Role::Output}};
}

MoeRouter::Args MoeRouter::args(const Problem& p, const std::vector<TensorView>& t) {
  moe::RouterOptions o;
  o.sigmoid = p.sigmoid;
  o.top_k = static_cast<int>(p.top_k);
  o.groups = static_cast<int>(p.groups);
  o.topk_groups = static_cast<int>(p.topk_groups);
  o.renormalize = p.renormalize;
  return validate(t.at(0), TensorView(), t.at(1), t.at(2), o).args;
}

std::vector<Preset<MoeRouter::Problem>> MoeRouter::presets() {
  std::vector<Preset<Problem>> out;
  Preset<Problem> glm{"glm-4.7-flash-router", {}}, dsv3{"deepseek-v3-router", {}};
  for (std::int64_t t : {16, 256, 4096, 16384}) {
    glm.problems.push_back({DType::Float32, t, 64, 4, 1, 1, true, true});
    dsv3.problems.push_back({DType::Float32, t, 256, 8, 8, 4, true, true});
  }
  out.push_back(std::move(glm));
  out.push_back(std::move(dsv3));
  return out;
}

Call<MoeRouter> MoeRouter::validate(const TensorView& logits, const TensorView& bias,
                                    const TensorView& ids, const TensorView& weights,
                                    const moe::RouterOptions& o) {
  kRouterCheck.strided(logits, "logits", 2, "[T, E]");
  if (logits.dtype != DType::Float32 && logits.dtype != DType::BFloat16 &&
      logits.dtype != DType::Float16) {
    kRouterCheck.fail(fmt::format("logits must be fp32, bf16 or fp16, got {}", logits.describe()));
  }
  Call<MoeRouter> call{};
  Problem& p = call.problem;
  p = {logits.dtype, logits.size(0), logits.size(1), o.top_k,
       o.groups,     o.topk_groups,  o.sigmoid,      o.renormalize};
  check(p);
  for (const auto& [t, name, dtype] :
       {std::tuple{&ids, "ids", DType::Int32}, std::tuple{&weights, "weights", DType::Float32}}) {
    kRouterCheck.strided(*t, name, 2, "[T, k]");
    if (t->dtype != dtype || t->size(0) != p.tokens || t->size(1) != p.top_k ||
        (p.tokens > 1 && t->stride(0) < p.top_k)) {
      kRouterCheck.fail(fmt::format("{} must be {} [{}, {}], got {}", name, dtype_name(dtype),
                                    p.tokens, p.top_k, t->describe()));
    }
  }
  if (bias.data) kRouterCheck.vector(bias, "bias", DType::Float32, p.experts);
  if (!std::isfinite(o.scaling))
    kRouterCheck.fail(fmt::format("scaling must be finite, got {}", o.scaling));
  Args& a = call.args;
  a.logits = logits.data;
  a.bias = static_cast<const float*>(bias.data);
  a.ids = static_cast<int*>(ids.data);
  a.weights = static_cast<float*>(weights.data);
  a.logits_stride = logits.stride(0);
  a.ids_stride = ids.stride(0);
  a.weights_stride = weights.stride(0);
  a.tokens = static_cast<int>(p.tokens);
  a.scaling = o.scaling;
  return call;
}

}  // namespace kjit::ops

namespace kjit::moe {

void router_topk(const TensorView& logits, const TensorView& bias, const TensorView& ids,
                 const TensorView& weights, const RouterOptions& options, StreamHandle stream) {
  const ops::Call<ops::MoeRouter> call =
      ops::MoeRouter::validate(logits, bias, ids, weights, options);
  if (call.problem.tokens > 0) ops::run(call, stream);
}

}  // namespace kjit::moe

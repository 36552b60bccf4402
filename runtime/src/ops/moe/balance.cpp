#include "ops/moe/balance.hpp"

#include <cmath>
#include <optional>

#include <fmt/format.h>

#include "driver/stream_allocation.hpp"
#include "ops/dispatch.hpp"
#include "ops/tensor_checks.hpp"

namespace kjit::ops {
namespace {

const TensorChecks kBalanceCheck("moe balance");

void check_rows(const TensorView& t, const char* name, std::int64_t tokens, std::int64_t experts) {
  kBalanceCheck.strided(t, name, 2, "[T, E]");
  if (t.size(0) != tokens || t.size(1) != experts) {
    kBalanceCheck.fail(
        fmt::format("{} must be [{}, {}] (T, E), got {}", name, tokens, experts, t.describe()));
  }
}

std::int64_t chunks_of(const MoeBalance::Config& c, const MoeBalance::Problem& p) {
  return std::max<std::int64_t>(1, (p.longest + c.chunk_tokens - 1) / c.chunk_tokens);
}

}  // namespace

void MoeBalance::check(const Problem& p) {
  if (p.experts < 1 || p.experts > 1024)
    kBalanceCheck.fail(fmt::format("the experts must be 1 to 1024, got {}", p.experts));
  if (p.top_k < 1 || p.top_k > p.experts)
    kBalanceCheck.fail(fmt::format("top_k must be 1 to E = {}, got {}", p.experts, p.top_k));
  if (p.tokens < 0 || p.tokens * p.top_k > (1ll << 24)) {
    // f = counts / (k T) in fp32, exact below 2^24 pairs.
    kBalanceCheck.fail(fmt::format("{} tokens x top {}: at most 2^24 pairs", p.tokens, p.top_k));
  }
  if (p.sequences < 1 || p.sequences > 65535 || p.longest < 0 || p.longest > p.tokens) {
    kBalanceCheck.fail(
        fmt::format("{} sequences of at most {} tokens (max_seqlen) over T = {}: "
                    "1 to 65535 sequences, max_seqlen 0 to T",
                    p.sequences, p.longest, p.tokens));
  }
}

KernelSpec MoeBalance::spec(const Config&, const Problem& p, const Arch& arch) {
  KernelSpec s(sources()[0], {fmt::format("kjit::moe::moe_balance_partials<{}>", cxx_type(p.dtype)),
                              "kjit::moe::moe_balance_finish"});
  s.arch = arch.name();
  return s;
}

void MoeBalance::launch(const Program& program, const Config& c, const Problem& p,
                        const Args& call_args, StreamHandle stream) {
  Args args = call_args;
  args.chunk_tokens = static_cast<int>(c.chunk_tokens);
  args.chunks = static_cast<int>(chunks_of(c, p));
  const std::int64_t parts = p.sequences * args.chunks;
  driver::StreamAllocation scratch(static_cast<std::size_t>(parts * (2 * p.experts + 1) * 4),
                                   stream);
  args.part_counts = static_cast<int*>(scratch.data());
  args.part_probs = reinterpret_cast<float*>(args.part_counts + parts * p.experts);
  args.part_z = args.part_probs + parts * p.experts;
  program.kernel_at(0).launch(
      {{static_cast<unsigned>(args.chunks), static_cast<unsigned>(p.sequences)},
       {256},
       0,
       stream,
       {}},
      args);
  const auto threads = static_cast<unsigned>((p.experts + 31) / 32 * 32);
  program.kernel_at(1).launch({{1}, {threads}, 0, stream, {}}, args);
}

std::vector<MoeBalance::Problem> MoeBalance::shipped(const Arch&) {
  return {{DType::Float32, 1, 64, 4, 1, 1}, {DType::BFloat16, 1, 64, 4, 1, 1}};
}

std::vector<TensorSpec> MoeBalance::tensors(const Problem& p) {
  using Role = TensorSpec::Role;
  return {
      {"ids", DType::Int32, {p.tokens, p.top_k}, Role::Input, 0.f, static_cast<float>(p.experts)},
      {"probs", DType::Float32, {p.tokens, p.experts}, Role::Input, 0.f, 1.f},
      {"logits", p.dtype, {p.tokens, p.experts}},
      {"counts", DType::Int32, {p.experts}, Role::Scratch},
      {"f", DType::Float32, {p.experts}, Role::Output},
      {"p", DType::Float32, {p.experts}, Role::Output},
      {"losses", DType::Float32, {4}, Role::Output}};
}

MoeBalance::Args MoeBalance::args(const Problem& p, const std::vector<TensorView>& t) {
  return validate(t.at(0), t.at(1), t.at(2), TensorView(), static_cast<int>(p.tokens), TensorView(),
                  {}, {t.at(3), t.at(4), t.at(5), t.at(6)})
      .args;
}

std::vector<Preset<MoeBalance::Problem>> MoeBalance::presets() {
  Preset<Problem> glm{"glm-4.7-flash-balance", {}}, dsv3{"deepseek-v3-balance", {}};
  for (std::int64_t t : {4096, 16384, 65536}) {
    glm.problems.push_back({DType::Float32, t, 64, 4, 1, t});
    dsv3.problems.push_back({DType::Float32, t, 256, 8, 1, t});
  }
  return {glm, dsv3};
}

Call<MoeBalance> MoeBalance::validate(const TensorView& ids, const TensorView& probs,
                                      const TensorView& logits, const TensorView& cu_seqlens,
                                      int max_seqlen, const TensorView& bias,
                                      const moe::BalanceOptions& o,
                                      const moe::BalanceStats& stats) {
  kBalanceCheck.ndim(ids, "ids", 2, "[T, k]");
  kBalanceCheck.ndim(probs, "probs", 2, "[T, E]");
  Call<MoeBalance> call{};
  Problem& p = call.problem;
  p.dtype = logits.data ? logits.dtype : DType::Float32;
  p.tokens = ids.size(0);
  p.top_k = ids.size(1);
  p.experts = probs.size(1);
  p.sequences = cu_seqlens.data ? cu_seqlens.numel() - 1 : 1;
  p.longest = cu_seqlens.data ? max_seqlen : p.tokens;
  check(p);
  if (ids.dtype != DType::Int32 ||
      (ids.numel() > 1 && (ids.stride(1) != 1 || ids.stride(0) != ids.size(1)))) {
    kBalanceCheck.fail(fmt::format("ids must be contiguous int32 [T, k], got {}", ids.describe()));
  }
  kBalanceCheck.data(ids, "ids");
  check_rows(probs, "probs", p.tokens, p.experts);
  if (probs.dtype != DType::Float32)
    kBalanceCheck.fail(fmt::format("probs must be fp32, got {}", probs.describe()));
  if (logits.data) {
    check_rows(logits, "logits", p.tokens, p.experts);
    if (logits.dtype != DType::Float32 && logits.dtype != DType::BFloat16 &&
        logits.dtype != DType::Float16) {
      kBalanceCheck.fail(
          fmt::format("logits must be fp32, bf16 or fp16, got {}", logits.describe()));
    }
  }
  if (cu_seqlens.data)
    kBalanceCheck.vector(cu_seqlens, "cu_seqlens", DType::Int32, p.sequences + 1);
  if (bias.data) kBalanceCheck.vector(bias, "bias", DType::Float32, p.experts);
  kBalanceCheck.vector(stats.counts, "counts", DType::Int32, p.experts);
  kBalanceCheck.vector(stats.f, "f", DType::Float32, p.experts);
  kBalanceCheck.vector(stats.p, "p", DType::Float32, p.experts);
  kBalanceCheck.vector(stats.losses, "losses", DType::Float32, 4);
  for (const auto& [value, name] :
       {std::pair{o.aux_coeff, "aux_coeff"}, {o.z_coeff, "z_coeff"}, {o.bias_rate, "bias_rate"}}) {
    if (!std::isfinite(value))
      kBalanceCheck.fail(fmt::format("{} must be finite, got {}", name, value));
  }
  Args& a = call.args;
  a.ids = static_cast<const int*>(ids.data);
  a.probs = static_cast<const float*>(probs.data);
  a.logits = logits.data;
  a.cu_seqlens = static_cast<const int*>(cu_seqlens.data);
  a.bias = static_cast<float*>(bias.data);
  a.counts = static_cast<int*>(stats.counts.data);
  a.f = static_cast<float*>(stats.f.data);
  a.p = static_cast<float*>(stats.p.data);
  a.losses = static_cast<float*>(stats.losses.data);
  a.probs_stride = probs.stride(0);
  a.logits_stride = logits.data ? logits.stride(0) : 0;
  a.tokens = static_cast<int>(p.tokens);
  a.experts = static_cast<int>(p.experts);
  a.top_k = static_cast<int>(p.top_k);
  a.sequences = static_cast<int>(p.sequences);
  a.aux_coeff = o.aux_coeff;
  a.z_coeff = o.z_coeff;
  a.bias_rate = o.bias_rate;
  return call;
}

}  // namespace kjit::ops

namespace kjit::moe {

void balance(const TensorView& ids, const TensorView& probs, const TensorView& logits,
             const TensorView& cu_seqlens, int max_seqlen, const TensorView& bias,
             const BalanceOptions& options, const BalanceStats& stats, StreamHandle stream) {
  ops::run(
      ops::MoeBalance::validate(ids, probs, logits, cu_seqlens, max_seqlen, bias, options, stats),
      stream);
}

}  // namespace kjit::moe

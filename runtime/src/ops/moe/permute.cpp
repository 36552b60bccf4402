#include "ops/moe/permute.hpp"

#include <fmt/format.h>

#include "ops/dispatch.hpp"
#include "ops/tensor_checks.hpp"

namespace kjit::ops {
namespace {

const TensorChecks kDispatchCheck("moe dispatch"), kPermuteCheck("moe permute"),
    kUnpermuteCheck("moe unpermute");

// A [rows, D] operand of 16-bit rows read or written as 16-byte vectors.
void check_rows(const TensorChecks& checks, const TensorView& t, const char* name,
                std::int64_t rows, std::int64_t hidden, DType dtype) {
  checks.matrix(t, name, "[rows, D]", dtype, rows, hidden);
  checks.aligned(t, name, 16);
}

// Launch shape of a warp a row.
LaunchConfig warp_rows(const MoeDispatchShape::Config& c, std::int64_t rows, StreamHandle stream) {
  const auto blocks = static_cast<unsigned>((rows + c.warps_per_block - 1) / c.warps_per_block);
  return {{blocks}, {static_cast<unsigned>(32 * c.warps_per_block)}, 0, stream, {}};
}

}  // namespace

void MoeDispatchShape::check(const Problem& p) {
  if (p.dtype != DType::BFloat16 && p.dtype != DType::Float16)
    kDispatchCheck.fail(fmt::format("tokens must be bf16 or fp16, got {}", dtype_name(p.dtype)));
  if (p.hidden < 8 || p.hidden % 8 != 0)
    kDispatchCheck.fail(fmt::format("the hidden size must be a multiple of 8, got {}", p.hidden));
  if (p.top_k < 1 || p.top_k > 32)
    kDispatchCheck.fail(fmt::format("top_k must be 1 to 32, got {}", p.top_k));
  // The kernels index pairs and rows in int32 and launch a warp a row.
  if (p.tokens < 0 || p.rows < 0 || p.tokens * p.top_k > (1ll << 31) - 1 ||
      p.rows > (1ll << 31) - 1) {
    kDispatchCheck.fail(fmt::format("{} tokens x top {} and {} rows: at most 2^31 - 1 each",
                                    p.tokens, p.top_k, p.rows));
  }
}

std::vector<MoeDispatchShape::Problem> MoeDispatchShape::shipped(const Arch&) {
  return {{DType::BFloat16, 1, 2048, 4, 256}, {DType::Float16, 1, 2048, 4, 256}};
}

std::vector<MoeDispatchShape::Problem> MoeDispatchShape::preset_problems(std::int64_t hidden,
                                                                         std::int64_t top_k,
                                                                         std::int64_t experts) {
  std::vector<Problem> out;
  for (std::int64_t t : {16, 256, 4096, 16384}) {
    out.push_back({DType::BFloat16, t, hidden, top_k,
                   moe::align_capacity(t * top_k, static_cast<int>(experts), 64)});
  }
  return out;
}

// --- permute ---

KernelSpec MoePermute::spec(const Config&, const Problem& p, const Arch& arch) {
  KernelSpec s(sources()[0], {"kjit::moe::moe_reset_positions",
                              fmt::format("kjit::moe::moe_permute<{}>", cxx_type(p.dtype))});
  s.arch = arch.name();
  return s;
}

void MoePermute::launch(const Program& program, const Config& c, const Problem& p, const Args& args,
                        StreamHandle stream) {
  const std::int64_t pairs = p.tokens * p.top_k;
  if (pairs > 0) {
    program.kernel_at(0).launch(
        {{static_cast<unsigned>((pairs + 255) / 256)}, {256}, 0, stream, {}}, args);
  }
  if (p.rows > 0) program.kernel_at(1).launch(warp_rows(c, p.rows, stream), args);
}

std::vector<TensorSpec> MoePermute::tensors(const Problem& p) {
  using Role = TensorSpec::Role;
  const auto pairs = static_cast<float>(p.tokens * p.top_k);
  // Pair indices up to `pairs` (that one a padding row); repeats land in one positions entry
  // (scratch, never compared), the gathered rows are the same whichever writes it.
  return {{"x", p.dtype, {p.tokens, p.hidden}},
          {"sorted", DType::Int32, {p.rows}, Role::Input, 0.f, pairs + 1.f},
          {"x_sorted", p.dtype, {p.rows, p.hidden}, Role::Output},
          {"positions", DType::Int32, {p.tokens * p.top_k}, Role::Scratch}};
}

MoePermute::Args MoePermute::args(const Problem& p, const std::vector<TensorView>& t) {
  return validate(t.at(0), t.at(1), static_cast<int>(p.top_k), t.at(2), t.at(3), true).args;
}

std::vector<Preset<MoePermute::Problem>> MoePermute::presets() {
  return {{"glm-4.7-flash-permute", preset_problems(2048, 4, 64)},
          {"deepseek-v3-permute", preset_problems(7168, 8, 256)}};
}

Call<MoePermute> MoePermute::validate(const TensorView& x, const TensorView& sorted, int top_k,
                                      const TensorView& x_sorted, const TensorView& positions,
                                      bool zero_padding) {
  kPermuteCheck.ndim(x, "x", 2, "[T, D]");
  kPermuteCheck.ndim(sorted, "sorted", 1, "[rows]");
  Call<MoePermute> call{};
  Problem& p = call.problem;
  p = {x.dtype, x.size(0), x.size(1), top_k, sorted.size(0)};
  check(p);
  check_rows(kPermuteCheck, x, "x", p.tokens, p.hidden, p.dtype);
  kPermuteCheck.vector(sorted, "sorted", DType::Int32, p.rows);
  check_rows(kPermuteCheck, x_sorted, "x_sorted", p.rows, p.hidden, p.dtype);
  kPermuteCheck.vector(positions, "positions", DType::Int32, p.tokens * p.top_k);
  Args& a = call.args;
  a.x = x.data;
  a.sorted = static_cast<const int*>(sorted.data);
  a.x_sorted = x_sorted.data;
  a.positions = static_cast<int*>(positions.data);
  a.x_row_stride = x.stride(0);
  a.out_row_stride = x_sorted.stride(0);
  a.rows = static_cast<int>(p.rows);
  a.pairs = static_cast<int>(p.tokens * p.top_k);
  a.top_k = top_k;
  a.vectors = static_cast<int>(p.hidden / 8);
  a.zero_padding = zero_padding ? 1 : 0;
  return call;
}

// --- unpermute ---

KernelSpec MoeUnpermute::spec(const Config&, const Problem& p, const Arch& arch) {
  KernelSpec s(sources()[0], {fmt::format("kjit::moe::moe_unpermute<{}>", cxx_type(p.dtype))});
  s.arch = arch.name();
  return s;
}

void MoeUnpermute::launch(const Program& program, const Config& c, const Problem& p,
                          const Args& args, StreamHandle stream) {
  // A warp a token's 32 vectors (templates/moe/permute.cuh).
  if (p.tokens > 0)
    program.kernel().launch(warp_rows(c, p.tokens * ((args.vectors + 31) / 32), stream), args);
}

std::vector<TensorSpec> MoeUnpermute::tensors(const Problem& p) {
  using Role = TensorSpec::Role;
  return {{"y_sorted", p.dtype, {p.rows, p.hidden}},
          {"positions",
           DType::Int32,
           {p.tokens * p.top_k},
           Role::Input,
           0.f,
           static_cast<float>(p.rows)},
          {"weights", DType::Float32, {p.tokens, p.top_k}, Role::Input, 0.f, 1.f},
          {"out", p.dtype, {p.tokens, p.hidden}, Role::Output}};
}

MoeUnpermute::Args MoeUnpermute::args(const Problem& p, const std::vector<TensorView>& t) {
  return validate(t.at(0), t.at(1), static_cast<int>(p.top_k), t.at(2), TensorView(), t.at(3)).args;
}

std::vector<Preset<MoeUnpermute::Problem>> MoeUnpermute::presets() {
  return {{"glm-4.7-flash-unpermute", preset_problems(2048, 4, 64)},
          {"deepseek-v3-unpermute", preset_problems(7168, 8, 256)}};
}

Call<MoeUnpermute> MoeUnpermute::validate(const TensorView& y_sorted, const TensorView& positions,
                                          int top_k, const TensorView& weights,
                                          const TensorView& shared, const TensorView& out) {
  kUnpermuteCheck.ndim(y_sorted, "y_sorted", 2, "[rows, D]");
  kUnpermuteCheck.ndim(out, "out", 2, "[T, D]");
  Call<MoeUnpermute> call{};
  Problem& p = call.problem;
  p = {out.dtype, out.size(0), out.size(1), top_k, y_sorted.size(0)};
  check(p);
  check_rows(kUnpermuteCheck, y_sorted, "y_sorted", p.rows, p.hidden, p.dtype);
  check_rows(kUnpermuteCheck, out, "out", p.tokens, p.hidden, p.dtype);
  kUnpermuteCheck.vector(positions, "positions", DType::Int32, p.tokens * p.top_k);
  if (weights.data) {
    kUnpermuteCheck.ndim(weights, "weights", 2, "[T, k]");
    if (weights.dtype != DType::Float32 || weights.size(0) != p.tokens ||
        weights.size(1) != top_k ||
        (p.tokens * top_k > 1 && (weights.stride(1) != 1 || weights.stride(0) != top_k))) {
      kUnpermuteCheck.fail(fmt::format("weights must be contiguous fp32 [{}, {}], got {}", p.tokens,
                                       top_k, weights.describe()));
    }
  }
  if (shared.data) check_rows(kUnpermuteCheck, shared, "shared", p.tokens, p.hidden, p.dtype);
  Args& a = call.args;
  a.y = y_sorted.data;
  a.positions = static_cast<const int*>(positions.data);
  a.weights = static_cast<const float*>(weights.data);
  a.shared = shared.data;
  a.out = out.data;
  a.y_row_stride = y_sorted.stride(0);
  a.shared_row_stride = shared.data ? shared.stride(0) : 0;
  a.out_row_stride = out.stride(0);
  a.tokens = static_cast<int>(p.tokens);
  a.top_k = top_k;
  a.rows = static_cast<int>(p.rows);
  a.vectors = static_cast<int>(p.hidden / 8);
  return call;
}

}  // namespace kjit::ops

namespace kjit::moe {

void permute(const TensorView& x, const TensorView& sorted, int top_k, const TensorView& x_sorted,
             const TensorView& positions, StreamHandle stream, bool zero_padding) {
  ops::run(ops::MoePermute::validate(x, sorted, top_k, x_sorted, positions, zero_padding), stream);
}

void unpermute(const TensorView& y_sorted, const TensorView& positions, int top_k,
               const TensorView& weights, const TensorView& shared, const TensorView& out,
               StreamHandle stream) {
  ops::run(ops::MoeUnpermute::validate(y_sorted, positions, top_k, weights, shared, out), stream);
}

}  // namespace kjit::moe

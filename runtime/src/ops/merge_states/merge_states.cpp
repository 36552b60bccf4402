#include "ops/merge_states/merge_states.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "kjit/error.hpp"
#include "kjit/merge_states.hpp"
#include "ops/dispatch.hpp"
#include "ops/tensor_checks.hpp"

namespace kjit::ops {
namespace {

const TensorChecks kCheck("merge_states");

}  // namespace

void MergeStates::check(const Problem& p) {
  if (p.parts < 1 || p.parts > kMaxParts) {
    kCheck.fail(fmt::format("the number of parts (parts dim 0) must be in 1..{}, got {}", kMaxParts,
                            p.parts));
  }
  if (p.dim < kMinDim || p.dim > kMaxDim || p.dim % 8 != 0) {
    kCheck.fail(fmt::format("head dim (parts dim 3) must be a multiple of 8 in {}..{}, got {}",
                            kMinDim, kMaxDim, p.dim));
  }
  if (p.rows < 0) kCheck.fail(fmt::format("rows must not be negative, got {}", p.rows));
  const auto elem = static_cast<std::int64_t>(dtype_size(p.dtype));
  if (p.alignment < elem || p.alignment > 16 || (p.alignment & (p.alignment - 1)) != 0) {
    kCheck.fail(
        fmt::format("parts and out must be aligned to their element size ({} bytes)", elem));
  }
}

std::vector<MergeStates::Config> MergeStates::space(const Problem& p, const Arch&) {
  std::vector<Config> out;
  for (std::int64_t bytes : {4, 8, 16}) {
    for (std::int64_t tpr : {4, 8, 16, 32, 64}) {
      for (std::int64_t rows : {1, 2, 4, 8, 16})
        out.push_back({bytes / static_cast<std::int64_t>(dtype_size(p.dtype)), tpr, rows});
    }
  }
  return out;
}

bool MergeStates::valid(const Config& c, const Problem& p, const Arch&) {
  if (c.vec <= 0 || c.threads_per_row <= 0 || c.rows_per_block <= 0) return false;
  const std::int64_t bytes = c.vec * static_cast<std::int64_t>(dtype_size(p.dtype));
  const bool vec_ok = (bytes == 2 || bytes == 4 || bytes == 8 || bytes == 16) &&
                      bytes <= p.alignment && p.dim % c.vec == 0;
  const std::int64_t threads = c.threads_per_row * c.rows_per_block;
  return vec_ok && c.threads_per_row * c.vec <= p.dim && threads >= 32 && threads <= 1024;
}

MergeStates::Config MergeStates::default_config(const Problem& p, const Arch&) {
  const auto elem = static_cast<std::int64_t>(dtype_size(p.dtype));
  const std::int64_t vec = std::min<std::int64_t>(16, p.alignment) / elem;
  const std::int64_t tpr = std::min<std::int64_t>(32, p.dim / vec);
  return {vec, tpr, std::max<std::int64_t>(1, 256 / tpr)};
}

KernelSpec MergeStates::spec(const Config& c, const Problem& p, const Arch& arch) {
  KernelSpec s(sources()[0], {fmt::format("kjit::attention::merge_states<{}, {}, {}, {}, {}, {}>",
                                          cxx_type(p.dtype), p.dim, p.parts, c.vec,
                                          c.threads_per_row, c.rows_per_block)});
  s.arch = arch.name();
  return s;
}

void MergeStates::launch(const Program& program, const Config& c, const Problem& p,
                         const Args& args, StreamHandle stream) {
  if (p.rows == 0) return;
  const std::int64_t blocks = (p.rows + c.rows_per_block - 1) / c.rows_per_block;
  if (blocks > 0x7fffffffLL)
    kCheck.fail(fmt::format("{} rows need more blocks than a grid holds", p.rows));
  program.kernel().launch({{static_cast<unsigned>(blocks)},
                           {static_cast<unsigned>(c.threads_per_row * c.rows_per_block)},
                           0,
                           stream,
                           {}},
                          args);
}

std::vector<MergeStates::Problem> MergeStates::shipped(const Arch&) {
  std::vector<Problem> out;
  for (DType dtype : kDTypes) {
    for (std::int64_t dim : {64, 128, 256, 512}) {
      for (std::int64_t parts : {2, 4, 8, 16})
        out.push_back({dtype, dim, parts, 1, 16});
    }
  }
  return out;
}

std::vector<TensorSpec> MergeStates::tensors(const Problem& p) {
  using Role = TensorSpec::Role;
  // Parts [N, rows, 1, D] (one head: rows = tokens).
  return {{"parts", p.dtype, {p.parts, p.rows, 1, p.dim}, Role::Input, -1, 1},
          {"parts_lse", DType::Float32, {p.parts, p.rows, 1}, Role::Input, -4, 4},
          {"out", p.dtype, {p.rows, 1, p.dim}, Role::Output},
          {"out_lse", DType::Float32, {p.rows, 1}, Role::Output}};
}

MergeStates::Args MergeStates::args(const Problem&, const std::vector<TensorView>& t) {
  return validate(t.at(0), t.at(1), t.at(2), t.at(3)).args;
}

std::vector<Preset<MergeStates::Problem>> MergeStates::presets() {
  Preset<Problem> full{"merge_states", {}}, quick{"merge_states-quick", {}};
  // The benchmark's rows (T*H = 64k, D = 512) and the helix-decode head dims.
  for (DType dtype : {DType::BFloat16, DType::Float32}) {
    for (std::int64_t n : {2, 4, 8, 16})
      full.problems.push_back({dtype, 512, n, 65536});
  }
  for (std::int64_t d : {128, 576})
    full.problems.push_back({DType::BFloat16, d, 4, 65536});
  quick.problems = {{DType::BFloat16, 512, 2, 65536}, {DType::BFloat16, 128, 4, 8192}};
  return {full, quick};
}

Call<MergeStates> MergeStates::validate(const TensorView& parts, const TensorView& parts_lse,
                                        const TensorView& out, const TensorView& out_lse) {
  kCheck.ndim(parts, "parts", 4, "[N, T, H, D]");
  kCheck.ndim(parts_lse, "parts_lse", 3, "[N, T, H]");
  kCheck.ndim(out, "out", 3, "[T, H, D]");
  const bool with_lse = out_lse.data != nullptr;
  if (with_lse) kCheck.ndim(out_lse, "out_lse", 2, "[T, H]");
  if (parts.dtype != DType::Float16 && parts.dtype != DType::BFloat16 &&
      parts.dtype != DType::Float32) {
    kCheck.fail(fmt::format("parts must be fp16, bf16 or fp32, got {}", dtype_name(parts.dtype)));
  }
  kCheck.same_dtype(out, "out", parts, "parts");
  if (parts_lse.dtype != DType::Float32)
    kCheck.fail("parts_lse must be fp32, got " + parts_lse.describe());
  if (with_lse && out_lse.dtype != DType::Float32)
    kCheck.fail("out_lse must be fp32, got " + out_lse.describe());

  const std::int64_t tokens = parts.size(1), heads = parts.size(2);
  if (tokens < 0 || heads < 0) kCheck.fail("parts has a negative size: " + parts.describe());
  Call<MergeStates> call{};
  Problem& p = call.problem;
  p.dtype = parts.dtype;
  p.parts = parts.size(0);
  p.dim = parts.size(3);
  p.rows = tokens * heads;
  check(p);  // with the default alignment: names N and D before any shape mismatch
  if (parts_lse.size(0) != p.parts || parts_lse.size(1) != tokens || parts_lse.size(2) != heads) {
    kCheck.fail(fmt::format("parts_lse must be [N, T, H] = [{}, {}, {}], got {}", p.parts, tokens,
                            heads, parts_lse.describe()));
  }
  if (out.size(0) != tokens || out.size(1) != heads || out.size(2) != p.dim) {
    kCheck.fail(fmt::format("out must be [T, H, D] = [{}, {}, {}], got {}", tokens, heads, p.dim,
                            out.describe()));
  }
  if (with_lse && (out_lse.size(0) != tokens || out_lse.size(1) != heads)) {
    kCheck.fail(fmt::format("out_lse must be [T, H] = [{}, {}], got {}", tokens, heads,
                            out_lse.describe()));
  }
  for (const auto& [t, name] :
       {std::pair{&parts, "parts"}, {&parts_lse, "parts_lse"}, {&out, "out"}}) {
    kCheck.nonnegative_strides(*t, name);
    kCheck.data(*t, name);
  }
  if (with_lse) kCheck.nonnegative_strides(out_lse, "out_lse");
  kCheck.contiguous_last(parts, "parts");
  kCheck.contiguous_last(out, "out");
  p.alignment = row_alignment({{&parts, 3}, {&out, 2}});
  check(p);

  Args& k = call.args;
  k.parts = parts.data;
  k.parts_lse = static_cast<const float*>(parts_lse.data);
  k.out = out.data;
  k.out_lse = with_lse ? static_cast<float*>(out_lse.data) : nullptr;
  k.rows = p.rows;
  k.heads = heads;
  k.part_stride = parts.stride(0);
  k.token_stride = parts.stride(1);
  k.head_stride = parts.stride(2);
  k.lse_part_stride = parts_lse.stride(0);
  k.lse_token_stride = parts_lse.stride(1);
  k.lse_head_stride = parts_lse.stride(2);
  k.out_token_stride = out.stride(0);
  k.out_head_stride = out.stride(1);
  k.out_lse_token_stride = with_lse ? out_lse.stride(0) : 0;
  k.out_lse_head_stride = with_lse ? out_lse.stride(1) : 0;
  return call;
}

std::uint64_t MergeStates::bytes_moved(const Problem& p, bool with_lse) {
  const std::uint64_t row_bytes = static_cast<std::uint64_t>(p.dim) * dtype_size(p.dtype);
  const auto rows = static_cast<std::uint64_t>(p.rows);
  return rows *
         (static_cast<std::uint64_t>(p.parts) * (row_bytes + 4) + row_bytes + (with_lse ? 4 : 0));
}

}  // namespace kjit::ops

namespace kjit::attention {

void merge_states(const TensorView& parts, const TensorView& parts_lse, const TensorView& out,
                  const TensorView& out_lse, StreamHandle stream) {
  const ops::Call<ops::MergeStates> call =
      ops::MergeStates::validate(parts, parts_lse, out, out_lse);
  if (call.problem.rows > 0) ops::run(call, stream);
}

}  // namespace kjit::attention

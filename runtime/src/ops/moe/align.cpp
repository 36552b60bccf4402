#include "ops/moe/align.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "ops/dispatch.hpp"
#include "ops/tensor_checks.hpp"

namespace kjit::ops {
namespace {

const TensorChecks kAlignCheck("moe align");

}  // namespace

void MoeAlign::check(const Problem& p) {
  if (p.experts < 1 || p.experts > 1024)
    kAlignCheck.fail(fmt::format("experts must be 1 to 1024, got {}", p.experts));
  if (p.block < 1 || p.block > 1024)
    kAlignCheck.fail(fmt::format("block must be 1 to 1024 rows, got {}", p.block));
  // The kernel's int32 indices and loops (stepping by up to 8192: a cluster's threads) stay below
  // 2^31.
  if (p.pairs < 0 ||
      moe::align_capacity(p.pairs, static_cast<int>(p.experts), static_cast<int>(p.block)) + 8192 >
          (1ll << 31) - 1) {
    kAlignCheck.fail(
        fmt::format("{} pairs are more than the layout's int32 indices hold", p.pairs));
  }
}

KernelSpec MoeAlign::spec(const Config&, const Problem& p, const Arch& arch) {
  KernelSpec s(sources()[0], {fmt::format("kjit::moe::moe_align<{}>", p.experts)});
  s.arch = arch.name();
  return s;
}

std::vector<MoeAlign::Config> MoeAlign::space(const Problem&, const Arch& arch) {
  if (arch.version() < 90) return {{1}};
  return {{1}, {2}, {4}, {8}};
}

bool MoeAlign::valid(const Config& c, const Problem&, const Arch& arch) {
  return c.cluster == 1 || (arch.version() >= 90 && c.cluster >= 1 && c.cluster <= 8);
}

MoeAlign::Config MoeAlign::default_config(const Problem& p, const Arch& arch) {
  // Measured on an H200 (kjit tune, glm-4.7-flash-align and deepseek-v3-align): one block is
  // best up to about a thousand pairs, 4 blocks at 2048 (1.2x one block, 1.06x eight), the whole
  // cluster of 8 above 4096 (measured from 16384 on: 2.6-6.3x one block).
  if (arch.version() < 90 || p.pairs <= 1024) return {1};
  return {p.pairs <= 4096 ? 4 : 8};
}

void MoeAlign::launch(const Program& program, const Config& c, const Problem&, const Args& args,
                      StreamHandle stream) {
  const auto blocks = static_cast<unsigned>(c.cluster);
  program.kernel().launch({{blocks}, {1024}, 0, stream, {blocks}}, args);
}

std::vector<MoeAlign::Problem> MoeAlign::shipped(const Arch&) {
  std::vector<Problem> out;
  for (std::int64_t experts : {8, 64, 128, 256})
    out.push_back({DType::Int32, 1, experts, 64});
  return out;
}

std::vector<TensorSpec> MoeAlign::tensors(const Problem& p) {
  using Role = TensorSpec::Role;
  const std::int64_t capacity =
      moe::align_capacity(p.pairs, static_cast<int>(p.experts), static_cast<int>(p.block));
  const auto experts = static_cast<float>(p.experts);
  // The layout is integers, the same from every cluster size (tolerance 0).
  return {{"ids", DType::Int32, {p.pairs}, Role::Input, 0.f, experts},
          {"sorted", DType::Int32, {capacity}, Role::Output},
          {"block_expert", DType::Int32, {capacity / p.block}, Role::Output},
          {"counts", DType::Int32, {p.experts}, Role::Output},
          {"offsets", DType::Int32, {p.experts + 1}, Role::Output},
          {"invalid", DType::Int32, {1}, Role::Output}};
}

MoeAlign::Args MoeAlign::args(const Problem& p, const std::vector<TensorView>& t) {
  return validate(TensorView(t.at(0).data, DType::Int32, {p.pairs, 1}), static_cast<int>(p.experts),
                  static_cast<int>(p.block), {t.at(1), t.at(2), t.at(3), t.at(4), t.at(5)})
      .args;
}

std::vector<Preset<MoeAlign::Problem>> MoeAlign::presets() {
  Preset<Problem> glm{"glm-4.7-flash-align", {}}, dsv3{"deepseek-v3-align", {}};
  for (std::int64_t t : {16, 256, 4096, 16384}) {
    glm.problems.push_back({DType::Int32, t * 4, 64, 64});
    dsv3.problems.push_back({DType::Int32, t * 8, 256, 64});
  }
  return {glm, dsv3};
}

Call<MoeAlign> MoeAlign::validate(const TensorView& ids, int experts, int block,
                                  const moe::Alignment& out) {
  kAlignCheck.ndim(ids, "ids", 2, "[T, k]");
  kAlignCheck.data(ids, "ids");
  if (ids.dtype != DType::Int32 ||
      (ids.numel() > 1 && (ids.stride(1) != 1 || ids.stride(0) != ids.size(1))))
    kAlignCheck.fail(fmt::format("ids must be contiguous int32 [T, k], got {}", ids.describe()));
  Call<MoeAlign> call{};
  call.problem = {DType::Int32, ids.numel(), experts, block};
  check(call.problem);
  // sorted may be longer than the capacity, in whole blocks (a buffer sized once for the most
  // tokens, as a CUDA graph keeps it): the kernel pads it to its end and marks its blocks -1.
  const std::int64_t capacity = moe::align_capacity(call.problem.pairs, experts, block);
  const std::int64_t rows = out.sorted.ndim == 1 ? out.sorted.size(0) : capacity;
  if (rows < capacity || rows % block != 0 || rows + 8192 > (1ll << 31) - 1) {
    kAlignCheck.fail(fmt::format(
        "sorted must hold at least align_capacity = {} rows for {} pairs, in whole blocks of {} "
        "(below 2^31 - 8192), got {}",
        capacity, call.problem.pairs, block, out.sorted.describe()));
  }
  kAlignCheck.vector(out.sorted, "sorted", DType::Int32, rows);
  kAlignCheck.vector(out.block_expert, "block_expert", DType::Int32, rows / block);
  kAlignCheck.vector(out.counts, "counts", DType::Int32, experts);
  kAlignCheck.vector(out.offsets, "offsets", DType::Int32, experts + 1);
  kAlignCheck.vector(out.invalid, "invalid", DType::Int32, 1);
  Args& a = call.args;
  a.ids = static_cast<const int*>(ids.data);
  a.sorted = static_cast<int*>(out.sorted.data);
  a.block_expert = static_cast<int*>(out.block_expert.data);
  a.counts = static_cast<int*>(out.counts.data);
  a.offsets = static_cast<int*>(out.offsets.data);
  a.invalid = static_cast<int*>(out.invalid.data);
  a.pairs = static_cast<int>(call.problem.pairs);
  a.block = block;
  a.blocks = static_cast<int>(rows / block);
  return call;
}

}  // namespace kjit::ops

namespace kjit::moe {

std::int64_t align_capacity(std::int64_t pairs, int experts, int block) {
  // m experts holding c_e > 0 pairs take sum ceil(c_e / block) <= m + (pairs - m) / block blocks,
  // most for m = min(E, pairs): decode's few pairs get a few blocks (a GEMM launched over the
  // capacity then has no grid of empty blocks to retire), not E (block - 1) rows of padding.
  if (block <= 0 || pairs <= 0 || experts <= 0) return 0;
  const std::int64_t m = std::min<std::int64_t>(experts, pairs);
  return (m + (pairs - m) / block) * block;
}

void align(const TensorView& ids, int experts, int block, const Alignment& out,
           StreamHandle stream) {
  ops::run(ops::MoeAlign::validate(ids, experts, block, out), stream);
}

}  // namespace kjit::moe

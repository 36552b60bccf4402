#include "ops/moe/grouped_gemm.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "driver/tensor_map.hpp"
#include "ops/dispatch.hpp"
#include "ops/tensor_checks.hpp"

namespace kjit::ops {
namespace {

const TensorChecks kGemmCheck("moe grouped gemm");
constexpr std::int64_t kBlockK = 64;

void check_operand(const TensorView& t, const char* name, int ndim, const char* layout,
                   DType dtype) {
  kGemmCheck.ndim(t, name, ndim, layout);
  kGemmCheck.data(t, name);
  kGemmCheck.contiguous_last(t, name);
  kGemmCheck.nonnegative_strides(t, name);
  if (t.dtype != dtype)
    kGemmCheck.fail(fmt::format("{} must be {}, got {}", name, dtype_name(dtype), t.describe()));
  kGemmCheck.aligned(t, name, 16);
}

}  // namespace

void MoeGemm::check(const Problem& p) {
  if (p.dtype != DType::BFloat16 && p.dtype != DType::Float16)
    kGemmCheck.fail(fmt::format("x_sorted must be bf16 or fp16, got {}", dtype_name(p.dtype)));
  if (p.block_m != 64 && p.block_m != 128)
    kGemmCheck.fail(fmt::format("block (align's) must be 64 or 128 rows, got {}", p.block_m));
  if (p.rows < 0 || p.rows % p.block_m != 0 || p.rows > (1ll << 31) - 1)
    kGemmCheck.fail(
        fmt::format("x_sorted's {} rows must be whole blocks of {}", p.rows, p.block_m));
  if (p.k < kBlockK || p.k % kBlockK != 0 || p.k > (1ll << 31) - 1)
    kGemmCheck.fail(fmt::format("K must be a positive multiple of 64, got {}", p.k));
  if (p.n < 64 || p.n % 64 != 0 || p.n > (1ll << 31) - 1)
    kGemmCheck.fail(fmt::format("N must be a positive multiple of 64, got {}", p.n));
  if (p.experts < 1 || p.experts > (1ll << 31) - 1)
    kGemmCheck.fail(fmt::format("w must hold at least one expert, got {}", p.experts));
}

unsigned MoeGemm::shared_bytes(const Config& c, const Problem& p) {
  // grouped_gemm.cuh: 1024 bytes of slack to align the swizzled tiles, the stages' row and weight
  // slices, a full and an empty mbarrier a stage.
  return static_cast<unsigned>(1024 + c.stages * (p.block_m + c.block_n) * kBlockK * 2 +
                               2 * c.stages * 8);
}

std::vector<MoeGemm::Config> MoeGemm::space(const Problem& p, const Arch& arch) {
  std::vector<Config> out;
  for (std::int64_t block_n : {64, 128}) {
    for (std::int64_t stages = 2; stages <= 8; ++stages) {
      if (valid({block_n, stages}, p, arch)) out.push_back({block_n, stages});
    }
  }
  return out;
}

bool MoeGemm::valid(const Config& c, const Problem& p, const Arch& arch) {
  return arch.has_wgmma() && (c.block_n == 64 || c.block_n == 128) && p.n % c.block_n == 0 &&
         c.stages >= 2 && c.stages <= 8 && shared_bytes(c, p) <= arch.max_shared_bytes();
}

MoeGemm::Config MoeGemm::default_config(const Problem& p, const Arch& arch) {
  // 128 columns where N allows, and as many stages (up to 6) as shared memory holds.
  Config c{p.n % 128 == 0 ? 128 : 64, 6};
  while (c.stages > 2 && !valid(c, p, arch))
    --c.stages;
  return c;
}

KernelSpec MoeGemm::spec(const Config& c, const Problem& p, const Arch& arch) {
  KernelSpec s(sources()[0], {fmt::format("kjit::moe::moe_grouped_gemm<{}, {}, {}, {}>",
                                          cxx_type(p.dtype), p.block_m, c.block_n, c.stages)});
  s.arch = arch.name();
  return s;
}

void MoeGemm::launch(const Program& program, const Config& c, const Problem& p,
                     const Args& call_args, StreamHandle stream) {
  if (p.rows == 0) return;
  Args args = call_args;
  const auto u = [](std::int64_t v) { return static_cast<std::uint64_t>(v); };
  args.x_map = driver::tiled_map_16bit(args.x, {u(p.k), u(p.rows), 1, 1},
                                       {args.x_row_stride, args.x_row_stride, args.x_row_stride},
                                       {64, static_cast<std::uint32_t>(p.block_m), 1, 1});
  args.w_map =
      driver::tiled_map_16bit(args.w, {u(p.k), u(p.n), u(p.experts), 1},
                              {args.w_row_stride, args.w_expert_stride, args.w_expert_stride},
                              {64, static_cast<std::uint32_t>(c.block_n), 1, 1});
  program.kernel().launch(
      {{static_cast<unsigned>(p.n / c.block_n), static_cast<unsigned>(p.rows / p.block_m)},
       {static_cast<unsigned>(128 * (1 + p.block_m / 64))},
       shared_bytes(c, p),
       stream,
       {}},
      args);
}

std::vector<MoeGemm::Problem> MoeGemm::shipped(const Arch& arch) {
  if (!arch.has_wgmma()) return {};  // no mma.sync path yet
  return {{DType::BFloat16, 128, 3072, 2048, 64, 128}, {DType::BFloat16, 128, 2048, 1536, 64, 128}};
}

std::vector<TensorSpec> MoeGemm::tensors(const Problem& p) {
  using Role = TensorSpec::Role;
  return {{"x_sorted", p.dtype, {p.rows, p.k}, Role::Input, -0.1f, 0.1f},
          {"block_expert",
           DType::Int32,
           {p.rows / p.block_m},
           Role::Input,
           0.f,
           static_cast<float>(p.experts)},
          {"w", p.dtype, {p.experts, p.n, p.k}, Role::Input, -0.1f, 0.1f},
          {"y", p.dtype, {p.rows, p.n}, Role::Output}};
}

MoeGemm::Args MoeGemm::args(const Problem& p, const std::vector<TensorView>& t) {
  return validate(t.at(0), t.at(1), static_cast<int>(p.block_m), t.at(2), t.at(3)).args;
}

std::vector<Preset<MoeGemm::Problem>> MoeGemm::presets() {
  Preset<Problem> glm{"glm-4.7-flash-moe-gemm", {}};
  for (std::int64_t t : {256, 1024, 4096, 16384}) {
    const std::int64_t rows = moe::align_capacity(t * 4, 64, 128);
    glm.problems.push_back({DType::BFloat16, rows, 3072, 2048, 64, 128});
    glm.problems.push_back({DType::BFloat16, rows, 2048, 1536, 64, 128});
  }
  return {glm};
}

Call<MoeGemm> MoeGemm::validate(const TensorView& x_sorted, const TensorView& block_expert,
                                int block, const TensorView& w, const TensorView& y) {
  check_operand(x_sorted, "x_sorted", 2, "[rows, K]", x_sorted.dtype);
  Call<MoeGemm> call{};
  Problem& p = call.problem;
  p.dtype = x_sorted.dtype;
  p.rows = x_sorted.size(0);
  p.k = x_sorted.size(1);
  p.block_m = block;
  kGemmCheck.ndim(w, "w", 3, "[E, N, K]");
  p.experts = w.size(0);
  p.n = w.size(1);
  check(p);  // a card without wgmma: refused by the dispatch (no config of the family runs)
  check_operand(w, "w", 3, "[E, N, K]", p.dtype);
  if (w.size(2) != p.k)
    kGemmCheck.fail(fmt::format("w's K must be x_sorted's {}, got {}", p.k, w.describe()));
  check_operand(y, "y", 2, "[rows, N]", p.dtype);
  if (y.size(0) != p.rows || y.size(1) != p.n) {
    kGemmCheck.fail(fmt::format("y must be [{}, {}] (rows, N), got {}", p.rows, p.n, y.describe()));
  }
  if (block_expert.dtype != DType::Int32 || block_expert.ndim != 1 ||
      block_expert.size(0) != p.rows / p.block_m ||
      (block_expert.size(0) > 1 && block_expert.stride(0) != 1)) {
    kGemmCheck.fail(fmt::format("block_expert must be contiguous int32 [{}], got {}",
                                p.rows / p.block_m, block_expert.describe()));
  }
  kGemmCheck.data(block_expert, "block_expert");
  Args& a = call.args;
  a.x = x_sorted.data;
  a.w = w.data;
  a.block_expert = static_cast<const int*>(block_expert.data);
  a.y = y.data;
  a.x_row_stride = x_sorted.stride(0);
  a.w_expert_stride = w.stride(0);
  a.w_row_stride = w.stride(1);
  a.y_row_stride = y.stride(0);
  a.rows = static_cast<int>(p.rows);
  a.n = static_cast<int>(p.n);
  a.k = static_cast<int>(p.k);
  a.experts = static_cast<int>(p.experts);
  return call;
}

}  // namespace kjit::ops

namespace kjit::moe {

void grouped_gemm(const TensorView& x_sorted, const TensorView& block_expert, int block,
                  const TensorView& w, const TensorView& y, StreamHandle stream) {
  const ops::Call<ops::MoeGemm> call = ops::MoeGemm::validate(x_sorted, block_expert, block, w, y);
  if (call.problem.rows > 0) ops::run(call, stream);
}

}  // namespace kjit::moe

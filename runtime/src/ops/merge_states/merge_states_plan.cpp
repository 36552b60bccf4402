#include "ops/merge_states/merge_states_plan.hpp"

#include <cstdint>
#include <numeric>

#include <fmt/format.h>

#include "kjit/error.hpp"

namespace kjit::attention::merge_states_plan {
namespace {

const char* type_name(DType dtype) {
  switch (dtype) {
    case DType::Float16:
      return "__half";
    case DType::BFloat16:
      return "__nv_bfloat16";
    default:
      return "float";
  }
}

[[noreturn]] void bad(const std::string& message) {
  throw InvalidArgument("merge_states: " + message);
}

void expect_dims(const TensorView& t, int ndim, const char* name, const char* layout) {
  if (t.ndim != ndim)
    bad(fmt::format("{} must be {}-D {}, got {}", name, ndim, layout, t.describe()));
}

// The largest power of two (<= 16) dividing every row start: base addresses and the strides
// between rows, in bytes.
unsigned row_alignment(std::initializer_list<std::pair<const TensorView*, int>> tensors) {
  std::uint64_t g = 16;
  for (const auto& [t, row_dims] : tensors) {
    g = std::gcd(g, reinterpret_cast<std::uintptr_t>(t->data));
    for (int d = 0; d < row_dims; ++d) {
      g = std::gcd(g, static_cast<std::uint64_t>(std::llabs(t->strides[d])) * dtype_size(t->dtype));
    }
  }
  return static_cast<unsigned>(g == 0 ? 16 : g);
}

}  // namespace

Problem validate(const TensorView& parts, const TensorView& parts_lse, const TensorView& out,
                 const TensorView& out_lse) {
  expect_dims(parts, 4, "parts", "[N, T, H, D]");
  expect_dims(parts_lse, 3, "parts_lse", "[N, T, H]");
  expect_dims(out, 3, "out", "[T, H, D]");
  const bool with_lse = out_lse.data != nullptr;
  if (with_lse) expect_dims(out_lse, 2, "out_lse", "[T, H]");
  if (parts.dtype != DType::Float16 && parts.dtype != DType::BFloat16 &&
      parts.dtype != DType::Float32) {
    bad(fmt::format("parts must be fp16, bf16 or fp32, got {}", dtype_name(parts.dtype)));
  }
  if (out.dtype != parts.dtype) {
    bad(fmt::format("out must have the dtype of parts ({}), got {}", dtype_name(parts.dtype),
                    dtype_name(out.dtype)));
  }
  if (parts_lse.dtype != DType::Float32) bad("parts_lse must be fp32, got " + parts_lse.describe());
  if (with_lse && out_lse.dtype != DType::Float32)
    bad("out_lse must be fp32, got " + out_lse.describe());

  Problem p;
  p.dtype = parts.dtype;
  p.parts = static_cast<int>(parts.size(0));
  p.tokens = parts.size(1);
  p.heads = parts.size(2);
  const std::int64_t dim = parts.size(3);
  if (parts.size(0) < 1 || parts.size(0) > kMaxParts) {
    bad(fmt::format("the number of parts (parts dim 0) must be in 1..{}, got {}", kMaxParts,
                    parts.size(0)));
  }
  if (dim < kMinDim || dim > kMaxDim || dim % 8 != 0) {
    bad(fmt::format("head dim (parts dim 3) must be a multiple of 8 in {}..{}, got {}", kMinDim,
                    kMaxDim, dim));
  }
  p.dim = static_cast<int>(dim);
  if (p.tokens < 0 || p.heads < 0) bad("parts has a negative size: " + parts.describe());
  if (parts_lse.size(0) != p.parts || parts_lse.size(1) != p.tokens ||
      parts_lse.size(2) != p.heads) {
    bad(fmt::format("parts_lse must be [N, T, H] = [{}, {}, {}], got {}", p.parts, p.tokens,
                    p.heads, parts_lse.describe()));
  }
  if (out.size(0) != p.tokens || out.size(1) != p.heads || out.size(2) != dim) {
    bad(fmt::format("out must be [T, H, D] = [{}, {}, {}], got {}", p.tokens, p.heads, dim,
                    out.describe()));
  }
  if (with_lse && (out_lse.size(0) != p.tokens || out_lse.size(1) != p.heads)) {
    bad(fmt::format("out_lse must be [T, H] = [{}, {}], got {}", p.tokens, p.heads,
                    out_lse.describe()));
  }
  if (parts.stride(3) != 1)
    bad("parts must be contiguous in its last dim, got " + parts.describe());
  if (out.stride(2) != 1) bad("out must be contiguous in its last dim, got " + out.describe());
  for (const auto& [t, name] :
       {std::pair{&parts, "parts"}, {&parts_lse, "parts_lse"}, {&out, "out"}}) {
    for (int d = 0; d < t->ndim; ++d) {
      if (t->strides[d] < 0) bad(fmt::format("{} has a negative stride: {}", name, t->describe()));
    }
    if (p.rows() > 0 && !t->data) bad(fmt::format("{} is a null pointer", name));
  }
  const std::size_t elem = dtype_size(p.dtype);
  p.alignment = row_alignment({{&parts, 3}, {&out, 2}});
  if (p.alignment < elem) {
    bad(fmt::format("parts and out must be aligned to their element size ({} bytes)", elem));
  }
  KjitMergeStatesParams& k = p.params;
  k.parts = parts.data;
  k.parts_lse = static_cast<const float*>(parts_lse.data);
  k.out = out.data;
  k.out_lse = with_lse ? static_cast<float*>(out_lse.data) : nullptr;
  k.rows = p.rows();
  k.heads = p.heads;
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
  return p;
}

std::vector<std::pair<std::string, std::vector<std::int64_t>>> search_space(DType dtype) {
  std::vector<std::int64_t> vec;
  for (std::int64_t bytes : {4, 8, 16})
    vec.push_back(bytes / static_cast<std::int64_t>(dtype_size(dtype)));
  return {
      {"vec", vec}, {"threads_per_row", {4, 8, 16, 32, 64}}, {"rows_per_block", {1, 2, 4, 8, 16}}};
}

bool valid(const tuning::Config& c, DType dtype, int dim, unsigned alignment) {
  const std::int64_t vec = tuning::config_value(c, "vec"),
                     tpr = tuning::config_value(c, "threads_per_row"),
                     rows = tuning::config_value(c, "rows_per_block");
  if (vec <= 0 || tpr <= 0 || rows <= 0 || c.size() != 3) return false;
  const std::int64_t bytes = vec * static_cast<std::int64_t>(dtype_size(dtype));
  const bool vec_ok = (bytes == 2 || bytes == 4 || bytes == 8 || bytes == 16) &&
                      bytes <= static_cast<std::int64_t>(alignment) && dim % vec == 0;
  const std::int64_t threads = tpr * rows;
  return vec_ok && tpr * vec <= dim && threads >= 32 && threads <= 1024;
}

bool valid(const tuning::Config& c, const Problem& p) {
  return valid(c, p.dtype, p.dim, p.alignment);
}

tuning::Config default_config(DType dtype, int dim, unsigned alignment) {
  const std::int64_t elem = static_cast<std::int64_t>(dtype_size(dtype));
  const std::int64_t vec = std::min<std::int64_t>(16, alignment) / elem;
  const std::int64_t tpr = std::min<std::int64_t>(32, dim / vec);
  return {{"vec", vec},
          {"threads_per_row", tpr},
          {"rows_per_block", std::max<std::int64_t>(1, 256 / tpr)}};
}

KernelSpec spec(const tuning::Config& c, DType dtype, int dim, int parts, const std::string& arch) {
  KernelSpec s(
      Source::embedded(kTemplate),
      {fmt::format("kjit::attention::merge_states<{}, {}, {}, {}, {}, {}>", type_name(dtype), dim,
                   parts, c.at("vec"), c.at("threads_per_row"), c.at("rows_per_block"))});
  s.arch = arch;
  return s;
}

void launch(const Kernel& kernel, const tuning::Config& c, const Problem& p, StreamHandle stream) {
  if (p.rows() == 0) return;
  const long long per_block = c.at("rows_per_block");
  const long long blocks = (p.rows() + per_block - 1) / per_block;
  if (blocks > 0x7fffffffLL)
    bad(fmt::format("{} rows need more blocks than a grid holds", p.rows()));
  kernel.launch({{static_cast<unsigned>(blocks)},
                 {static_cast<unsigned>(c.at("threads_per_row") * per_block)},
                 0,
                 stream,
                 {}},
                p.params);
}

std::uint64_t bytes_moved(const Problem& p) {
  const std::uint64_t row_bytes = static_cast<std::uint64_t>(p.dim) * dtype_size(p.dtype);
  const std::uint64_t rows = static_cast<std::uint64_t>(p.rows());
  const std::uint64_t lse = p.params.out_lse ? 4 : 0;
  return rows * (static_cast<std::uint64_t>(p.parts) * (row_bytes + 4) + row_bytes + lse);
}

std::vector<KernelSpec> shipped(const std::string& arch) {
  std::vector<KernelSpec> out;
  for (DType dtype : {DType::Float16, DType::BFloat16, DType::Float32}) {
    for (int dim : {64, 128, 256, 512}) {
      for (int parts : {2, 4, 8, 16}) {
        out.push_back(spec(default_config(dtype, dim, 16), dtype, dim, parts, arch));
      }
    }
  }
  return out;
}

}  // namespace kjit::attention::merge_states_plan

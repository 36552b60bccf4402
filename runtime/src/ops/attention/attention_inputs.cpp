#include "ops/attention/attention_inputs.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>

#include <fmt/format.h>

#include "driver/tensor_map.hpp"

namespace kjit::ops {

const TensorChecks kAttentionCheck("attention");

void check_attention_length(std::int64_t n, const char* what) {
  if (n > std::numeric_limits<int>::max() / 2)
    kAttentionCheck.fail(fmt::format("{} = {} is beyond what the kernel indexes", what, n));
}

void check_attention_tensors(const TensorView& q, const TensorView& k, const TensorView& v,
                             const TensorView& out, int dims, const TensorChecks& checks) {
  for (const auto& [t, name] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}, {&out, "out"}}) {
    checks.strided(*t, name, dims, dims == 4 ? "[B, S, H, D]" : "[T, H, D]");
    checks.aligned(*t, name, 16);
  }
  if (q.dtype != DType::Float16 && q.dtype != DType::BFloat16)
    checks.fail(fmt::format("q must be fp16 or bf16, got {}", dtype_name(q.dtype)));
  for (const auto& [t, name] : {std::pair{&k, "k"}, {&v, "v"}, {&out, "out"}})
    checks.same_dtype(*t, name, q, "q");
  const std::int64_t d = q.size(dims - 1);
  if (k.size(dims - 1) != d || v.size(dims - 1) != d || out.size(dims - 1) != d)
    checks.fail(fmt::format("q, k, v and out must share the head dim {}", d));
  if (v.size(dims - 2) != k.size(dims - 2))
    checks.fail(
        fmt::format("v must have k's {} heads, got {}", k.size(dims - 2), v.size(dims - 2)));
  for (int i = 0; i < dims; ++i) {
    if (out.size(i) != q.size(i))
      checks.fail(
          fmt::format("out must have q's shape, got {} for {}", out.describe(), q.describe()));
  }
}

void check_like(const TensorView& t, const char* name, const TensorView& ref, const char* ref_name,
                int dims, const TensorChecks& checks) {
  checks.strided(t, name, dims, dims == 4 ? "[B, S, H, D]" : "[T, H, D]");
  checks.aligned(t, name, 16);
  checks.same_dtype(t, name, ref, ref_name);
  for (int i = 0; i < dims; ++i) {
    if (t.size(i) != ref.size(i)) {
      checks.fail(fmt::format("{} must have {}'s shape, got {} for {}", name, ref_name,
                              t.describe(), ref.describe()));
    }
  }
}

LongestSequences check_varlen(const attention::Varlen& s, std::int64_t tokens_q,
                              std::int64_t tokens_k, const TensorChecks& checks) {
  std::int64_t longest[2] = {0, 0};
  for (const auto& [view, host, tokens, name, max] :
       {std::tuple{&s.cu_seqlens_q, s.host_cu_seqlens_q, tokens_q, "cu_seqlens_q", &longest[0]},
        std::tuple{&s.cu_seqlens_k, s.host_cu_seqlens_k, tokens_k, "cu_seqlens_k", &longest[1]}}) {
    if (view->dtype != DType::Int32)
      checks.fail(fmt::format("{} must be int32, got {}", name, dtype_name(view->dtype)));
    if (view->ndim != 1 || view->size(0) < 2)
      checks.fail(
          fmt::format("{} must be 1-D [B + 1] with B >= 1, got {}", name, view->describe()));
    if (view->stride(0) != 1) checks.fail(fmt::format("{} must be contiguous", name));
    checks.data(*view, name);
    if (!host) {
      checks.fail(fmt::format(
          "the host copy of {} is a null pointer (kjit validates it on the host)", name));
    }
    const std::int64_t n = view->size(0);
    if (view == &s.cu_seqlens_k && n != s.cu_seqlens_q.size(0)) {
      checks.fail(fmt::format("cu_seqlens_k has {} entries, cu_seqlens_q {}: both must be B + 1", n,
                              s.cu_seqlens_q.size(0)));
    }
    if (host[0] != 0) checks.fail(fmt::format("{}[0] must be 0, got {}", name, host[0]));
    for (std::int64_t i = 1; i < n; ++i) {
      if (host[i] < host[i - 1]) {
        checks.fail(fmt::format("{} must be non-decreasing: [{}] = {} after {}", name, i, host[i],
                                host[i - 1]));
      }
      *max = std::max<std::int64_t>(*max, host[i] - host[i - 1]);
    }
    if (host[n - 1] != tokens) {
      checks.fail(
          fmt::format("{}[B] = {} but the tensor holds {} tokens", name, host[n - 1], tokens));
    }
  }
  check_attention_length(tokens_q, "Tq");
  check_attention_length(tokens_k, "Tk");
  return {longest[0], longest[1]};
}

LseStrides check_lse(const TensorView& lse, std::int64_t outer, std::int64_t heads,
                     std::int64_t seq, bool batched, const char* whose,
                     const TensorChecks& checks) {
  const int dims = batched ? 3 : 2;
  const bool shape_ok = lse.ndim == dims && (!batched || lse.size(0) == outer) &&
                        lse.size(dims - 2) == heads && lse.size(dims - 1) == seq;
  if (!shape_ok || lse.dtype != DType::Float32 || (lse.stride(dims - 1) != 1 && seq > 1)) {
    checks.fail(fmt::format("lse must be {}fp32 {} contiguous in its last dim, got {}", whose,
                            batched ? fmt::format("[{}, {}, {}]", outer, heads, seq)
                                    : fmt::format("[{}, {}]", heads, seq),
                            lse.describe()));
  }
  checks.nonnegative_strides(lse, "lse");
  return {batched ? lse.stride(0) : 0, lse.stride(dims - 2)};
}

std::vector<BenchRow> fa_bench_rows() {
  std::vector<BenchRow> rows;
  for (std::int64_t d : {64, 128, 256}) {
    for (std::int64_t s : {2048, 8192, 16384}) {
      for (bool causal : {false, true})
        rows.push_back({16384 / s, s, 2048 / d, 2048 / d, d, causal});
    }
  }
  rows.push_back({2, 8192, 32, 8, 128, true});
  return rows;
}

KjitTensorMap head_tile_map(const void* data, std::int64_t head_dim, std::int64_t rows,
                            std::int64_t heads, std::int64_t outer, std::int64_t row_stride,
                            std::int64_t head_stride, std::int64_t batch_stride,
                            std::int64_t box_rows) {
  const auto u = [](std::int64_t v) { return static_cast<std::uint64_t>(v); };
  return driver::tiled_map_16bit(data, {u(head_dim), u(rows), u(heads), u(outer)},
                                 {row_stride, head_stride, batch_stride},
                                 {64, static_cast<std::uint32_t>(box_rows), 1, 1});
}

float softmax_scale(float requested, std::int64_t head_dim) {
  if (!(requested >= 0) || !std::isfinite(requested)) {
    kAttentionCheck.fail(
        fmt::format("softmax_scale must be finite and >= 0 (0: 1/sqrt(D)), got {}", requested));
  }
  return requested > 0 ? requested : 1.f / std::sqrt(static_cast<float>(head_dim));
}

}  // namespace kjit::ops

#include "ops/mla/mla_inputs.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "ops/tensor_checks.hpp"

namespace kjit::ops {
namespace {

const TensorChecks kMlaCheck("mla decode");

void check_rows(const TensorView& t, const char* name, int ndim, const char* layout) {
  kMlaCheck.strided(t, name, ndim, layout);
  kMlaCheck.aligned(t, name, 16);
}

// An int32 tensor of `shape` (contiguous: an empty one's strides do not matter, as torch gives a
// [B, 0] table strides (1, 1)), and its host copy.
void check_index(const TensorView& t, const std::int32_t* host, const char* name,
                 std::initializer_list<std::int64_t> shape) {
  bool ok = t.dtype == DType::Int32 && t.ndim == static_cast<int>(shape.size());
  const bool empty = t.numel() == 0;
  std::int64_t stride = 1;
  for (int d = t.ndim - 1; ok && d >= 0; --d) {
    ok = t.size(d) == shape.begin()[d] && (empty || t.stride(d) == stride || t.size(d) == 1);
    stride *= t.size(d);
  }
  if (!ok) {
    std::string want;
    for (std::int64_t n : shape)
      want += (want.empty() ? "" : ", ") + std::to_string(n);
    kMlaCheck.fail(
        fmt::format("{} must be contiguous int32 [{}], got {}", name, want, t.describe()));
  }
  kMlaCheck.data(t, name);
  if (!host && t.numel() > 0) {
    kMlaCheck.fail(
        fmt::format("the host copy of {} is a null pointer (kjit validates it on the host)", name));
  }
}

}  // namespace

MlaDecodeShape check_mla_decode(const TensorView& q, const mla::PagedCache& c,
                                const TensorView& out, const TensorView& lse) {
  check_rows(q, "q", 4, "[B, s_q, H, 576]");
  check_rows(c.cache, "cache", 3, "[num_blocks, block_size, 576]");
  check_rows(out, "out", 4, "[B, s_q, H, 512]");
  if (q.dtype != DType::Float16 && q.dtype != DType::BFloat16)
    kMlaCheck.fail(fmt::format("q must be fp16 or bf16, got {}", dtype_name(q.dtype)));
  kMlaCheck.same_dtype(c.cache, "cache", q, "q");
  kMlaCheck.same_dtype(out, "out", q, "q");
  if (q.size(3) != mla::kHeadDim || c.cache.size(2) != mla::kHeadDim) {
    kMlaCheck.fail(
        fmt::format("q and cache rows must be {} wide (latent {} + rope {}), got {} and {}",
                    mla::kHeadDim, mla::kLatentDim, mla::kRopeDim, q.size(3), c.cache.size(2)));
  }
  MlaDecodeShape s;
  s.dtype = q.dtype;
  s.batch = q.size(0);
  s.s_q = q.size(1);
  s.heads = q.size(2);
  s.num_blocks = c.cache.size(0);
  s.block_size = c.cache.size(1);
  if (s.s_q < 1 || s.s_q > 4)
    kMlaCheck.fail(fmt::format("s_q (new tokens per sequence) must be 1 to 4, got {}", s.s_q));
  if (s.heads < 1) kMlaCheck.fail(fmt::format("q has {} heads", s.heads));
  if (s.block_size != 32 && s.block_size != 64)
    kMlaCheck.fail(fmt::format("cache blocks must hold 32 or 64 tokens, got {}", s.block_size));
  if (out.size(0) != s.batch || out.size(1) != s.s_q || out.size(2) != s.heads ||
      out.size(3) != mla::kLatentDim) {
    kMlaCheck.fail(fmt::format("out must be [{}, {}, {}, {}], got {}", s.batch, s.s_q, s.heads,
                               mla::kLatentDim, out.describe()));
  }
  if (lse.data) {
    const bool shape_ok =
        lse.ndim == 3 && lse.size(0) == s.batch && lse.size(1) == s.s_q && lse.size(2) == s.heads;
    if (!shape_ok || lse.dtype != DType::Float32) {
      kMlaCheck.fail(fmt::format("lse must be fp32 [{}, {}, {}], got {}", s.batch, s.s_q, s.heads,
                                 lse.describe()));
    }
    kMlaCheck.nonnegative_strides(lse, "lse");
  }
  s.max_blocks = c.block_table.ndim == 2 ? c.block_table.size(1) : 0;
  check_index(c.block_table, c.host_block_table, "block_table", {s.batch, s.max_blocks});
  check_index(c.lengths, c.host_lengths, "lengths", {s.batch});
  for (std::int64_t b = 0; b < s.batch; ++b) {
    const std::int64_t length = c.host_lengths[b];
    if (length < 0 || length > s.max_blocks * s.block_size) {
      kMlaCheck.fail(fmt::format("sequence {}: length {} is outside the block table's {} tokens", b,
                                 length, s.max_blocks * s.block_size));
    }
    const std::int64_t used = (length + s.block_size - 1) / s.block_size;
    for (std::int64_t i = 0; i < used; ++i) {
      const std::int32_t block = c.host_block_table[b * s.max_blocks + i];
      if (block < 0 || block >= s.num_blocks) {
        kMlaCheck.fail(
            fmt::format("sequence {}: block_table[{}][{}] = {} is outside the cache's {} blocks", b,
                        b, i, block, s.num_blocks));
      }
    }
    s.longest = std::max(s.longest, length);
    s.keys += length;
  }
  if (s.longest > (1ll << 30))
    kMlaCheck.fail(
        fmt::format("a sequence of {} tokens is beyond what the kernel indexes", s.longest));
  return s;
}

}  // namespace kjit::ops

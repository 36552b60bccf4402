#include "ops/attention/flash_forward_plan.hpp"

#include <cmath>
#include <cstdint>
#include <limits>

#include <fmt/format.h>

#include "jit/compile_plan.hpp"
#include "kjit/error.hpp"

namespace kjit::attention::flash_plan {
namespace {

[[noreturn]] void bad(const std::string& message) {
  throw InvalidArgument("attention: " + message);
}

const char* type_name(DType dtype) {
  return dtype == DType::Float16 ? "__half" : "__nv_bfloat16";
}

bool supported_head_dim(std::int64_t d) {
  for (int h : kHeadDims) {
    if (d == h) return true;
  }
  return false;
}

// Checks shared by both layouts; `dims` is 4 (batched) or 3 (packed), the head dim is last.
void check_common(const TensorView& q, const TensorView& k, const TensorView& v,
                  const TensorView& out, int dims) {
  for (const auto& [t, name] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}, {&out, "out"}}) {
    if (t->ndim != dims) {
      bad(fmt::format("{} must be {}-D, got {}", name, dims == 4 ? "4 [B, S, H, D]" : "3 [T, H, D]",
                      t->describe()));
    }
    if (!t->data) bad(fmt::format("{} is a null pointer", name));
    if (t->stride(dims - 1) != 1)
      bad(fmt::format("{} must be contiguous in its head dim, got {}", name, t->describe()));
    if (reinterpret_cast<std::uintptr_t>(t->data) % 16 != 0)
      bad(fmt::format("{} must be 16-byte aligned", name));
    for (int d = 0; d < dims - 1; ++d) {
      if (t->strides[d] < 0) bad(fmt::format("{} has a negative stride: {}", name, t->describe()));
      if ((t->strides[d] * static_cast<std::int64_t>(dtype_size(t->dtype))) % 16 != 0) {
        bad(fmt::format("{}'s stride {} ({} elements) is not a multiple of 16 bytes", name, d,
                        t->strides[d]));
      }
    }
  }
  if (q.dtype != DType::Float16 && q.dtype != DType::BFloat16) {
    bad(fmt::format("q must be fp16 or bf16, got {}", dtype_name(q.dtype)));
  }
  for (const auto& [t, name] : {std::pair{&k, "k"}, {&v, "v"}, {&out, "out"}}) {
    if (t->dtype != q.dtype) {
      bad(fmt::format("{} must have q's dtype ({}), got {}", name, dtype_name(q.dtype),
                      dtype_name(t->dtype)));
    }
  }
  const std::int64_t d = q.size(dims - 1);
  if (!supported_head_dim(d))
    bad(fmt::format("head dim {} is not one of 64, 96, 128, 192, 256", d));
  if (k.size(dims - 1) != d || v.size(dims - 1) != d || out.size(dims - 1) != d) {
    bad(fmt::format("q, k, v and out must share the head dim {}", d));
  }
  const std::int64_t hq = q.size(dims - 2), hk = k.size(dims - 2);
  if (hk <= 0 || hq <= 0 || hq % hk != 0) {
    bad(fmt::format("query heads ({}) must be a positive multiple of key/value heads ({})", hq,
                    hk));
  }
  if (v.size(dims - 2) != hk)
    bad(fmt::format("v must have k's {} heads, got {}", hk, v.size(dims - 2)));
  for (int i = 0; i < dims; ++i) {
    if (out.size(i) != q.size(i))
      bad(fmt::format("out must have q's shape, got {} for {}", out.describe(), q.describe()));
  }
}

void fill_strides(KjitFlashParams& p, const TensorView& q, const TensorView& k, const TensorView& v,
                  const TensorView& out, bool batched) {
  const int o = batched ? 1 : 0;  // index of the sequence dim
  p.q = q.data;
  p.k = k.data;
  p.v = v.data;
  p.out = out.data;
  p.q_batch_stride = batched ? q.stride(0) : 0;
  p.k_batch_stride = batched ? k.stride(0) : 0;
  p.v_batch_stride = batched ? v.stride(0) : 0;
  p.o_batch_stride = batched ? out.stride(0) : 0;
  p.q_row_stride = q.stride(o);
  p.k_row_stride = k.stride(o);
  p.v_row_stride = v.stride(o);
  p.o_row_stride = out.stride(o);
  p.q_head_stride = q.stride(o + 1);
  p.k_head_stride = k.stride(o + 1);
  p.v_head_stride = v.stride(o + 1);
  p.o_head_stride = out.stride(o + 1);
}

void check_lse(const TensorView& lse, std::int64_t outer, std::int64_t heads, std::int64_t seq,
               bool batched, KjitFlashParams& p) {
  if (!lse.data) {
    p.lse = nullptr;
    return;
  }
  const int dims = batched ? 3 : 2;
  const bool shape_ok = lse.ndim == dims && (!batched || lse.size(0) == outer) &&
                        lse.size(dims - 2) == heads && lse.size(dims - 1) == seq;
  if (!shape_ok || lse.dtype != DType::Float32 || lse.stride(dims - 1) != 1) {
    bad(fmt::format("lse must be fp32 {} contiguous in its last dim, got {}",
                    batched ? fmt::format("[{}, {}, {}]", outer, heads, seq)
                            : fmt::format("[{}, {}]", heads, seq),
                    lse.describe()));
  }
  p.lse = static_cast<float*>(lse.data);
  p.lse_batch_stride = batched ? lse.stride(0) : 0;
  p.lse_head_stride = lse.stride(dims - 2);
}

float scale_log2(const ForwardOptions& o, int head_dim) {
  const float scale =
      o.softmax_scale > 0 ? o.softmax_scale : 1.f / std::sqrt(static_cast<float>(head_dim));
  if (!(o.softmax_scale >= 0) || !std::isfinite(o.softmax_scale)) {
    bad(fmt::format("softmax_scale must be finite and >= 0 (0: 1/sqrt(D)), got {}",
                    o.softmax_scale));
  }
  return scale * 1.4426950408889634f;
}

// Indices inside a sequence are 32-bit in the kernel; offsets are 64-bit.
void check_length(std::int64_t n, const char* what) {
  if (n > std::numeric_limits<int>::max() / 2)
    bad(fmt::format("{} = {} is beyond what the kernel indexes", what, n));
}

}  // namespace

Problem validate(const TensorView& q, const TensorView& k, const TensorView& v,
                 const TensorView& out, const TensorView& lse, const ForwardOptions& options) {
  check_common(q, k, v, out, 4);
  if (k.size(0) != q.size(0) || v.size(0) != q.size(0))
    bad("q, k and v must have the same batch size");
  if (v.size(1) != k.size(1))
    bad(fmt::format("v must have k's {} keys, got {}", k.size(1), v.size(1)));
  Problem p;
  p.dtype = q.dtype;
  p.head_dim = static_cast<int>(q.size(3));
  p.batch = static_cast<int>(q.size(0));
  p.heads_q = static_cast<int>(q.size(2));
  p.heads_k = static_cast<int>(k.size(2));
  check_length(q.size(1), "Sq");
  check_length(k.size(1), "Sk");
  p.max_seqlen_q = static_cast<int>(q.size(1));
  p.max_seqlen_k = static_cast<int>(k.size(1));
  p.causal = options.causal;
  KjitFlashParams& k_params = p.params;
  fill_strides(k_params, q, k, v, out, true);
  k_params.seqlen_q = p.max_seqlen_q;
  k_params.seqlen_k = p.max_seqlen_k;
  k_params.heads_q = p.heads_q;
  k_params.group = p.heads_q / p.heads_k;
  k_params.scale_log2 = scale_log2(options, p.head_dim);
  check_lse(lse, p.batch, p.heads_q, p.max_seqlen_q, true, k_params);
  return p;
}

Problem validate_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const TensorView& lse, const Varlen& s,
                        const ForwardOptions& options) {
  check_common(q, k, v, out, 3);
  if (v.size(0) != k.size(0))
    bad(fmt::format("v must have k's {} tokens, got {}", k.size(0), v.size(0)));
  Problem p;
  int max_q = 0, max_k = 0;
  for (const auto& [view, host, tokens, name] :
       {std::tuple{&s.cu_seqlens_q, s.host_cu_seqlens_q, q.size(0), "cu_seqlens_q"},
        std::tuple{&s.cu_seqlens_k, s.host_cu_seqlens_k, k.size(0), "cu_seqlens_k"}}) {
    if (view->dtype != DType::Int32)
      bad(fmt::format("{} must be int32, got {}", name, dtype_name(view->dtype)));
    if (view->ndim != 1 || view->size(0) < 2)
      bad(fmt::format("{} must be 1-D [B + 1] with B >= 1, got {}", name, view->describe()));
    if (view->stride(0) != 1) bad(fmt::format("{} must be contiguous", name));
    if (!view->data) bad(fmt::format("{} is a null pointer", name));
    if (!host)
      bad(fmt::format("the host copy of {} is a null pointer (kjit validates it on the host)",
                      name));
    const std::int64_t n = view->size(0);
    if (name == std::string("cu_seqlens_k") && n != s.cu_seqlens_q.size(0)) {
      bad(fmt::format("cu_seqlens_k has {} entries, cu_seqlens_q {}: both must be B + 1", n,
                      s.cu_seqlens_q.size(0)));
    }
    if (host[0] != 0) bad(fmt::format("{}[0] must be 0, got {}", name, host[0]));
    int longest = 0;
    for (std::int64_t i = 1; i < n; ++i) {
      if (host[i] < host[i - 1])
        bad(fmt::format("{} must be non-decreasing: [{}] = {} after {}", name, i, host[i],
                        host[i - 1]));
      longest = std::max(longest, host[i] - host[i - 1]);
    }
    if (host[n - 1] != tokens)
      bad(fmt::format("{}[B] = {} but the tensor holds {} tokens", name, host[n - 1], tokens));
    (name == std::string("cu_seqlens_q") ? max_q : max_k) = longest;
  }
  check_length(q.size(0), "Tq");
  check_length(k.size(0), "Tk");
  p.dtype = q.dtype;
  p.head_dim = static_cast<int>(q.size(2));
  p.batch = static_cast<int>(s.cu_seqlens_q.size(0) - 1);
  p.heads_q = static_cast<int>(q.size(1));
  p.heads_k = static_cast<int>(k.size(1));
  p.max_seqlen_q = max_q;
  p.max_seqlen_k = max_k;
  p.causal = options.causal;
  KjitFlashParams& kp = p.params;
  fill_strides(kp, q, k, v, out, false);
  kp.cu_seqlens_q = static_cast<const int*>(s.cu_seqlens_q.data);
  kp.cu_seqlens_k = static_cast<const int*>(s.cu_seqlens_k.data);
  kp.heads_q = p.heads_q;
  kp.group = p.heads_q / p.heads_k;
  kp.scale_log2 = scale_log2(options, p.head_dim);
  check_lse(lse, 1, p.heads_q, q.size(0), false, kp);
  return p;
}

std::vector<tuning::Dimension> tuning_dimensions() {
  using tuning::Bucket;
  return {{"B", Bucket::Pow2},      {"Hq", Bucket::Exact}, {"Hk", Bucket::Exact},
          {"D", Bucket::Exact},     {"Sq", Bucket::Pow2},  {"Sk", Bucket::Pow2},
          {"causal", Bucket::Exact}};
}

bool has_wgmma(const std::string& arch) {
  return arch == "sm_90a";
}

unsigned max_shared_bytes(const std::string& arch) {
  // The opt-in limits of the CUDA programming guide's compute-capability table.
  const int cc = detail::arch_version(arch);
  if (cc >= 90) return 227 * 1024;
  return cc == 80 || cc == 87 ? 163 * 1024 : 99 * 1024;
}

namespace {

bool uses_wgmma(const tuning::Config& c) {
  return tuning::config_value(c, "mainloop") == kMainloopWgmma;
}

unsigned block_threads(const tuning::Config& c) {
  return static_cast<unsigned>(uses_wgmma(c) ? c.at("block_m") / 64 * 128
                                             : c.at("block_m") / (16 * c.at("m_tiles")) * 32);
}

}  // namespace

tuning::Config default_config(int head_dim, bool causal, const std::string& arch) {
  // From the tile sweeps on the H100 (docs/perf.md, bench/attention_forward.cpp --sweep).
  if (has_wgmma(arch) && head_dim % 64 == 0) {
    // Three warpgroups pay off at hd 64 (the tuner's pick on 5 of 6 fa-bench rows); 128-key
    // tiles up to hd 128, 64 above (shared memory).
    return {{"mainloop", kMainloopWgmma},
            {"block_m", head_dim <= 64 ? 192 : 128},
            {"block_n", head_dim <= 128 ? 128 : 64},
            {"m_tiles", 1}};
  }
  // mma.sync: two query tiles per warp pay off where registers allow (hd 64; hd 96 spills),
  // short key tiles for the large head dims; shorter ones still where shared memory is small
  // (sm_86/89: 99 KiB).
  tuning::Config c{{"mainloop", kMainloopMma}, {"block_m", 128}, {"block_n", 64}, {"m_tiles", 1}};
  if (head_dim <= 64) {
    c["block_n"] = causal ? 128 : 64;
    c["m_tiles"] = causal ? 1 : 2;
  } else if (head_dim > 128) {
    c["block_m"] = 64;
    c["block_n"] = 32;
  }
  while (shared_bytes(c, DType::BFloat16, head_dim) > max_shared_bytes(arch) && c["block_n"] > 16)
    c["block_n"] /= 2;
  return c;
}

std::vector<std::pair<std::string, std::vector<std::int64_t>>> search_space(
    const std::string& arch) {
  std::vector<std::int64_t> mainloops{kMainloopMma};
  if (has_wgmma(arch)) mainloops.push_back(kMainloopWgmma);
  return {{"mainloop", mainloops},
          {"block_m", {64, 128, 192}},
          {"block_n", {32, 64, 128}},
          {"m_tiles", {1, 2}}};
}

bool valid(const tuning::Config& c, DType dtype, int head_dim, const std::string& arch) {
  const std::int64_t mainloop = tuning::config_value(c, "mainloop"),
                     block_m = tuning::config_value(c, "block_m"),
                     block_n = tuning::config_value(c, "block_n"),
                     m_tiles = tuning::config_value(c, "m_tiles");
  if (c.size() != 4 || block_m <= 0 || block_n <= 0 || m_tiles <= 0) return false;
  if (mainloop == kMainloopWgmma) {
    // Warpgroups of 64 rows; S is m64 x block_n (64 or 128); V is read in 64-column slabs.
    if (!has_wgmma(arch) || head_dim % 64 != 0 || block_m % 64 != 0 || block_m > 192 ||
        (block_n != 64 && block_n != 128) || m_tiles != 1) {
      return false;
    }
  } else if (mainloop == kMainloopMma) {
    if (block_m % (16 * m_tiles) != 0 || block_n % 16 != 0 || block_threads(c) > 512) return false;
  } else {
    return false;
  }
  return shared_bytes(c, dtype, head_dim) <= max_shared_bytes(arch);
}

unsigned shared_bytes(const tuning::Config& c, DType dtype, int head_dim) {
  const std::int64_t elem = static_cast<std::int64_t>(dtype_size(dtype));
  const std::int64_t tiles = c.at("block_m") + 4 * c.at("block_n");  // Q, 2 stages of K and V
  // wgmma: swizzled rows of exactly head_dim, plus slack to align the tiles to 1024 bytes;
  // mma.sync: rows padded by 16 bytes against bank conflicts.
  return static_cast<unsigned>(uses_wgmma(c) ? tiles * head_dim * elem + 1024
                                             : tiles * (head_dim + 8) * elem);
}

KernelSpec spec(const tuning::Config& c, DType dtype, int head_dim, bool causal,
                const std::string& arch) {
  const std::string name =
      uses_wgmma(c)
          ? fmt::format("kjit::attention::flash_forward_sm90<{}, {}, {}, {}, {}>", type_name(dtype),
                        head_dim, c.at("block_n"), c.at("block_m") / 64, causal ? "true" : "false")
          : fmt::format("kjit::attention::flash_forward<{}, {}, {}, {}, {}, {}>", type_name(dtype),
                        head_dim, c.at("block_m"), c.at("block_n"), c.at("m_tiles"),
                        causal ? "true" : "false");
  KernelSpec s(Source::embedded(uses_wgmma(c) ? kTemplateWgmma : kTemplate), {name});
  s.arch = arch;
  return s;
}

void launch(const Kernel& kernel, const tuning::Config& c, const Problem& p, StreamHandle stream) {
  if (p.empty()) return;
  const std::int64_t block_m = c.at("block_m");
  const unsigned m_blocks = static_cast<unsigned>((p.max_seqlen_q + block_m - 1) / block_m);
  if (p.batch > 65535 || p.heads_q > 65535) bad("batch and heads must each be at most 65535");
  kernel.launch({{m_blocks, static_cast<unsigned>(p.heads_q), static_cast<unsigned>(p.batch)},
                 {block_threads(c)},
                 shared_bytes(c, p.dtype, p.head_dim),
                 stream,
                 {}},
                p.params);
}

std::vector<KernelSpec> shipped(const std::string& arch) {
  std::vector<KernelSpec> out;
  for (DType dtype : {DType::Float16, DType::BFloat16}) {
    for (int d : kHeadDims) {
      for (bool causal : {false, true})
        out.push_back(spec(default_config(d, causal, arch), dtype, d, causal, arch));
    }
  }
  return out;
}

}  // namespace kjit::attention::flash_plan

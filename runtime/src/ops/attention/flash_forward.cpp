#include "ops/attention/flash_forward.hpp"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <tuple>

#include <fmt/format.h>

#include "driver/arch.hpp"
#include "driver/cuda_driver.hpp"
#include "driver/stream_allocation.hpp"
#include "kjit/error.hpp"
#include "ops/attention/attention_inputs.hpp"
#include "ops/dispatch.hpp"

namespace kjit::ops {
namespace {

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

// lse is optional: a view with null data skips it.
void fill_lse(KjitFlashParams& p, const TensorView& lse, std::int64_t outer, std::int64_t heads,
              std::int64_t seq, bool batched) {
  if (!lse.data) {
    p.lse = nullptr;
    return;
  }
  const LseStrides strides = check_lse(lse, outer, heads, seq, batched, "");
  p.lse = static_cast<float*>(lse.data);
  p.lse_batch_stride = strides.batch;
  p.lse_head_stride = strides.head;
}

void fill_scale(KjitFlashParams& p, const attention::ForwardOptions& o, std::int64_t head_dim) {
  p.scale_log2 = softmax_scale(o.softmax_scale, head_dim) * 1.4426950408889634f;
}

// The problem's head counts and options, once its lengths are known.
Call<FlashForward> make_call(const TensorView& q, const TensorView& k,
                             const attention::ForwardOptions& o, int dims, std::int64_t batch,
                             std::int64_t seqlen_q, std::int64_t seqlen_k) {
  Call<FlashForward> call{};
  FlashForward::Problem& p = call.problem;
  p.dtype = q.dtype;
  p.batch = batch;
  p.heads_q = q.size(dims - 2);
  p.heads_k = k.size(dims - 2);
  p.head_dim = q.size(dims - 1);
  p.seqlen_q = seqlen_q;
  p.seqlen_k = seqlen_k;
  p.causal = o.causal;
  FlashForward::check(p);
  call.args.heads_q = static_cast<int>(p.heads_q);
  call.args.group = static_cast<int>(p.heads_q / p.heads_k);
  fill_scale(call.args, o, p.head_dim);
  return call;
}

// Bytes of shared memory per row of a tile: wgmma rows are exactly head_dim (swizzled), mma.sync
// rows are padded by 16 bytes against bank conflicts.
std::int64_t row_elems(const FlashForward::Config& c, std::int64_t head_dim) {
  return c.wgmma() ? head_dim : head_dim + 8;
}

// Query tiles of block_m rows a head and sequence (the plain grid's x), and the plain grid's
// blocks: the persistent loop's items.
std::int64_t query_tiles(const FlashForward::Config& c, const FlashForward::Problem& p) {
  return (p.seqlen_q + c.block_m - 1) / c.block_m;
}
std::int64_t items(const FlashForward::Config& c, const FlashForward::Problem& p) {
  return query_tiles(c, p) * p.heads_q * p.batch;
}

// The dynamic shared memory of Q and `stages` stages of K and V tiles (wgmma: plus slack to
// align them to 1024 bytes).
std::int64_t tile_bytes(const FlashForward::Config& c, const FlashForward::Problem& p,
                        std::int64_t stages) {
  const std::int64_t rows = c.block_m + 2 * stages * c.block_n;
  return rows * row_elems(c, p.head_dim) * static_cast<std::int64_t>(dtype_size(p.dtype)) +
         (c.wgmma() ? 1024 : 0);
}

// The warp-specialised loops' static shared memory with `stages` K/V stages: the mbarriers (Q's
// full and empty, K's and V's a stage, the persistent items'), the item slot, the overlap's word
// a consumer thread (one word without), and a grouped block's copy of its group's parameters.
std::int64_t ws_static_bytes(const FlashForward::Config& c, std::int64_t stages) {
  const bool overlap = c.mainloop != FlashForward::kMainloopWgmmaWs;
  return (4 + 4 * stages) * 8 + 4 + 4 * (overlap ? 2 * c.block_m : 1) +
         static_cast<std::int64_t>(sizeof(KjitFlashParams));
}

}  // namespace

std::vector<Source> FlashForward::sources() {
  return {Source::embedded("attention/flash_forward.cuh"),
          Source::embedded("attention/flash_forward_sm90.cuh"),
          Source::embedded("attention/flash_forward_sm90_ws.cuh")};
}

unsigned FlashForward::Config::threads() const {
  const std::int64_t producer = warp_specialized() ? 128 : 0;
  return static_cast<unsigned>(wgmma() ? block_m / 64 * 128 + producer
                                       : block_m / (16 * m_tiles) * 32);
}

void FlashForward::check(const Problem& p) {
  if (std::find(std::begin(kHeadDims), std::end(kHeadDims), p.head_dim) == std::end(kHeadDims))
    kAttentionCheck.fail(
        fmt::format("head dim {} is not one of 64, 96, 128, 192, 256", p.head_dim));
  if (p.heads_k <= 0 || p.heads_q <= 0 || p.heads_q % p.heads_k != 0) {
    kAttentionCheck.fail(
        fmt::format("query heads ({}) must be a positive multiple of key/value heads ({})",
                    p.heads_q, p.heads_k));
  }
  if (p.batch < 0 || p.seqlen_q < 0 || p.seqlen_k < 0) {
    kAttentionCheck.fail(fmt::format("B ({}), Sq ({}) and Sk ({}) must not be negative", p.batch,
                                     p.seqlen_q, p.seqlen_k));
  }
  check_attention_length(p.seqlen_q, "Sq");
  check_attention_length(p.seqlen_k, "Sk");
  if (p.batch > 65535 || p.heads_q > 65535)
    kAttentionCheck.fail("batch and heads must each be at most 65535");
}

FlashForward::Config FlashForward::default_config(const Problem& p, const Arch& arch) {
  // From the tile sweeps on the H100 (docs/perf.md, bench/attention_forward.cpp --sweep).
  if (arch.has_wgmma() && p.head_dim % 64 == 0) {
    // The producer warp's loops (H100 sweep, 2026-12-05, S8k TFLOP/s full / causal: 710 / 644 at
    // hd 128, 555 / 492 at hd 64, 778 / 693 at hd 192, 789 / 687 at hd 256; the wgmma loop 90:
    // 480 / 422, 416 / 370, 508 / 428, 502 / 433).
    return warp_specialized_config(p);
  }
  // mma.sync: two query tiles per warp pay off where registers allow (hd 64; hd 96 spills),
  // short key tiles for the large head dims; shorter ones still where shared memory is small
  // (sm_86/89: 99 KiB).
  Config c{kMainloopMma, 128, 64, 1};
  if (p.head_dim <= 64) {
    c.block_n = p.causal ? 128 : 64;
    c.m_tiles = p.causal ? 1 : 2;
  } else if (p.head_dim > 128) {
    c.block_m = 64;
    c.block_n = 32;
  }
  while (shared_bytes(c, p) > arch.max_shared_bytes() && c.block_n > 16)
    c.block_n /= 2;
  return c;
}

std::vector<FlashForward::Config> FlashForward::space(const Problem&, const Arch& arch) {
  std::vector<Config> out;
  for (std::int64_t block_m : {64, 128, 192}) {
    for (std::int64_t block_n : {32, 64, 128}) {
      for (std::int64_t m_tiles : {1, 2})
        out.push_back({kMainloopMma, block_m, block_n, m_tiles});
    }
  }
  if (!arch.has_wgmma()) return out;
  for (std::int64_t block_m : {128, 192}) {
    for (std::int64_t block_n : {64, 128})
      out.push_back({kMainloopWgmma, block_m, block_n, 1});
    for (std::int64_t mainloop :
         {kMainloopWgmmaWs, kMainloopWgmmaWsOverlap, kMainloopWgmmaWsPersistent}) {
      for (std::int64_t block_n : kWsBlockNs)
        out.push_back({mainloop, block_m, block_n, 1});
    }
  }
  return out;
}

bool FlashForward::valid(const Config& c, const Problem& p, const Arch& arch) {
  if (c.block_m <= 0 || c.block_n <= 0 || c.m_tiles <= 0) return false;
  if (c.wgmma()) {
    // Warpgroups of 64 rows (beside the producer: two, or three at hd 64, where their O, S and
    // P, hd / 2 + 3 block_n / 4 registers a thread, leave 32 of the registers the producer gives
    // them); S is m64 x block_n (64 or 128, or one of kWsBlockNs beside the producer: past 128
    // keys only with the overlap, whose S and P V are apart; as one commit group ptxas spills).
    // (A persistent block's two consumers give 8 registers each to its producer: the registers
    // here mirror FlashWsRoles, templates/attention/flash_forward_sm90_ws.cuh.)
    const bool consumers_fit = c.block_m == 128 || (c.block_m == 192 && p.head_dim == 64);
    const bool persistent = c.mainloop == kMainloopWgmmaWsPersistent;
    const std::int64_t consumer_registers = c.block_m == 128 ? (persistent ? 232 : 240) : 160;
    const bool ws_tile = std::find(std::begin(kWsBlockNs), std::end(kWsBlockNs), c.block_n) !=
                             std::end(kWsBlockNs) &&
                         p.head_dim / 2 + 3 * c.block_n / 4 <= consumer_registers - 32 &&
                         (c.block_n <= 128 || c.mainloop != kMainloopWgmmaWs);
    const bool tile =
        c.warp_specialized() ? consumers_fit && ws_tile : c.block_n == 64 || c.block_n == 128;
    // The persistent loop counts its items (tiles x heads x sequences, claimed up to a grid
    // beyond the last) in 32 bits.
    const bool persistent_fits =
        !persistent || items(c, p) <= std::numeric_limits<int>::max() - (std::int64_t{1} << 16);
    if (!arch.has_wgmma() || p.head_dim % 64 != 0 || c.block_m % 64 != 0 || c.block_m > 192 ||
        !tile || c.m_tiles != 1 || !persistent_fits) {
      return false;
    }
  } else if (c.mainloop == kMainloopMma) {
    if (c.block_m % (16 * c.m_tiles) != 0 || c.block_n % 16 != 0 || c.threads() > 512) return false;
  } else {
    return false;
  }
  const std::int64_t statics = c.warp_specialized() ? ws_static_bytes(c, ws_stages(c, p)) : 0;
  return shared_bytes(c, p) + statics <= arch.max_shared_bytes();
}

std::int64_t FlashForward::ws_stages(const Config& c, const Problem& p) {
  constexpr std::int64_t kSm90SharedBytes = 227 * 1024;  // the loop is sm_90a's alone
  return tile_bytes(c, p, 3) + ws_static_bytes(c, 3) <= kSm90SharedBytes ? 3 : 2;
}

unsigned FlashForward::shared_bytes(const Config& c, const Problem& p) {
  return static_cast<unsigned>(tile_bytes(c, p, c.warp_specialized() ? ws_stages(c, p) : kStages));
}

KernelSpec FlashForward::spec(const Config& c, const Problem& p, const Arch& arch) {
  return spec_for(c, p, arch, "KjitFlashParams", "KjitFlashTmaParams");
}

KernelSpec FlashForward::spec_for(const Config& c, const Problem& p, const Arch& arch,
                                  const char* params, const char* tma_params) {
  const char* causal = p.causal ? "true" : "false";
  const std::string name =
      c.warp_specialized()
          ? fmt::format("kjit::attention::flash_forward_sm90_ws<{}, {}, {}, {}, {}, {}, {}, {}>",
                        cxx_type(p.dtype), p.head_dim, c.block_n, c.block_m / 64, ws_stages(c, p),
                        causal, c.mainloop, tma_params)
      : c.wgmma()
          ? fmt::format("kjit::attention::flash_forward_sm90<{}, {}, {}, {}, {}, {}>",
                        cxx_type(p.dtype), p.head_dim, c.block_n, c.block_m / 64, causal, params)
          : fmt::format("kjit::attention::flash_forward<{}, {}, {}, {}, {}, {}, {}>",
                        cxx_type(p.dtype), p.head_dim, c.block_m, c.block_n, c.m_tiles, causal,
                        params);
  KernelSpec s(sources()[c.warp_specialized() ? 2 : c.wgmma() ? 1 : 0], {name});
  s.arch = arch.name();
  return s;
}

// A tensor with no rows is never read and has no map (the driver refuses empty dims).
KjitTensorMap FlashForward::tma_q(const Config& c, const Problem& p, const Args& args) {
  if (args.tokens_q == 0) return {};
  return head_tile_map(args.q, p.head_dim, args.tokens_q, p.heads_q,
                       args.cu_seqlens_q ? 1 : p.batch, args.q_row_stride, args.q_head_stride,
                       args.q_batch_stride, c.block_m);
}

KjitFlashTmaParams FlashForward::tma_params(const Config& c, const Problem& p, const Args& args) {
  // (valid() keeps the persistent loop's items within an int)
  KjitFlashTmaParams out{tma_q(c, p, args),
                         {},
                         {},
                         args,
                         static_cast<int>(query_tiles(c, p)),
                         static_cast<int>(items(c, p)),
                         nullptr};
  if (args.tokens_k > 0) {
    const std::int64_t outer = args.cu_seqlens_q ? 1 : p.batch;
    out.tma_k =
        head_tile_map(args.k, p.head_dim, args.tokens_k, p.heads_k, outer, args.k_row_stride,
                      args.k_head_stride, args.k_batch_stride, c.block_n);
    out.tma_v =
        head_tile_map(args.v, p.head_dim, args.tokens_k, p.heads_k, outer, args.v_row_stride,
                      args.v_head_stride, args.v_batch_stride, c.block_n);
  }
  return out;
}

void FlashForward::launch(const Program& program, const Config& c, const Problem& p,
                          const Args& args, StreamHandle stream) {
  if (p.empty()) return;
  const auto m_blocks = static_cast<unsigned>(query_tiles(c, p));
  LaunchConfig grid{{m_blocks, static_cast<unsigned>(p.heads_q), static_cast<unsigned>(p.batch)},
                    {c.threads()},
                    shared_bytes(c, p),
                    stream,
                    {}};
  if (!c.warp_specialized()) {
    program.kernel().launch(grid, args);
    return;
  }
  KjitFlashTmaParams params = tma_params(c, p, args);
  if (c.mainloop != kMainloopWgmmaWsPersistent) {
    program.kernel().launch(grid, params);
    return;
  }
  // The persistent loop: one block an SM (at most one an item), and the count of items claimed
  // beyond the grid's first, zeroed in stream order (scratch of this call).
  grid.grid = {
      static_cast<unsigned>(std::min<std::int64_t>(params.items, arch::current_multiprocessors())),
      1, 1};
  const driver::StreamAllocation next_item(sizeof(int), stream);
  params.next_item = static_cast<int*>(next_item.data());
  driver::check(driver::api().cuMemsetD32Async(reinterpret_cast<CUdeviceptr>(next_item.data()), 0,
                                               1, static_cast<CUstream>(stream)),
                "cuMemsetD32Async");
  program.kernel().launch(grid, params);
}

std::vector<FlashForward::Problem> FlashForward::shipped(const Arch&) {
  std::vector<Problem> out;
  for (DType dtype : kDTypes) {
    for (std::int64_t d : kHeadDims) {
      for (bool causal : {false, true})
        out.push_back({dtype, 1, 1, 1, d, 1, 1, causal});
    }
  }
  return out;
}

std::vector<TensorSpec> FlashForward::tensors(const Problem& p) {
  using Role = TensorSpec::Role;
  const std::vector<std::int64_t> q{p.batch, p.seqlen_q, p.heads_q, p.head_dim},
      kv{p.batch, p.seqlen_k, p.heads_k, p.head_dim};
  // O and the LSE divided by 100: configs differ in fp32 summation order and where P is
  // rounded, and O (|O| <= max|v|) and the LSE (~ log Sk + max score) should both count under
  // one tolerance relative to the largest value.
  return {{"q", p.dtype, q},
          {"k", p.dtype, kv},
          {"v", p.dtype, kv},
          {"out", p.dtype, q, Role::Output},
          {"lse", DType::Float32, {p.batch, p.heads_q, p.seqlen_q}, Role::Output, 0, 0, 0.01}};
}

FlashForward::Args FlashForward::args(const Problem& p, const std::vector<TensorView>& t) {
  attention::ForwardOptions o;
  o.causal = p.causal;
  return validate(t.at(0), t.at(1), t.at(2), t.at(3), t.at(4), o).args;
}

std::vector<Preset<FlashForward::Problem>> FlashForward::presets() {
  auto problem = [](std::int64_t b, std::int64_t s, std::int64_t hq, std::int64_t hk,
                    std::int64_t d,
                    bool causal) { return Problem{DType::BFloat16, b, hq, hk, d, s, s, causal}; };
  std::vector<Preset<Problem>> out;
  // GQA 32/8 (8B) or 64/8 (70B), hd 128, causal; 16k tokens a batch up to one sequence.
  for (const auto& [name, hq] : {std::pair{"llama3-8b-prefill", 32}, {"llama3-70b-prefill", 64}}) {
    Preset<Problem> preset{name, {}};
    for (std::int64_t s : {2048, 4096, 8192, 16384, 32768})
      preset.problems.push_back(problem(std::max<std::int64_t>(1, 16384 / s), s, hq, 8, 128, true));
    out.push_back(std::move(preset));
  }
  // bench/attention_forward.cpp's batched rows: B x S = 16k tokens, H x D = 2048.
  Preset<Problem> bench{"fa-bench", {}};
  for (const BenchRow& r : fa_bench_rows())
    bench.problems.push_back(
        problem(r.batch, r.seqlen, r.heads_q, r.heads_k, r.head_dim, r.causal));
  out.push_back(std::move(bench));
  return out;
}

Call<FlashForward> FlashForward::validate(const TensorView& q, const TensorView& k,
                                          const TensorView& v, const TensorView& out,
                                          const TensorView& lse,
                                          const attention::ForwardOptions& o) {
  check_attention_tensors(q, k, v, out, 4);
  if (k.size(0) != q.size(0) || v.size(0) != q.size(0))
    kAttentionCheck.fail("q, k and v must have the same batch size");
  if (v.size(1) != k.size(1))
    kAttentionCheck.fail(fmt::format("v must have k's {} keys, got {}", k.size(1), v.size(1)));
  Call<FlashForward> call = make_call(q, k, o, 4, q.size(0), q.size(1), k.size(1));
  const Problem& p = call.problem;
  fill_strides(call.args, q, k, v, out, true);
  call.args.seqlen_q = call.args.tokens_q = static_cast<int>(p.seqlen_q);
  call.args.seqlen_k = call.args.tokens_k = static_cast<int>(p.seqlen_k);
  fill_lse(call.args, lse, p.batch, p.heads_q, p.seqlen_q, true);
  return call;
}

Call<FlashForward> FlashForward::validate_varlen(const TensorView& q, const TensorView& k,
                                                 const TensorView& v, const TensorView& out,
                                                 const TensorView& lse, const attention::Varlen& s,
                                                 const attention::ForwardOptions& o) {
  check_attention_tensors(q, k, v, out, 3);
  if (v.size(0) != k.size(0))
    kAttentionCheck.fail(fmt::format("v must have k's {} tokens, got {}", k.size(0), v.size(0)));
  const LongestSequences longest = check_varlen(s, q.size(0), k.size(0));
  Call<FlashForward> call = make_call(q, k, o, 3, s.cu_seqlens_q.size(0) - 1, longest.q, longest.k);
  fill_strides(call.args, q, k, v, out, false);
  call.args.cu_seqlens_q = static_cast<const int*>(s.cu_seqlens_q.data);
  call.args.cu_seqlens_k = static_cast<const int*>(s.cu_seqlens_k.data);
  call.args.tokens_q = static_cast<int>(q.size(0));
  call.args.tokens_k = static_cast<int>(k.size(0));
  fill_lse(call.args, lse, 1, call.problem.heads_q, q.size(0), false);
  return call;
}

}  // namespace kjit::ops

namespace kjit::attention {

void forward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
             const TensorView& lse, const ForwardOptions& options, StreamHandle stream) {
  const ops::Call<ops::FlashForward> call = ops::FlashForward::validate(q, k, v, out, lse, options);
  if (!call.problem.empty()) ops::run(call, stream);  // an empty call compiles nothing
}

void forward_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                    const TensorView& out, const TensorView& lse, const Varlen& seqlens,
                    const ForwardOptions& options, StreamHandle stream) {
  const ops::Call<ops::FlashForward> call =
      ops::FlashForward::validate_varlen(q, k, v, out, lse, seqlens, options);
  if (!call.problem.empty()) ops::run(call, stream);
}

}  // namespace kjit::attention

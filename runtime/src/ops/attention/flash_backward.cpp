#include "ops/attention/flash_backward.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "driver/arch.hpp"
#include "driver/stream_allocation.hpp"
#include "kjit/error.hpp"
#include "ops/attention/attention_inputs.hpp"
#include "ops/attention/flash_forward.hpp"
#include "ops/dispatch.hpp"

namespace kjit::ops {
namespace {

constexpr std::size_t kWorkspaceAlign = 256;
constexpr unsigned kThreads = 256;
constexpr std::int64_t kRowsPerPrepBlock = 64;  // flash_backward_prep and _dq_store

std::size_t align_up(std::size_t n) {
  return (n + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign;
}

// Bytes of lse2 (or dsum) in the workspace: a cell per query row and head, and the slack its
// stats copies may read past the last one.
std::size_t stats_bytes(std::int64_t rows, std::int64_t heads_q) {
  const auto cells = static_cast<std::size_t>(rows * heads_q);
  return cells == 0 ? 0 : align_up((cells + KJIT_BACKWARD_STATS_SLACK) * 4);
}

void check_gradients(const TensorView& q, const TensorView& k, const TensorView& v,
                     const TensorView& out, const TensorView& dout, const TensorView& dq,
                     const TensorView& dk, const TensorView& dv, int dims) {
  check_attention_tensors(q, k, v, out, dims);
  check_like(dout, "dout", out, "out", dims);
  check_like(dq, "dq", q, "q", dims);
  check_like(dk, "dk", k, "k", dims);
  check_like(dv, "dv", v, "v", dims);
}

KjitAttentionTensor tensor_of(const TensorView& t, bool batched) {
  const int o = batched ? 1 : 0;  // the sequence dim
  return {t.data, batched ? t.stride(0) : 0, t.stride(o), t.stride(o + 1)};
}

void fill_tensors(KjitFlashBackwardParams& p, const TensorView& q, const TensorView& k,
                  const TensorView& v, const TensorView& out, const TensorView& dout,
                  const TensorView& dq, const TensorView& dk, const TensorView& dv, bool batched) {
  p.q = tensor_of(q, batched);
  p.k = tensor_of(k, batched);
  p.v = tensor_of(v, batched);
  p.out = tensor_of(out, batched);
  p.dout = tensor_of(dout, batched);
  p.dq = tensor_of(dq, batched);
  p.dk = tensor_of(dk, batched);
  p.dv = tensor_of(dv, batched);
}

// The forward's lse, required here.
void fill_lse(KjitFlashBackwardParams& p, const TensorView& lse, std::int64_t outer,
              std::int64_t heads, std::int64_t seq, bool batched) {
  const LseStrides strides = check_lse(lse, outer, heads, seq, batched, "the forward's ");
  kAttentionCheck.data(lse, "lse");
  p.lse = static_cast<const float*>(lse.data);
  p.lse_batch_stride = strides.batch;
  p.lse_head_stride = strides.head;
}

Call<FlashBackward> make_call(const TensorView& q, const TensorView& k,
                              const attention::BackwardOptions& o, int dims, std::int64_t batch,
                              std::int64_t seqlen_q, std::int64_t seqlen_k) {
  Call<FlashBackward> call{};
  FlashBackward::Problem& p = call.problem;
  p.dtype = q.dtype;
  p.batch = batch;
  p.heads_q = q.size(dims - 2);
  p.heads_k = k.size(dims - 2);
  p.head_dim = q.size(dims - 1);
  p.seqlen_q = seqlen_q;
  p.seqlen_k = seqlen_k;
  p.causal = o.causal;
  p.deterministic = o.deterministic;
  FlashBackward::check(p);
  call.args.heads_q = static_cast<int>(p.heads_q);
  call.args.group = static_cast<int>(p.heads_q / p.heads_k);
  call.args.scale = softmax_scale(o.softmax_scale, p.head_dim);
  call.args.scale_log2 = call.args.scale * 1.4426950408889634f;
  return call;
}

// Validation, workspace, launch: the op's one path for both layouts.
void run_backward(Call<FlashBackward> call, std::int64_t rows, const attention::BackwardOptions& o,
                  StreamHandle stream) {
  const FlashBackward::Problem& p = call.problem;
  if (p.empty()) return;
  const std::size_t bytes =
      FlashBackward::workspace_bytes(rows, p.heads_q, p.head_dim, p.deterministic);
  std::optional<driver::StreamAllocation> owned;  // when the caller passes none
  void* workspace = o.workspace ? FlashBackward::callers_workspace(o, bytes)
                                : owned.emplace(bytes, stream).data();
  FlashBackward::attach_workspace(call.args, workspace, rows, p.head_dim, p.deterministic);
  run(call, stream);
}

std::int64_t query_rows(const TensorView& q) {
  return q.ndim == 4 ? q.size(0) * q.size(1) : q.size(0);
}

}  // namespace

std::vector<Source> FlashBackward::sources() {
  return {Source::embedded("attention/flash_backward.cuh"),
          Source::embedded("attention/flash_backward_sm90.cuh")};
}

void FlashBackward::check(const Problem& p) {
  FlashForward::check(
      {p.dtype, p.batch, p.heads_q, p.heads_k, p.head_dim, p.seqlen_q, p.seqlen_k, p.causal});
}

unsigned FlashBackward::shared_bytes(const Config& c, const Problem& p) {
  const auto elem = static_cast<std::int64_t>(dtype_size(p.dtype));
  if (c.wgmma()) {
    // flash_backward_sm90.cuh's BackwardSm90Shape: K, V; per stage Q, dO and the rows' lse2 and
    // dsum (block_m + 4 floats each); two dS^T buffers and, above hd 128 (split roles), the fp32
    // P^T handover (the size of two more); an mbarrier per stage and one for K/V; plus 1024
    // bytes to align the tiles.
    const std::int64_t handovers = p.head_dim > 128 ? 4 : 2;
    const std::int64_t tiles = 2 * c.block_n * p.head_dim + c.stages * 2 * c.block_m * p.head_dim +
                               handovers * c.block_n * c.block_m;
    return static_cast<unsigned>(tiles * elem + c.stages * 2 * (c.block_m + 4) * 4 +
                                 (c.stages + 1) * 8 + 1024);
  }
  // Q, dO, K, V rows padded by 8 elements; P and dS [block_m][block_n + 8]; LSE and dsum.
  const std::int64_t tiles =
      (2 * c.block_m + 2 * c.block_n) * (p.head_dim + 8) + 2 * c.block_m * (c.block_n + 8);
  return static_cast<unsigned>(tiles * elem + 2 * c.block_m * 4);
}

bool FlashBackward::valid(const Config& c, const Problem& p, const Arch& arch) {
  if (c.dq_atomic != 0 && c.dq_atomic != 1) return false;
  if (c.dq_atomic && p.deterministic) return false;  // atomics add in no fixed order
  if (c.block_m != 64 && c.block_m != 128) return false;
  if (c.wgmma()) {
    // Two warpgroups of 64 keys up to head dim 128, sharing 64 keys above
    // (flash_backward_sm90.cuh); the registers hold 64 x 128 S^T and dP^T beside dK and dV at
    // head dim 64 only.
    if (!arch.has_wgmma() || (p.head_dim != 64 && p.head_dim != 128 && p.head_dim != 256))
      return false;
    if (c.block_n != (p.head_dim <= 128 ? 128 : 64)) return false;
    if (c.block_m == 128 && p.head_dim != 64) return false;
    if (c.stages < 2 || c.stages > 4) return false;
  } else if (c.mainloop == kMainloopMma) {
    if (c.stages != 1) return false;
    if (c.block_n != 32 && c.block_n != 64 && c.block_n != 128) return false;
    // Warp tiles are pairs of n8 tiles (flash_backward.cuh's BackwardShape): with 32-key tiles
    // the four warps along the head dim need it to be a multiple of 64.
    if (c.block_n == 32 && p.head_dim % 64 != 0) return false;
  } else {
    return false;
  }
  return shared_bytes(c, p) <= arch.max_shared_bytes();
}

namespace {

// The mma.sync configs: the main loop's default off sm_90a, and the tile of the dq pass.
FlashBackward::Config mma_config(const FlashBackward::Problem& p, const Arch& arch) {
  using Config = FlashBackward::Config;
  constexpr std::int64_t kMma = FlashBackward::kMainloopMma;
  // The tuner's picks on the H100 (fa-bench-bwd, docs/perf.md): the dq atomics pay off at hd 64
  // only; 128-query tiles for hd 64 causal and hd 96-128 full, 128-key tiles for hd 96-128
  // causal. Smaller tiles where shared memory is short (sm_86/89).
  const bool atomic = !p.deterministic && p.head_dim <= 64;
  Config preferred{kMma, 64, 64, atomic};
  if (p.head_dim <= 64) {
    preferred = {kMma, p.causal ? 128 : 64, 128, atomic};
  } else if (p.head_dim <= 128) {
    preferred = p.causal ? Config{kMma, 64, 128, atomic} : Config{kMma, 128, 64, atomic};
  }
  for (const Config& c : {preferred, Config{kMma, 64, 64, atomic}, Config{kMma, 64, 32, atomic}}) {
    if (FlashBackward::valid(c, p, arch)) return c;
  }
  throw InvalidArgument(fmt::format(
      "attention backward: head dim {} needs {} bytes of shared memory at the smallest tiles; {} "
      "offers {}",
      p.head_dim, FlashBackward::shared_bytes({kMma, 64, 32, atomic}, p), arch.name(),
      arch.max_shared_bytes()));
}

// The dq pass runs an mma.sync tile; a wgmma config implies sm_90a.
FlashBackward::Config dq_pass_config(const FlashBackward::Config& c,
                                     const FlashBackward::Problem& p) {
  static const Arch sm90a("sm_90a");
  return c.wgmma() ? mma_config(p, sm90a) : c;
}

// A backward operand's tiles for the copy engine: box_rows rows of one head.
KjitTensorMap tile_map(const KjitAttentionTensor& t, std::int64_t head_dim, std::int64_t rows,
                       std::int64_t heads, std::int64_t batch, std::int64_t box_rows) {
  return head_tile_map(t.data, head_dim, rows, heads, batch, t.row_stride, t.head_stride,
                       t.batch_stride, box_rows);
}

}  // namespace

FlashBackward::Config FlashBackward::default_config(const Problem& p, const Arch& arch) {
  // wgmma where it runs: 128 query rows at hd 64, 64 above; three stages where they fit (hd 256
  // has room for two). The H200 sweep (docs/perf.md): the third stage +2-11%, 128 rows at hd 64
  // +12-16%.
  const Config wgmma{kMainloopWgmma, p.head_dim == 64 ? 128 : 64, p.head_dim <= 128 ? 128 : 64,
                     !p.deterministic, p.head_dim <= 128 ? 3 : 2};
  return valid(wgmma, p, arch) ? wgmma : mma_config(p, arch);
}

std::vector<FlashBackward::Config> FlashBackward::space(const Problem& p, const Arch& arch) {
  std::vector<Config> out;
  for (std::int64_t block_m : {64, 128}) {
    for (std::int64_t dq_atomic : {0, 1}) {
      for (std::int64_t block_n : {32, 64, 128})
        out.push_back({kMainloopMma, block_m, block_n, dq_atomic, 1});
      if (arch.has_wgmma()) {
        for (std::int64_t stages : {2, 3})
          out.push_back({kMainloopWgmma, block_m, p.head_dim <= 128 ? 128 : 64, dq_atomic, stages});
      }
    }
  }
  return out;
}

KernelSpec FlashBackward::spec(const Config& c, const Problem& p, const Arch& arch) {
  return spec_for(c, p, arch, "KjitFlashBackwardParams");
}

KernelSpec FlashBackward::spec_for(const Config& c, const Problem& p, const Arch& arch,
                                   const char* params) {
  const char* t = cxx_type(p.dtype);
  const char* causal = p.causal ? "true" : "false";
  const char* atomic = c.dq_atomic ? "true" : "false";
  const auto main_loop = [&](bool heads_first) {
    const char* order = heads_first ? "true" : "false";
    return c.wgmma()
               ? fmt::format(
                     "kjit::attention::flash_backward_sm90<{}, {}, {}, {}, {}, {}, "
                     "{}, {}>",
                     t, p.head_dim, c.block_m, c.stages, causal, atomic, params, order)
               : fmt::format("kjit::attention::flash_backward<{}, {}, {}, {}, {}, {}, {}, {}>", t,
                             p.head_dim, c.block_m, c.block_n, causal, atomic, params, order);
  };
  // Launch order: prep, main loop, the dq store (atomics) or the dq pass, then the main loop with
  // kHeadsFirst (main_kernel picks 1 or 3).
  std::vector<std::string> names = {
      fmt::format("kjit::attention::flash_backward_prep<{}, {}>", t, p.head_dim), main_loop(false)};
  if (c.dq_atomic) {
    names.push_back(fmt::format("kjit::attention::flash_backward_dq_store<{}, {}>", t, p.head_dim));
  } else {
    const Config pass = dq_pass_config(c, p);
    names.push_back(fmt::format("kjit::attention::flash_backward_dq<{}, {}, {}, {}, {}>", t,
                                p.head_dim, pass.block_m, pass.block_n, causal));
  }
  names.push_back(main_loop(true));
  KernelSpec s(sources()[c.wgmma() ? 1 : 0], names);
  s.arch = arch.name();
  return s;
}

void FlashBackward::encode_maps(Args& args, const Config& c, const Problem& p) {
  if (!c.wgmma()) return;
  // The descriptors carry this call's pointers, so they are encoded per call (host-only
  // encoding, no driver round trip). A tensor with no rows is never read, and has no map (the
  // driver refuses empty dims).
  const std::int64_t outer = args.cu_seqlens_q ? 1 : p.batch;
  if (args.tokens_q > 0) {
    args.tma_q = tile_map(args.q, p.head_dim, args.tokens_q, p.heads_q, outer, c.block_m);
    args.tma_dout = tile_map(args.dout, p.head_dim, args.tokens_q, p.heads_q, outer, c.block_m);
  }
  if (args.tokens_k > 0) {
    args.tma_k = tile_map(args.k, p.head_dim, args.tokens_k, p.heads_k, outer, c.block_n);
    args.tma_v = tile_map(args.v, p.head_dim, args.tokens_k, p.heads_k, outer, c.block_n);
  }
}

namespace {
unsigned blocks(std::int64_t n, std::int64_t per) {
  return static_cast<unsigned>((n + per - 1) / per);
}
}  // namespace

void FlashBackward::launch_prep(const Program& program, const Problem& p, const Args& args,
                                StreamHandle stream) {
  if (p.seqlen_q == 0) return;
  program.kernel_at(0).launch({{blocks(p.seqlen_q, kRowsPerPrepBlock),
                                static_cast<unsigned>(p.heads_q), static_cast<unsigned>(p.batch)},
                               {kThreads},
                               0,
                               stream,
                               {}},
                              args);
}

LaunchConfig FlashBackward::main_grid(const Config& c, const Problem& p, StreamHandle stream) {
  return {{blocks(p.seqlen_k, c.block_n), static_cast<unsigned>(p.heads_k),
           static_cast<unsigned>(p.batch)},
          {kThreads},
          shared_bytes(c, p),
          stream,
          {}};
}

unsigned FlashBackward::main_kernel(const LaunchConfig& grid) {
  // Longest blocks first where the grid is a few waves (one block a multiprocessor: its tail is
  // then a large part of it), L2 reuse past that: on the H100's grouped zigzag rows, heads first
  // won at 4 waves and lost at 8; Llama 3 8B's causal backward at B 1, S 8k (4 waves) took 3.93
  // ms heads first against 4.42 key tiles first.
  constexpr std::int64_t kHeadsFirstWaves = 6;
  const std::int64_t blocks = std::int64_t{grid.grid.x} * grid.grid.y * grid.grid.z;
  return blocks <= kHeadsFirstWaves * arch::current_multiprocessors() ? 3 : 1;
}

void FlashBackward::launch_dq(const Program& program, const Config& c, const Problem& p,
                              const Args& args, StreamHandle stream) {
  if (p.seqlen_q == 0) return;
  // The dq pass (one block per query tile of its config) or the dq store.
  const std::optional<Config> pass =
      c.dq_atomic ? std::nullopt : std::optional<Config>(dq_pass_config(c, p));
  program.kernel_at(2).launch({{blocks(p.seqlen_q, pass ? pass->block_m : kRowsPerPrepBlock),
                                static_cast<unsigned>(p.heads_q), static_cast<unsigned>(p.batch)},
                               {kThreads},
                               pass ? shared_bytes(*pass, p) : 0,
                               stream,
                               {}},
                              args);
}

void FlashBackward::launch(const Program& program, const Config& c, const Problem& p,
                           const Args& call_args, StreamHandle stream) {
  if (p.empty()) return;
  Args args = call_args;
  if (!c.dq_atomic) args.dq_accum = nullptr;  // not zeroed by the prep, not written
  encode_maps(args, c, p);
  launch_prep(program, p, args, stream);
  if (p.seqlen_k > 0) {
    const LaunchConfig grid = main_grid(c, p, stream);
    program.kernel_at(main_kernel(grid)).launch(grid, args);
  }
  launch_dq(program, c, p, args, stream);
}

void* FlashBackward::callers_workspace(const attention::BackwardOptions& o, std::size_t bytes) {
  if (o.workspace_bytes < bytes) {
    kAttentionCheck.fail(
        fmt::format("the workspace holds {} bytes; this call needs {} (backward_workspace_bytes)",
                    o.workspace_bytes, bytes));
  }
  if (reinterpret_cast<std::uintptr_t>(o.workspace) % kWorkspaceAlign != 0)
    kAttentionCheck.fail("the workspace must be 256-byte aligned");
  return o.workspace;
}

std::vector<FlashBackward::Problem> FlashBackward::shipped(const Arch&) {
  std::vector<Problem> out;
  for (DType dtype : kDTypes) {
    for (std::int64_t d : FlashForward::kHeadDims) {
      for (bool causal : {false, true}) {
        for (bool deterministic : {false, true})
          out.push_back({dtype, 1, 1, 1, d, 1, 1, causal, deterministic});
      }
    }
  }
  return out;
}

std::size_t FlashBackward::workspace_bytes(std::int64_t rows, std::int64_t heads_q,
                                           std::int64_t head_dim, bool deterministic) {
  const auto cells = static_cast<std::size_t>(rows * heads_q);
  return 2 * stats_bytes(rows, heads_q) + (deterministic ? 0 : align_up(cells * head_dim * 4));
}

void FlashBackward::attach_workspace(Args& args, void* workspace, std::int64_t rows,
                                     std::int64_t head_dim, bool deterministic) {
  auto* base = static_cast<unsigned char*>(workspace);
  const std::size_t stats = stats_bytes(rows, args.heads_q);
  args.lse2 = reinterpret_cast<float*>(base);
  args.dsum = reinterpret_cast<float*>(base + stats);
  // lse2 and dsum [B][Hq][Sq] batched, [Hq][Tq] packed: the lse's layout, contiguous.
  const std::int64_t per_head = args.cu_seqlens_q ? rows : args.seqlen_q;
  args.stats_head_stride = per_head;
  args.stats_batch_stride = args.cu_seqlens_q ? 0 : per_head * args.heads_q;
  args.stats_cells = rows * args.heads_q;
  args.dq_accum = deterministic ? nullptr : reinterpret_cast<float*>(base + 2 * stats);
  args.acc_batch_stride = args.cu_seqlens_q ? 0 : args.seqlen_q * args.heads_q * head_dim;
}

std::vector<TensorSpec> FlashBackward::tensors(const Problem& p) {
  using Role = TensorSpec::Role;
  const std::vector<std::int64_t> q{p.batch, p.seqlen_q, p.heads_q, p.head_dim},
      kv{p.batch, p.seqlen_k, p.heads_k, p.head_dim};
  // An lse near the true one (log Sk plus the spread of the scores) keeps P in (0, 1): the
  // values only need to be finite and comparable between configs.
  const float lse_lo = std::log(static_cast<float>(std::max<std::int64_t>(p.seqlen_k, 1)));
  const std::int64_t rows = p.batch * p.seqlen_q;
  return {
      {"q", p.dtype, q},
      {"k", p.dtype, kv},
      {"v", p.dtype, kv},
      {"out", p.dtype, q},
      {"dout", p.dtype, q},
      {"lse", DType::Float32, {p.batch, p.heads_q, p.seqlen_q}, Role::Input, lse_lo, lse_lo + 1},
      {"dq", p.dtype, q, Role::Output},
      {"dk", p.dtype, kv, Role::Output},
      {"dv", p.dtype, kv, Role::Output},
      {"workspace",
       DType::UInt8,
       {static_cast<std::int64_t>(workspace_bytes(rows, p.heads_q, p.head_dim, p.deterministic))},
       Role::Scratch}};
}

FlashBackward::Args FlashBackward::args(const Problem& p, const std::vector<TensorView>& t) {
  attention::BackwardOptions o;
  o.causal = p.causal;
  o.deterministic = p.deterministic;
  Args a =
      validate(t.at(0), t.at(1), t.at(2), t.at(3), t.at(4), t.at(5), t.at(6), t.at(7), t.at(8), o)
          .args;
  attach_workspace(a, t.at(9).data, p.batch * p.seqlen_q, p.head_dim, p.deterministic);
  return a;
}

std::vector<Preset<FlashBackward::Problem>> FlashBackward::presets() {
  auto problem = [](std::int64_t b, std::int64_t s, std::int64_t hq, std::int64_t hk,
                    std::int64_t d, bool causal) {
    return Problem{DType::BFloat16, b, hq, hk, d, s, s, causal, false};
  };
  std::vector<Preset<Problem>> out;
  // Training: GQA 32/8 (8B) or 64/8 (70B), hd 128, causal, 16k tokens a batch.
  for (const auto& [name, hq] : {std::pair{"llama3-8b-train", 32}, {"llama3-70b-train", 64}}) {
    Preset<Problem> preset{name, {}};
    for (std::int64_t s : {2048, 4096, 8192, 16384})
      preset.problems.push_back(problem(16384 / s, s, hq, 8, 128, true));
    out.push_back(std::move(preset));
  }
  // bench/attention_backward.cpp's batched rows: B x S = 16k tokens, H x D = 2048.
  Preset<Problem> bench{"fa-bench-bwd", {}};
  for (const BenchRow& r : fa_bench_rows())
    bench.problems.push_back(
        problem(r.batch, r.seqlen, r.heads_q, r.heads_k, r.head_dim, r.causal));
  out.push_back(std::move(bench));
  return out;
}

Call<FlashBackward> FlashBackward::validate(const TensorView& q, const TensorView& k,
                                            const TensorView& v, const TensorView& out,
                                            const TensorView& dout, const TensorView& lse,
                                            const TensorView& dq, const TensorView& dk,
                                            const TensorView& dv,
                                            const attention::BackwardOptions& o) {
  check_gradients(q, k, v, out, dout, dq, dk, dv, 4);
  if (k.size(0) != q.size(0) || v.size(0) != q.size(0))
    kAttentionCheck.fail("q, k and v must have the same batch size");
  if (v.size(1) != k.size(1))
    kAttentionCheck.fail(fmt::format("v must have k's {} keys, got {}", k.size(1), v.size(1)));
  Call<FlashBackward> call = make_call(q, k, o, 4, q.size(0), q.size(1), k.size(1));
  const Problem& p = call.problem;
  fill_tensors(call.args, q, k, v, out, dout, dq, dk, dv, true);
  call.args.tokens_q = p.seqlen_q;
  call.args.tokens_k = p.seqlen_k;
  call.args.seqlen_q = static_cast<int>(p.seqlen_q);
  call.args.seqlen_k = static_cast<int>(p.seqlen_k);
  if (p.batch > 0 && p.seqlen_q > 0) fill_lse(call.args, lse, p.batch, p.heads_q, p.seqlen_q, true);
  return call;
}

Call<FlashBackward> FlashBackward::validate_varlen(const TensorView& q, const TensorView& k,
                                                   const TensorView& v, const TensorView& out,
                                                   const TensorView& dout, const TensorView& lse,
                                                   const TensorView& dq, const TensorView& dk,
                                                   const TensorView& dv, const attention::Varlen& s,
                                                   const attention::BackwardOptions& o) {
  check_gradients(q, k, v, out, dout, dq, dk, dv, 3);
  if (v.size(0) != k.size(0))
    kAttentionCheck.fail(fmt::format("v must have k's {} tokens, got {}", k.size(0), v.size(0)));
  const LongestSequences longest = check_varlen(s, q.size(0), k.size(0));
  Call<FlashBackward> call =
      make_call(q, k, o, 3, s.cu_seqlens_q.size(0) - 1, longest.q, longest.k);
  fill_tensors(call.args, q, k, v, out, dout, dq, dk, dv, false);
  call.args.tokens_q = q.size(0);
  call.args.tokens_k = k.size(0);
  call.args.cu_seqlens_q = static_cast<const int*>(s.cu_seqlens_q.data);
  call.args.cu_seqlens_k = static_cast<const int*>(s.cu_seqlens_k.data);
  if (q.size(0) > 0) fill_lse(call.args, lse, 1, call.problem.heads_q, q.size(0), false);
  return call;
}

}  // namespace kjit::ops

namespace kjit::attention {

std::size_t backward_workspace_bytes(const TensorView& q, const BackwardOptions& options) {
  if (q.ndim != 3 && q.ndim != 4)
    ops::kAttentionCheck.fail(
        fmt::format("q must be [B, S, H, D] or [T, H, D], got {}", q.describe()));
  return ops::FlashBackward::workspace_bytes(ops::query_rows(q), q.size(q.ndim - 2),
                                             q.size(q.ndim - 1), options.deterministic);
}

void backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
              const TensorView& dout, const TensorView& lse, const TensorView& dq,
              const TensorView& dk, const TensorView& dv, const BackwardOptions& options,
              StreamHandle stream) {
  ops::run_backward(ops::FlashBackward::validate(q, k, v, out, dout, lse, dq, dk, dv, options),
                    ops::query_rows(q), options, stream);
}

void backward_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                     const TensorView& out, const TensorView& dout, const TensorView& lse,
                     const TensorView& dq, const TensorView& dk, const TensorView& dv,
                     const Varlen& seqlens, const BackwardOptions& options, StreamHandle stream) {
  ops::run_backward(
      ops::FlashBackward::validate_varlen(q, k, v, out, dout, lse, dq, dk, dv, seqlens, options),
      ops::query_rows(q), options, stream);
}

}  // namespace kjit::attention

#include "ops/mla/mla_decode.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include <fmt/format.h>

#include "driver/stream_allocation.hpp"
#include "driver/tensor_map.hpp"
#include "ops/dispatch.hpp"
#include "ops/mla/mla_inputs.hpp"

namespace kjit::ops {
namespace {

constexpr unsigned kThreads = 256;
constexpr std::int64_t kRows = 64, kLatent = mla::kLatentDim;

std::int64_t ceil_div(std::int64_t a, std::int64_t b) {
  return (a + b - 1) / b;
}

// mla_decode_combine.cuh's warps per row: four where a few rows have many splits (their partial
// rows, read from L2, then spread over four times the SMs; 1.10x at B 8 L 4k H 20 on the H100), one
// for few splits (0.82x at B 64 L 1k H 64 with four, in 8x the blocks).
std::int64_t combine_warps(std::int64_t splits) {
  return splits >= 8 ? 4 : 1;
}

// Keys per split for `splits` blocks per request: whole key tiles.
std::int64_t split_tokens(std::int64_t longest, std::int64_t splits, std::int64_t key_tile) {
  return std::max(key_tile, ceil_div(ceil_div(longest, splits), key_tile) * key_tile);
}

// The parameter block over the call's tensors (lse may have null data); lengths and table on
// the device.
MlaDecode::Args params_of(const MlaDecode::Problem& p, const TensorView& q, const TensorView& cache,
                          const TensorView& block_table, const TensorView& lengths,
                          const TensorView& out, const TensorView& lse, float scale) {
  MlaDecode::Args a{};
  a.q = q.data;
  a.cache = cache.data;
  a.block_table = static_cast<const int*>(block_table.data);
  a.lengths = static_cast<const int*>(lengths.data);
  a.out = out.data;
  a.lse = static_cast<float*>(lse.data);
  a.q_batch_stride = q.stride(0);
  a.q_token_stride = q.stride(1);
  a.q_head_stride = q.stride(2);
  a.cache_block_stride = cache.stride(0);
  a.cache_row_stride = cache.stride(1);
  a.o_batch_stride = out.stride(0);
  a.o_token_stride = out.stride(1);
  a.o_head_stride = out.stride(2);
  if (lse.data) {
    a.lse_batch_stride = lse.stride(0);
    a.lse_token_stride = lse.stride(1);
    a.lse_head_stride = lse.stride(2);
  }
  a.batch = static_cast<int>(p.batch);
  a.s_q = static_cast<int>(p.s_q);
  a.heads = static_cast<int>(p.heads);
  a.max_blocks = static_cast<int>(block_table.size(1));
  a.table_keys = block_table.size(1) * p.block_size;
  a.num_blocks = static_cast<int>(cache.size(0));
  a.scale_log2 = (scale > 0.f ? scale : 1.f / std::sqrt(static_cast<float>(mla::kHeadDim))) *
                 1.4426950408889634f;
  return a;
}

}  // namespace

bool MlaDecode::balanced(const Problem& p) {
  // (and its grid, (pieces + B) x row tiles blocks in x, within a launch's 2^31 - 1)
  return p.keys > 0 && p.batch > 1 && 5 * p.keys < 4 * p.batch * p.longest &&
         (kMaxSplits + p.batch) * p.row_tiles() <= std::numeric_limits<int>::max();
}

void MlaDecode::check(const Problem& p) {
  if (p.s_q < 1 || p.s_q > 4 || p.heads < 1 || (p.block_size != 32 && p.block_size != 64) ||
      p.batch < 0 || p.longest < 0) {
    throw InvalidArgument(fmt::format(
        "mla decode: B {} s_q {} H {} block_size {} L {} (s_q 1..4, H >= 1, blocks of 32 or 64)",
        p.batch, p.s_q, p.heads, p.block_size, p.longest));
  }
  if (p.batch > 65535 || p.row_tiles() > 65535)
    throw InvalidArgument("mla decode: at most 65535 requests and 64 x 65535 rows a request");
}

unsigned MlaDecode::shared_bytes(const Config& c) {
  const std::int64_t row = mla::kHeadDim;
  if (c.wgmma()) {
    // mla_decode_sm90.cuh: 1024 bytes of slack to align the swizzled tiles, Q and two 64-key
    // stages (rows of exactly 576), P (64 x 64), the rows' factors, maxima and sums, the stages'
    // mbarriers.
    return static_cast<unsigned>(1024 + (3 * kRows * row + kRows * 64) * 2 + 3 * kRows * 4 + 2 * 8);
  }
  // mla_decode.cuh's MlaShape::kBytes: Q (64 rows), two 32-key stages, P (rows padded by 8
  // elements), the row maxima and sums of both halves.
  return static_cast<unsigned>((kRows * (row + 8) + 2 * 32 * (row + 8) + kRows * (32 + 8)) * 2 +
                               2 * 2 * kRows * 4);
}

bool MlaDecode::valid(const Config& c, const Problem& p, const Arch& arch) {
  return (c.mainloop == kMainloopMma || (c.wgmma() && arch.has_wgmma())) && c.splits >= 1 &&
         c.splits <= kMaxSplits &&
         c.splits <= std::max<std::int64_t>(1, ceil_div(p.longest, c.key_tile())) &&
         shared_bytes(c) <= arch.max_shared_bytes();
}

std::vector<MlaDecode::Config> MlaDecode::space(const Problem&, const Arch& arch) {
  std::vector<Config> out;
  for (std::int64_t s = 1; s <= kMaxSplits; s *= 2)
    out.push_back({kMainloopMma, s});
  if (!arch.has_wgmma()) return out;
  // The wgmma loop also at every count up to 16 and between the powers above: where a few blocks
  // of a request fill the card, the count that evens out the SMs' work is seldom a power of two
  // (FlashMLA's schedule cuts H 64 B 32 L 1k into 3 pieces and B 8 L 4k into 13).
  for (std::int64_t s :
       {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 20, 24, 32, 48, 64, 96, 128})
    out.push_back({kMainloopWgmma, s});
  return out;
}

MlaDecode::Config MlaDecode::default_config(const Problem& p, const Arch& arch) {
  // Split a request's keys only while the blocks of one split per request leave most of an
  // H100's 132 SMs idle, and never below a minimum split: each split costs fp32 partials (rows x
  // 2 KB, written and read back by the combine) and a block's prologue. The wgmma loop's
  // prologue is short beside its 64-key tiles: two tiles (at 8 x 128 rows per split, the H200
  // ran B 1 L 1k at H 128 2.3x slower than at H 20), or one where a single block would hold a
  // request of at most 1k keys (B 1 L 1k at 16 splits ran 1.15x / 1.11x faster than at 8 at
  // H 20 / 64 on the H100); mma.sync's: 512 keys. The problem arrives bucketed (B and L rounded
  // up to powers of two: the config is chosen once a bucket).
  const bool wgmma = arch.has_wgmma();
  const std::int64_t blocks = std::max<std::int64_t>(1, p.batch * p.row_tiles());
  const std::int64_t min_tokens = !wgmma                             ? kMinSplitTokens
                                  : blocks == 1 && p.longest <= 1024 ? 64
                                                                     : 128;
  const std::int64_t most = std::min(kMaxSplits, std::max<std::int64_t>(1, p.longest / min_tokens));
  // A request of one row tile (H <= 64 at s_q 1) on the wgmma loop: three quarters of the SMs,
  // rounded, at any count. Fewer, longer blocks load Q and store partials fewer times; the
  // tuner's sweep on the H100 (2026-12-07) found 3 splits 1.04-1.07x faster than 4 at B 32 H 64
  // L 1k and 4k, 12-14 1.04x faster than 16 at B 8 L 4k, 96 1.18x faster than 128 at B 1 H 20
  // L 64k. Two row tiles read a request's keys twice (the second from L2) and keep a power of
  // two: at H 128 B 8 L 64k 6 splits ran 1.20x slower than 8.
  if (wgmma && p.row_tiles() == 1)
    return {kMainloopWgmma, std::min(most, std::max<std::int64_t>(1, (99 + blocks / 2) / blocks))};
  std::int64_t splits = 1;
  while (splits * 2 <= std::min(most, 132 / blocks))
    splits *= 2;
  // Once the blocks fill the card (and share its bandwidth), no more fp32 partial bytes than key
  // bytes: at H 128 B 8 L 1k, 8 splits wrote 1.8x the keys' bytes and ran 1.19x slower than 4 on
  // the H100 (at B 1, 16 blocks, 8 splits stay faster than 4).
  const std::int64_t rows = p.s_q * p.heads;
  while (splits > 1 && blocks * splits >= 128 &&
         splits * rows * kLatent * 4 >
             p.longest * mla::kHeadDim * static_cast<std::int64_t>(dtype_size(p.dtype)))
    splits /= 2;
  return {wgmma ? kMainloopWgmma : kMainloopMma, splits};
}

KernelSpec MlaDecode::spec(const Config& c, const Problem& p, const Arch& arch) {
  const char* t = cxx_type(p.dtype);
  KernelSpec s(
      sources()[c.wgmma() ? 1 : 0],
      {fmt::format("kjit::attention::mla_decode{}<{}, {}>", c.wgmma() ? "_sm90" : "", t,
                   p.block_size),
       fmt::format("kjit::attention::mla_decode_combine<{}, {}>", t, combine_warps(c.splits))});
  s.arch = arch.name();
  return s;
}

void MlaDecode::launch(const Program& program, const Config& c, const Problem& p,
                       const Args& call_args, StreamHandle stream) {
  if (p.empty()) return;
  Args args = call_args;
  if (c.wgmma() && args.num_blocks > 0) {  // (without blocks no key tile reads the map)
    const auto u = [](std::int64_t v) { return static_cast<std::uint64_t>(v); };
    args.cache_map = driver::tiled_map_16bit(
        args.cache, {u(mla::kHeadDim), u(p.block_size), u(args.num_blocks), 1},
        {args.cache_row_stride, args.cache_block_stride, args.cache_block_stride},
        {64, static_cast<std::uint32_t>(p.block_size), 1, 1});
  }
  // The split plan (mla_decode_plan.cuh): its blocks a row tile and partial slots; the balanced
  // plan's grid puts a piece's row tiles side by side.
  const bool balanced_plan = balanced(p);
  std::int64_t blocks = 0, slots = 0;
  if (balanced_plan) {
    // As many pieces as the even plan's blocks (at most the combine's slots a request), of at
    // least two 64-key tiles (mma.sync: 512 keys, its minimum split).
    args.pieces = static_cast<int>(std::min(kMaxSplits, c.splits * p.batch));
    args.split_tokens = static_cast<int>(c.wgmma() ? 128 : kMinSplitTokens);
    args.splits = 1;
    blocks = slots = args.pieces + p.batch;
  } else {
    args.split_tokens = static_cast<int>(split_tokens(p.longest, c.splits, c.key_tile()));
    args.splits =
        static_cast<int>(std::max<std::int64_t>(1, ceil_div(p.longest, args.split_tokens)));
    blocks = args.splits;
    slots = args.splits > 1 ? args.splits * p.batch : 0;
  }
  const std::int64_t rows = p.s_q * p.heads;
  std::optional<driver::StreamAllocation> partials;
  if (slots > 0) {
    const std::int64_t cells = slots * rows;
    partials.emplace(static_cast<std::size_t>(cells * (kLatent + 1) * 4), stream);
    args.partial_out = static_cast<float*>(partials->data());
    args.partial_lse = args.partial_out + cells * kLatent;
  }
  program.kernel_at(0).launch({{static_cast<unsigned>(blocks * (balanced_plan ? p.row_tiles() : 1)),
                                static_cast<unsigned>(balanced_plan ? 1 : p.row_tiles()),
                                static_cast<unsigned>(balanced_plan ? 1 : p.batch)},
                               {kThreads},
                               shared_bytes(c),
                               stream,
                               {}},
                              args);
  if (slots > 0) {
    // The wgmma loop runs on sm_90, where the combine may start under its end (PDL).
    const std::int64_t rows_per_block = 8 / combine_warps(c.splits);
    program.kernel_at(1).launch({{static_cast<unsigned>(ceil_div(p.batch * rows, rows_per_block))},
                                 {kThreads},
                                 0,
                                 stream,
                                 {},
                                 c.wgmma()},
                                args);
  }
}

std::vector<MlaDecode::Problem> MlaDecode::shipped(const Arch&) {
  std::vector<Problem> out;
  for (DType dtype : kDTypes) {
    for (std::int64_t block_size : {32, 64}) {
      out.push_back({dtype, 1, 1, 1, block_size, 1});
      out.push_back({dtype, 1, 1, 1, block_size, 4096});  // split: the combine's four-warp rows
    }
  }
  return out;
}

std::vector<TensorSpec> MlaDecode::tensors(const Problem& p) {
  using Role = TensorSpec::Role;
  const std::int64_t max_blocks = std::max<std::int64_t>(1, ceil_div(p.longest, p.block_size));
  const auto blocks = static_cast<float>(p.batch * max_blocks);
  const auto length = static_cast<float>(p.longest);
  return {{"q", p.dtype, {p.batch, p.s_q, p.heads, mla::kHeadDim}},
          {"cache", p.dtype, {p.batch * max_blocks, p.block_size, mla::kHeadDim}},
          {"block_table", DType::Int32, {p.batch, max_blocks}, Role::Input, 0.f, blocks},
          {"lengths", DType::Int32, {p.batch}, Role::Input, length, length + 0.5f},
          {"out", p.dtype, {p.batch, p.s_q, p.heads, kLatent}, Role::Output},
          {"lse", DType::Float32, {p.batch, p.s_q, p.heads}, Role::Output, 0, 0, 0.01}};
}

MlaDecode::Args MlaDecode::args(const Problem& p, const std::vector<TensorView>& t) {
  // The tables are random device data here, with no host copies to check: the workload is valid
  // by construction (entries in [0, blocks), every length L), so the op's table checks are skipped.
  return params_of(p, t.at(0), t.at(1), t.at(2), t.at(3), t.at(4), t.at(5), 0.f);
}

std::vector<Preset<MlaDecode::Problem>> MlaDecode::presets() {
  std::vector<Preset<Problem>> out;
  for (const auto& [name, heads] : {std::pair{"glm-4.7-flash-decode", 20},
                                    {"deepseek-v3-decode", 128},
                                    {"deepseek-v3-tp2-decode", 64}}) {
    Preset<Problem> preset{name, {}};
    for (std::int64_t b : {1, 8, 32, 64, 128}) {
      for (std::int64_t l : {1024, 4096, 16384, 65536})
        preset.problems.push_back({DType::BFloat16, b, 1, heads, 64, l});
    }
    out.push_back(std::move(preset));
  }
  return out;
}

Call<MlaDecode> MlaDecode::validate(const TensorView& q, const mla::PagedCache& c,
                                    const TensorView& out, const TensorView& lse,
                                    const mla::DecodeOptions& o) {
  const MlaDecodeShape s = check_mla_decode(q, c, out, lse);
  if (!(o.softmax_scale >= 0.f) || !std::isfinite(o.softmax_scale)) {
    throw InvalidArgument(
        fmt::format("mla decode: softmax_scale must be finite and >= 0 (0: 1/sqrt(576)), got {}",
                    o.softmax_scale));
  }
  Call<MlaDecode> call{};
  call.problem = {s.dtype, s.batch, s.s_q, s.heads, s.block_size, s.longest, s.keys};
  check(call.problem);
  call.args =
      params_of(call.problem, q, c.cache, c.block_table, c.lengths, out, lse, o.softmax_scale);
  return call;
}

}  // namespace kjit::ops

namespace kjit::mla {

void decode(const TensorView& q, const PagedCache& cache, const TensorView& out,
            const TensorView& lse, const DecodeOptions& options, StreamHandle stream) {
  const ops::Call<ops::MlaDecode> call = ops::MlaDecode::validate(q, cache, out, lse, options);
  if (!call.problem.empty())
    ops::run(call, stream);  // a card without its shared memory: refused there
}

}  // namespace kjit::mla

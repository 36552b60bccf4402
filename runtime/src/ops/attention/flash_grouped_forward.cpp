#include "ops/attention/flash_grouped_forward.hpp"

#include <algorithm>
#include <vector>

#include <fmt/format.h>

#include "driver/arch.hpp"
#include "ops/attention/attention_inputs.hpp"
#include "ops/attention/grouped_inputs.hpp"
#include "ops/dispatch.hpp"

namespace kjit::ops {

void GroupedForward::check(const Problem& p) {
  if (p.groups < 1 || p.groups > KJIT_MAX_ATTENTION_GROUPS) {
    kAttentionCheck.fail(fmt::format("grouped attention takes 1 to {} groups, got {}",
                                     KJIT_MAX_ATTENTION_GROUPS, p.groups));
  }
  FlashForward::check(p.per_group());
  // The groups' query tiles (of 64 rows at the smallest) run along grid y.
  if (p.groups * ((p.seqlen_q + 63) / 64) > 65535) {
    kAttentionCheck.fail(
        fmt::format("{} groups of up to {} query tokens are more query tiles than one launch holds",
                    p.groups, p.seqlen_q));
  }
}

GroupedForward::Config GroupedForward::default_config(const Problem& p, const Arch& arch) {
  Config c = FlashForward::default_config(p.per_group(), arch);
  // Persistent blocks claim a plain grid's tiles; the groups' blocks run the same loop without.
  if (c.mainloop == FlashForward::kMainloopWgmmaWsPersistent)
    c.mainloop = FlashForward::kMainloopWgmmaWsOverlap;
  // The grouped warp-specialised kernel stops at hd 192 (valid()).
  if (c.warp_specialized() && !valid(c, p, arch)) c = FlashForward::wgmma_config(p.per_group());
  // Three warpgroups (hd 64) run at the register cap of 384 threads, where the grouped kernel's
  // group lookup spills a register: two instead.
  if (c.wgmma()) c.block_m = std::min<std::int64_t>(c.block_m, 128);
  return c;
}

void GroupedForward::launch(const Program& program, const Config& c, const Problem& p,
                            const Args& call_args, StreamHandle stream) {
  if (p.empty()) return;
  Args args = call_args;
  args.tile_start[0] = 0;
  for (int g = 0; g < args.groups; ++g) {
    args.tile_start[g + 1] =
        args.tile_start[g] + static_cast<int>((args.group[g].seqlen_q + c.block_m - 1) / c.block_m);
  }
  const auto tiles = static_cast<unsigned>(args.tile_start[args.groups]);
  if (tiles == 0) return;
  // Both loops: a section's heads along x, the groups' tiles along y, longest first
  // (flash_params.h). A section's keys: its heads' longest windows of K and V.
  const std::int64_t group = p.heads_q / p.heads_k;
  std::int64_t kv_heads = section_kv_heads(
      p.heads_k, p.seqlen_k * p.head_dim * 2 * static_cast<std::int64_t>(dtype_size(p.dtype)),
      std::int64_t{tiles} * group, arch::current_multiprocessors());
  if (p.heads_k / kv_heads * tiles > 65535) kv_heads = p.heads_k;  // grid y's limit: one section
  args.section_heads = static_cast<int>(kv_heads * group);
  const auto sections = static_cast<unsigned>(p.heads_k / kv_heads);
  const LaunchConfig grid{Dim3{static_cast<unsigned>(args.section_heads), sections * tiles,
                               static_cast<unsigned>(p.batch)},
                          {c.threads()},
                          FlashForward::shared_bytes(c, p.per_group()),
                          stream,
                          {}};
  if (!c.warp_specialized()) {
    program.kernel().launch(grid, args);
    return;
  }
  // The groups share K and V (validate checked it): group 0's maps give them, then Q's a group.
  const FlashForward::Problem per_group = p.per_group();
  const KjitFlashTmaParams first = FlashForward::tma_params(c, per_group, args.group[0]);
  KjitGroupedFlashTmaParams tma{};
  tma.tma_k = first.tma_k;
  tma.tma_v = first.tma_v;
  tma.tma_q[0] = first.tma_q;
  for (int g = 1; g < args.groups; ++g)
    tma.tma_q[g] = FlashForward::tma_q(c, per_group, args.group[g]);
  tma.call = args;
  program.kernel().launch(grid, tma);
}

std::int64_t GroupedForward::section_kv_heads(std::int64_t heads_k, std::int64_t bytes_per_head,
                                              std::int64_t blocks_per_head, std::int64_t sms) {
  // A quarter of an H100's 50 MB L2: data every SM reads stays resident only up to ~16-24 MB
  // (the l2-probe), and Q, O and the blocks that lag need the rest. At 8k and 16k keys sections
  // within half the L2 read K/V 1.2x from DRAM, within a quarter 1.00x (docs/perf.md).
  constexpr std::int64_t kL2Budget = 12 << 20;
  std::int64_t heads =
      std::clamp<std::int64_t>(kL2Budget / std::max<std::int64_t>(bytes_per_head, 1), 1, heads_k);
  while (heads_k % heads != 0)
    --heads;
  // A section under a wave of blocks (one an SM) leaves SMs idle behind its longest tiles: the
  // smallest divisor that fills one instead, at most every head.
  const std::int64_t per_head = std::max<std::int64_t>(blocks_per_head, 1),
                     wave = (sms + per_head - 1) / per_head;
  if (heads < wave) {
    heads = std::min(wave, heads_k);
    while (heads_k % heads != 0)
      ++heads;
  }
  return heads;
}

std::vector<GroupedForward::Problem> GroupedForward::shipped(const Arch& arch) {
  std::vector<Problem> out;
  for (const FlashForward::Problem& f : FlashForward::shipped(arch)) {
    out.push_back(
        {f.dtype, 2, f.batch, f.heads_q, f.heads_k, f.head_dim, f.seqlen_q, f.seqlen_k, f.causal});
  }
  return out;
}

std::vector<TensorSpec> GroupedForward::tensors(const Problem& p) {
  using Role = TensorSpec::Role;
  const std::vector<std::int64_t> q{p.groups, p.batch, p.seqlen_q, p.heads_q, p.head_dim},
      kv{p.batch, p.seqlen_k, p.heads_k, p.head_dim};
  // As FlashForward's: O and the LSE / 100 under one tolerance.
  return {{"q", p.dtype, q},
          {"k", p.dtype, kv},
          {"v", p.dtype, kv},
          {"out", p.dtype, q, Role::Output},
          {"lse",
           DType::Float32,
           {p.groups, p.batch, p.heads_q, p.seqlen_q},
           Role::Output,
           0,
           0,
           0.01}};
}

GroupedForward::Args GroupedForward::args(const Problem& p, const std::vector<TensorView>& t) {
  attention::ForwardOptions o;
  o.causal = p.causal;
  const TensorView &q = t.at(0), &out = t.at(3), &lse = t.at(4);

  Args args{};
  args.groups = static_cast<int>(p.groups);
  for (std::int64_t g = 0; g < p.groups; ++g) {
    args.group[g] = FlashForward::validate(group_slice(q, g), t.at(1), t.at(2), group_slice(out, g),
                                           group_slice(lse, g), o)
                        .args;
  }
  return args;
}

std::vector<Preset<GroupedForward::Problem>> GroupedForward::presets() {
  std::vector<Preset<Problem>> out;
  for (const auto& [name, hq] : {std::pair{"llama3-8b-zigzag", 32}, {"llama3-70b-zigzag", 64}}) {
    Preset<Problem> preset{name, {}};
    for (std::int64_t s : {8192, 16384, 32768, 65536}) {
      for (std::int64_t w : {2, 4, 8}) {
        // Rank r's groups: chunk r over the prefix (r + 1) c, chunk 2W - 1 - r over (2W - r) c;
        // the longest window (rank 0's) stands for every rank in the Pow2 bucket.
        const std::int64_t c = s / (2 * w);
        preset.problems.push_back({DType::BFloat16, 2, 1, hq, 8, 128, c, 2 * w * c, true});
      }
    }
    out.push_back(std::move(preset));
  }
  return out;
}

Call<GroupedForward> GroupedForward::validate(const attention::AttentionGroup* groups,
                                              int group_count, const attention::SharedKeys& keys,
                                              const attention::ForwardOptions& o) {
  const GroupedShape shape = check_groups(groups, group_count, keys, false);
  Call<GroupedForward> call{};
  call.problem = {groups[0].q.dtype, group_count,          shape.batch,
                  shape.heads_q,     shape.heads_k,        shape.head_dim,
                  shape.longest_q,   shape.longest_window, o.causal};
  check(call.problem);
  // The launch runs the groups' tiles longest first: groups by their longest window.
  std::vector<int> order(static_cast<std::size_t>(group_count));
  std::vector<std::int64_t> window(order.size()), segment(order.size());
  for (int g = 0; g < group_count; ++g) {
    order[g] = g;
    for (std::int64_t b = 0; b < shape.batch; ++b) {
      const std::int32_t* w = groups[g].host_windows + 2 * b;
      const std::int32_t* cu = groups[g].host_cu_seqlens_q + b;
      window[g] = std::max<std::int64_t>(window[g], w[1] - w[0]);
      segment[g] = std::max<std::int64_t>(segment[g], cu[1] - cu[0]);
    }
  }
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return window[a] > window[b]; });
  call.args.groups = group_count;
  for (int i = 0; i < group_count; ++i) {
    const attention::AttentionGroup& group = groups[order[i]];
    KjitFlashParams& args = call.args.group[i] =
        FlashForward::validate_varlen(group.q, keys.k, keys.v, group.out, group.lse,
                                      varlen_of(group, keys), o)
            .args;
    args.windows_k = static_cast<const int*>(group.windows.data);
    args.seqlen_q = static_cast<int>(segment[order[i]]);  // packed: the kernel reads cu_seqlens_q
  }
  return call;
}

}  // namespace kjit::ops

namespace kjit::attention {

void forward_grouped(const AttentionGroup* groups, int group_count, const SharedKeys& keys,
                     const ForwardOptions& options, StreamHandle stream) {
  const ops::Call<ops::GroupedForward> call =
      ops::GroupedForward::validate(groups, group_count, keys, options);
  if (!call.problem.empty()) ops::run(call, stream);
}

}  // namespace kjit::attention

// Multi-head latent attention (MLA) decode and its helix context parallelism: the layout rules.
// MLA in its weight-absorbed form attends every query head to one shared latent per cached token:
// 576 columns (the 512-column latent, which is also V, then 64 rotary columns). Helix shards a
// sequence's cache across W ranks by blocks of tokens_per_block tokens, round robin (block i on
// rank i mod W); every rank decodes all heads over its shard, and one all-to-all along heads
// gives rank r the partial results of its head slice from every rank, which merge_states merges
// exactly. W need not divide H: rank r owns heads [floor(r H / W), floor((r + 1) H / W)).
#pragma once

#include <cstdint>

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit::mla {

inline constexpr int kLatentDim = 512;  // the latent: K's first columns, and V
inline constexpr int kRopeDim = 64;     // K's rotary columns
inline constexpr int kHeadDim = kLatentDim + kRopeDim;

struct HeadRange {
  int begin = 0, end = 0;  // heads [begin, end)
  int size() const { return end - begin; }
};

// Rank `rank`'s heads of `heads` over `world` ranks. Throws InvalidArgument for world < 1, a rank
// outside [0, world) or more ranks than heads (a rank would own none).
HeadRange helix_heads(int heads, int world, int rank);

// The rank that owns block `block` (0-based, of tokens_per_block tokens) of a sequence.
int helix_block_owner(std::int64_t block, int world);

// How many of a sequence's first `length` tokens rank `rank` holds: its whole blocks, plus the
// tokens of the last, partial block when it owns that one.
std::int64_t helix_local_length(std::int64_t length, int tokens_per_block, int world, int rank);

}  // namespace kjit::mla
#pragma GCC visibility pop

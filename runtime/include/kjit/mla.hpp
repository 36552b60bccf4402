// Multi-head latent attention (MLA) decode and its helix context parallelism: the layout rules.
// MLA in its weight-absorbed form attends every query head to one shared latent per cached token:
// 576 columns (the 512-column latent, which is also V, then 64 rotary columns). Helix shards a
// sequence's cache across W ranks by blocks of tokens_per_block tokens, round robin (block i on
// rank i mod W); every rank decodes all heads over its shard, and one all-to-all along heads
// gives rank r the partial results of its head slice from every rank, which merge_states merges
// exactly. W need not divide H: rank r owns heads [floor(r H / W), floor((r + 1) H / W)).
#pragma once

#include <cstdint>

#include "kjit/device.hpp"
#include "kjit/tensor.hpp"

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit::comm {
class Communicator;
}
namespace kjit::mla {

inline constexpr int kLatentDim = 512;  // the latent: K's first columns, and V
inline constexpr int kRopeDim = 64;     // K's rotary columns
inline constexpr int kHeadDim = kLatentDim + kRopeDim;

// A paged latent cache: sequence b's token t lives in row t % block_size of block
// block_table[b][t / block_size]. Host copies of the table and the lengths are validated before
// any device work (entries in use inside the cache, lengths inside the table).
struct PagedCache {
  TensorView cache;        // [num_blocks, block_size, 576], block_size 32 or 64
  TensorView block_table;  // int32 [B, max_blocks] on the device
  const std::int32_t* host_block_table = nullptr;
  TensorView lengths;  // int32 [B] on the device: the tokens each sequence has cached
  const std::int32_t* host_lengths = nullptr;
};

struct DecodeOptions {
  float softmax_scale = 0.f;  // 0: 1 / sqrt(576); models pass theirs (GLM-4.7-Flash: 0.0625)
};

// MLA decode, weight-absorbed: q [B, s_q, H, 576] (s_q 1 to 4 new tokens, the last s_q of each
// cached sequence, causal among themselves) against the paged cache (K = all 576 columns, V = the
// first 512), fp16 or bf16; out [B, s_q, H, 512] in q's dtype, lse [B, s_q, H] fp32 natural log
// (a view with null data skips it). B at most 65535, s_q x H at most 64 x 65535. A sequence of
// length 0 gives O = 0 and LSE = -inf, and so do the new tokens of a sequence shorter than s_q
// that would sit before its start (each sees the cached keys up to its own position). Long
// sequences with few requests are split across blocks and merged exactly; in a batch of uneven
// lengths the batch's keys are cut into pieces of one size (a long request over many blocks, a
// short one in one). Under a CUDA graph the device lengths may change between replays (the
// host's, checked at capture, choose the plan): every key up to a sequence's device length is
// read, as far as its row of the table reaches (max_blocks x block_size); the uneven plan's pieces
// follow the device lengths, and in the even one a length grown past the captured longest makes
// the last split longer.
void decode(const TensorView& q, const PagedCache& cache, const TensorView& out,
            const TensorView& lse, const DecodeOptions& options, StreamHandle stream);

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

// One helix decode step on this rank of `comm` (W ranks): `local` is this rank's shard of every
// sequence (the blocks it owns, helix_local_length tokens each; 0 is allowed), q [B, 1, H, 576]
// the same on every rank (s_q 1: a new token sees every cached key, so no rank needs another's
// positions), out [B, 1, H_r, 512] and lse [B, 1, H_r] (fp32, required) this rank's heads
// helix_heads(H, W, rank): every rank's partial results for them, exchanged by one all-to-all-v
// along heads and merged exactly (merge_states). Collective: every rank calls it with the same
// B, H and options.
void helix_decode(comm::Communicator& comm, const TensorView& q, const PagedCache& local,
                  const TensorView& out, const TensorView& lse, const DecodeOptions& options,
                  StreamHandle stream);

}  // namespace kjit::mla
#pragma GCC visibility pop

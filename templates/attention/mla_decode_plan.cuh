// Which keys of which request an MLA decode block reads, and where its partial goes: the split
// plan of mla_decode.cuh and mla_decode_sm90.cuh, and the partial slots mla_decode_combine.cuh
// merges for a request (cells slot x rows + row).
//  - Even (p.pieces 0): every request in p.splits blocks of p.split_tokens keys, grid (splits,
//    row tiles, batch), slot split x batch + request; the last split reads to the device length.
//  - Balanced (p.pieces > 0: a batch of uneven lengths): the batch's keys cut into pieces of one
//    size, about p.pieces of them, a request shorter than a piece whole, grid ((p.pieces + batch)
//    x row tiles) in mla_block_work's order, slots in the requests' order. A long request then
//    spreads over many blocks and a short one takes one, where the even plan, sized by the longest
//    request, gives every request as many blocks and leaves the SMs of the short ones idle. The
//    size comes from the device lengths at each launch (a replayed graph's), at least
//    p.split_tokens: pieces then never outnumber the grid (sum ceil(len / size) <= sum len / size +
//    batch <= pieces + batch) nor a request's pieces the combine's slots (ceil(len / size) <=
//    pieces).
// The balanced plan's look-ups are a warp's: every lane of the calling warp gets the result.
#pragma once

#include "attention/mla_decode_params.h"

namespace kjit::attention {

// A request's device length, as far as its row of the block table reaches: a replayed CUDA graph
// may have grown it past the length the host saw at capture (and a negative one reads nothing,
// which keeps the balanced plan's bounds).
__device__ __forceinline__ int mla_length(const KjitMlaDecodeParams& p, int b) {
  return static_cast<int>(max(0ll, min(static_cast<long long>(p.lengths[b]), p.table_keys)));
}

// The balanced plan's keys a piece: the batch's keys over p.pieces, in whole tiles of 64 keys
// (either kernel's key tile divides it).
__device__ __forceinline__ int mla_piece_tokens(const KjitMlaDecodeParams& p) {
  long long keys = 0;
  for (int b = threadIdx.x % 32; b < p.batch; b += 32)
    keys += mla_length(p, b);
#pragma unroll
  for (int d = 16; d > 0; d /= 2)
    keys += __shfl_xor_sync(0xffffffffu, keys, d);
  const long long size = min((keys + p.pieces - 1) / p.pieces, 1ll << 30);  // past any length
  return max(p.split_tokens, static_cast<int>((size + 63) / 64 * 64));
}

// A request's pieces in the balanced plan: its first slot (slots follow the requests' order),
// its first full piece in the blocks' order (below), how many pieces, its length, and whether its
// last piece is long (at least half a piece; mla_block_work starts those before the short ones)
// with how many requests before it have a long last piece.
struct MlaPieces {
  int request = -1;  // -1: none matched
  int first = 0, first_full = 0, count = 0, length = 0;
  bool long_last = false;
  int long_before = 0;
  int fulls = 0, longs = 0;  // with no match: every request's full pieces (all but each one's
                             // last), and the requests whose last piece is long
};

// The balanced plan's first request (in order) for which matches(request, MlaPieces) holds, pieces
// of `size` keys: the requests' piece counts scanned 32 at a time.
template <class Matches>
__device__ __forceinline__ MlaPieces mla_find_pieces(const KjitMlaDecodeParams& p, int size,
                                                     Matches matches) {
  const int lane = threadIdx.x % 32;
  // Pieces, full pieces, and long last pieces of the requests before this window.
  int base = 0, full_base = 0, long_base = 0;
  for (int b0 = 0; b0 < p.batch; b0 += 32) {
    const int b = b0 + lane;
    MlaPieces mine;
    mine.request = b;
    mine.length = b < p.batch ? mla_length(p, b) : 0;
    mine.count = b >= p.batch ? 0 : mine.length > 0 ? (mine.length - 1) / size + 1 : 1;
    mine.long_last = b < p.batch && mine.length - (mine.count - 1) * size >= size - size / 2;
    int inclusive = mine.count, full_inclusive = max(mine.count - 1, 0),
        long_inclusive = mine.long_last;
#pragma unroll
    for (int d = 1; d < 32; d *= 2) {
      const int before = __shfl_up_sync(0xffffffffu, inclusive, d);
      const int full_before = __shfl_up_sync(0xffffffffu, full_inclusive, d);
      const int long_before = __shfl_up_sync(0xffffffffu, long_inclusive, d);
      if (lane >= d) {
        inclusive += before;
        full_inclusive += full_before;
        long_inclusive += long_before;
      }
    }
    mine.first = base + inclusive - mine.count;
    mine.first_full = full_base + full_inclusive - max(mine.count - 1, 0);
    mine.long_before = long_base + long_inclusive - mine.long_last;
    const unsigned hit = __ballot_sync(0xffffffffu, b < p.batch && matches(mine));
    if (hit) {
      const int src = __ffs(hit) - 1;
      MlaPieces r;
      r.request = b0 + src;
      r.first = __shfl_sync(0xffffffffu, mine.first, src);
      r.first_full = __shfl_sync(0xffffffffu, mine.first_full, src);
      r.count = __shfl_sync(0xffffffffu, mine.count, src);
      r.length = __shfl_sync(0xffffffffu, mine.length, src);
      r.long_last = __shfl_sync(0xffffffffu, mine.long_last, src);
      r.long_before = __shfl_sync(0xffffffffu, mine.long_before, src);
      return r;
    }
    base += __shfl_sync(0xffffffffu, inclusive, 31);
    full_base += __shfl_sync(0xffffffffu, full_inclusive, 31);
    long_base += __shfl_sync(0xffffffffu, long_inclusive, 31);
  }
  MlaPieces none;
  none.fulls = full_base;
  none.longs = long_base;
  return none;
}

// A decode block's work: request -1 for a balanced block past the plan's pieces (it exits).
struct MlaWork {
  int request = -1, length = 0, key_begin = 0, key_end = 0;
  int row_tile = 0;
  int pieces = 0;      // the request's blocks: with 1, the block writes O and LSE itself
  long long slot = 0;  // its partial's, with more
};

// The balanced plan's blocks: a piece's row tiles side by side (their second reads of the keys
// from L2), every request's full pieces first, then the long last pieces (at least half a piece),
// then the short ones, so that the long pieces start in the first wave and the short ones fill in
// behind them (with the last pieces in the requests' order, a batch whose long requests come last
// started their last pieces only as the first wave finished).
__device__ __forceinline__ MlaWork mla_block_work(const KjitMlaDecodeParams& p) {
  MlaWork w;
  if (p.pieces == 0) {
    const int split = blockIdx.x, b = blockIdx.z, length = mla_length(p, b);
    w.request = b;
    w.length = length;
    w.key_begin = split * p.split_tokens;
    w.key_end = split == p.splits - 1 ? length : min(length, w.key_begin + p.split_tokens);
    w.row_tile = blockIdx.y;
    w.pieces = p.splits;
    w.slot = static_cast<long long>(split) * p.batch + b;
    return w;
  }
  const int size = mla_piece_tokens(p), tiles = (p.s_q * p.heads + 63) / 64;
  const int piece = blockIdx.x / tiles;
  MlaPieces r = mla_find_pieces(
      p, size, [&](const MlaPieces& m) { return piece < m.first_full + m.count - 1; });
  int k = piece - r.first_full;  // a full piece
  if (r.request < 0) {           // else a request's last piece: the long ones', then the short
    const int j = piece - r.fulls, longs = r.longs;
    if (j >= p.batch) return w;
    r = mla_find_pieces(p, size, [&](const MlaPieces& m) {
      return j < longs ? m.long_last && m.long_before == j
                       : !m.long_last && m.request - m.long_before == j - longs;
    });
    k = r.count - 1;
  }
  w.request = r.request;
  w.length = r.length;
  w.key_begin = k * size;
  w.key_end = k == r.count - 1 ? r.length : w.key_begin + size;
  w.row_tile = blockIdx.x % tiles;
  w.pieces = r.count;
  w.slot = r.first + k;
  return w;
}

// The combine's view of request b: its partials at slots first + stride x i, i < count (count 1
// in the balanced plan: none, its block wrote O).
struct MlaSlots {
  long long first = 0, stride = 0;
  int count = 0;
};

__device__ __forceinline__ MlaSlots mla_request_slots(const KjitMlaDecodeParams& p, int b) {
  if (p.pieces == 0) return {b, p.batch, p.splits};
  const int size = mla_piece_tokens(p);
  const MlaPieces r = mla_find_pieces(p, size, [&](const MlaPieces& m) { return m.request == b; });
  return {r.first, 1, r.count};
}

}  // namespace kjit::attention

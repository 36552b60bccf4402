// Which keys of which request an MLA decode block reads, and where its partial goes: the split
// plan of mla_decode.cuh and mla_decode_sm90.cuh, and the partial slots mla_decode_combine.cuh
// merges for a request (cells slot x rows + row).
//  - Even (p.pieces 0): every request in p.splits blocks of p.split_tokens keys, grid (splits,
//    row tiles, batch), slot split x batch + request; the last split reads to the device length.
//  - Balanced (p.pieces > 0: a batch of uneven lengths): the batch's keys cut into pieces of one
//    size, about p.pieces of them, a request shorter than a piece whole, grid (p.pieces + batch,
//    row tiles), slot = piece. A long request then spreads over many blocks and a short one takes
//    one, where the even plan, sized by the longest request, gives every request as many blocks
//    and leaves the SMs of the short ones idle. The size comes from the device lengths at each
//    launch (a replayed graph's), at least p.split_tokens: pieces then never outnumber the grid
//    (sum ceil(len / size) <= sum len / size + batch <= pieces + batch) nor a request's pieces the
//    combine's slots (ceil(len / size) <= pieces).
// The balanced plan's look-ups are a warp's: every lane of the calling warp gets the result.
#pragma once

#include "attention/mla_decode_params.h"

namespace kjit::attention {

// A request's device length, as far as its row of the block table reaches: a replayed CUDA graph
// may have grown it past the length the host saw at capture.
__device__ __forceinline__ int mla_length(const KjitMlaDecodeParams& p, int b) {
  return static_cast<int>(min(static_cast<long long>(p.lengths[b]), p.table_keys));
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

// A request's pieces in the balanced plan: the first piece's slot and how many.
struct MlaPieces {
  int request = -1;  // -1: none matched
  int first = 0, count = 0, length = 0;
};

// The balanced plan's first request (in order) for which matches(request, first, count) holds,
// pieces of `size` keys: the requests' piece counts scanned 32 at a time.
template <class Matches>
__device__ __forceinline__ MlaPieces mla_find_pieces(const KjitMlaDecodeParams& p, int size,
                                                     Matches matches) {
  const int lane = threadIdx.x % 32;
  int base = 0;  // pieces of the requests before this window
  for (int b0 = 0; b0 < p.batch; b0 += 32) {
    const int b = b0 + lane;
    const int length = b < p.batch ? mla_length(p, b) : 0;
    const int count = b >= p.batch ? 0 : length > 0 ? (length - 1) / size + 1 : 1;
    int inclusive = count;
#pragma unroll
    for (int d = 1; d < 32; d *= 2) {
      const int before = __shfl_up_sync(0xffffffffu, inclusive, d);
      if (lane >= d) inclusive += before;
    }
    const int first = base + inclusive - count;
    const unsigned hit = __ballot_sync(0xffffffffu, b < p.batch && matches(b, first, count));
    if (hit) {
      const int src = __ffs(hit) - 1;
      return {b0 + src, __shfl_sync(0xffffffffu, first, src), __shfl_sync(0xffffffffu, count, src),
              __shfl_sync(0xffffffffu, length, src)};
    }
    base += __shfl_sync(0xffffffffu, inclusive, 31);
  }
  return {};
}

// A decode block's work: request -1 for a balanced block past the plan's pieces (it exits).
struct MlaWork {
  int request = -1, length = 0, key_begin = 0, key_end = 0;
  int pieces = 0;      // the request's blocks: with 1, the block writes O and LSE itself
  long long slot = 0;  // its partial's, with more
};

__device__ __forceinline__ MlaWork mla_block_work(const KjitMlaDecodeParams& p) {
  if (p.pieces == 0) {
    const int split = blockIdx.x, b = blockIdx.z, length = mla_length(p, b);
    const int begin = split * p.split_tokens;
    return {b,        length,
            begin,    split == p.splits - 1 ? length : min(length, begin + p.split_tokens),
            p.splits, static_cast<long long>(split) * p.batch + b};
  }
  const int size = mla_piece_tokens(p), piece = blockIdx.x;
  const MlaPieces r =
      mla_find_pieces(p, size, [&](int, int first, int count) { return piece < first + count; });
  if (r.request < 0) return {};
  const int k = piece - r.first, begin = k * size;
  return {r.request, r.length, begin, k == r.count - 1 ? r.length : begin + size, r.count, piece};
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
  const MlaPieces r = mla_find_pieces(p, size, [&](int request, int, int) { return request == b; });
  return {r.first, 1, r.count};
}

}  // namespace kjit::attention

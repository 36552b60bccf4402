// The zigzag layouts' index math (zigzag_copy_params.h): which token a destination row holds,
// where the source holds it, and the grouped attention's plan. Shared by the kernel and host code
// (the zigzag attention's host plan, the unit tests against a plain reference), which define
// KJIT_HOST_DEVICE as `inline` before including it.
#pragma once

#include "cp/zigzag_copy_params.h"

#ifndef KJIT_HOST_DEVICE
#define KJIT_HOST_DEVICE __device__ __forceinline__
#endif

namespace kjit::cp {

// Token i of chunk `chunk` of sequence `seq`, and that chunk's length.
struct Token {
  int seq, chunk;
  long long i, chunk_len;
};

KJIT_HOST_DEVICE long long chunk_offset(const KjitZigzagCopyParams& p, int b) {
  return p.cu_seqlens[b] / (2 * p.world);  // N_b
}

// The largest b < batch with scale * N_b <= row: the sequence holding `row` of a layout that
// gives each sequence scale * n_b rows (empty sequences are skipped: a later b also qualifies).
KJIT_HOST_DEVICE int sequence_at(const KjitZigzagCopyParams& p, long long row, long long scale) {
  int lo = 0, hi = p.batch - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (scale * chunk_offset(p, mid) <= row)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// Row `u` of one rank's local buffer (rank `rank`).
KJIT_HOST_DEVICE Token local_token(const KjitZigzagCopyParams& p, int rank, long long u) {
  const int b = sequence_at(p, u, 2);
  const long long start = chunk_offset(p, b), n = chunk_offset(p, b + 1) - start;
  const long long v = u - 2 * start;
  const bool late = v >= n;
  return {b, late ? 2 * p.world - 1 - rank : rank, late ? v - n : v, n};
}

// The token at destination row `row`, and the row's byte offset in the destination.
KJIT_HOST_DEVICE Token destination_token(const KjitZigzagCopyParams& p, long long row,
                                         long long* offset) {
  const KjitZigzagLayout& to = p.to;
  switch (to.kind) {
    case KJIT_ZIGZAG_GATHERED: {
      const long long local_rows = 2 * chunk_offset(p, p.batch);
      const int slot = static_cast<int>(row / local_rows);
      const long long u = row - slot * local_rows;
      *offset = slot * to.slot_stride + u * to.row_stride;
      return local_token(p, slot, u);
    }
    case KJIT_ZIGZAG_LOCAL:
      *offset = row * to.row_stride;
      return local_token(p, p.rank, row);
    case KJIT_ZIGZAG_CHUNKS: {
      const int k = p.chunk_end - p.chunk_begin;
      const int b = sequence_at(p, row, k);
      const long long start = chunk_offset(p, b), n = chunk_offset(p, b + 1) - start;
      const long long v = row - k * start;
      *offset = row * to.row_stride;
      return {b, p.chunk_begin + static_cast<int>(v / n), v % n, n};
    }
    default: {  // KJIT_ZIGZAG_SPLIT
      const long long half = chunk_offset(p, p.batch);
      const bool late = row >= half;
      const long long v = late ? row - half : row;
      const int b = sequence_at(p, v, 1);
      const long long start = chunk_offset(p, b);
      *offset = row * to.row_stride;
      return {b, late ? 2 * p.world - 1 - p.rank : p.rank, v - start,
              chunk_offset(p, b + 1) - start};
    }
  }
}

// The byte offset of token t in the source, or -1 where the source does not hold it.
KJIT_HOST_DEVICE long long source_offset(const KjitZigzagCopyParams& p, const Token& t) {
  const KjitZigzagLayout& from = p.from;
  const int w = p.world;
  const long long start = chunk_offset(p, t.seq);
  switch (from.kind) {
    case KJIT_ZIGZAG_GATHERED: {
      const bool early = t.chunk < w;
      const int slot = early ? t.chunk : 2 * w - 1 - t.chunk;
      return slot * from.slot_stride +
             (2 * start + (early ? 0 : t.chunk_len) + t.i) * from.row_stride;
    }
    case KJIT_ZIGZAG_LOCAL:
      if (t.chunk == p.rank) return (2 * start + t.i) * from.row_stride;
      if (t.chunk == 2 * w - 1 - p.rank) return (2 * start + t.chunk_len + t.i) * from.row_stride;
      return -1;
    case KJIT_ZIGZAG_CHUNKS:
      if (t.chunk < p.chunk_begin || t.chunk >= p.chunk_end) return -1;
      return ((p.chunk_end - p.chunk_begin) * start + (t.chunk - p.chunk_begin) * t.chunk_len +
              t.i) *
             from.row_stride;
    default:  // KJIT_ZIGZAG_SPLIT
      if (t.chunk == p.rank) return (start + t.i) * from.row_stride;
      if (t.chunk == 2 * w - 1 - p.rank)
        return (chunk_offset(p, p.batch) + start + t.i) * from.row_stride;
      return -1;
  }
}

// Sequence b's entries of the plan (zigzag_copy_params.h), b in [0, batch].
KJIT_HOST_DEVICE void write_plan_entries(const KjitZigzagCopyParams& p, int b) {
  const int w = p.world, batch = p.batch;
  int* cu_q = p.plan;
  int* cu_k = cu_q + batch + 1;
  int* early = cu_k + batch + 1;
  int* late = early + 2 * batch;
  const int start = static_cast<int>(chunk_offset(p, b));
  cu_q[b] = start;
  cu_k[b] = p.chunk_end * start;
  if (b == batch) return;
  const int n = static_cast<int>(chunk_offset(p, b + 1)) - start;
  early[2 * b] = late[2 * b] = 0;
  early[2 * b + 1] = (p.plan_causal ? p.rank + 1 : 2 * w) * n;
  late[2 * b + 1] = (p.plan_causal ? 2 * w - p.rank : 2 * w) * n;
}

}  // namespace kjit::cp

/* Parameters of templates/cp/zigzag_copy.cuh, shared by the kernel and its host launcher (plain C
   layout, passed by value).

   Zigzag sharding: every packed sequence b (global cu_seqlens, length L_b divisible by 2W) is cut
   into 2W chunks of n_b = L_b / 2W tokens; rank r holds chunks r and 2W-1-r of every sequence, in
   that order (its "local" buffer, T/W tokens). With N_b = cu_seqlens[b] / 2W, a token i of chunk c
   of sequence b sits at this row of each layout:
     GATHERED  every rank's local buffer in rank order (an all-gather's output): slot
               p = (c < W ? c : 2W-1-c), row 2 N_b + (c < W ? 0 : n_b) + i of that slot
     LOCAL     rank `rank`'s local buffer: as one slot of GATHERED (other chunks: absent)
     CHUNKS    chunks [chunk_begin, chunk_end) of every sequence in global order:
               row k N_b + (c - chunk_begin) n_b + i, k = chunk_end - chunk_begin
     SPLIT     rank `rank`'s chunks by kind: its early chunks (c = rank) of every sequence at
               N_b + i, then its late chunks (c = 2W-1-rank) at N_B + N_b + i
   The kernel walks the destination's rows, finds each row's token and copies it from the
   source's row, or writes zeros where the source lacks the token. Rows hold `heads` runs of
   units_per_head accesses; every offset and stride is in bytes. */
#pragma once

#define KJIT_ZIGZAG_GATHERED 0
#define KJIT_ZIGZAG_LOCAL 1
#define KJIT_ZIGZAG_CHUNKS 2
#define KJIT_ZIGZAG_SPLIT 3

struct KjitZigzagLayout {
  int kind;              /* KJIT_ZIGZAG_* */
  long long row_stride;  /* bytes between rows */
  long long head_stride; /* bytes between heads of a row */
  long long slot_stride; /* GATHERED: bytes between rank slots */
};

struct KjitZigzagCopyParams {
  const int* cu_seqlens; /* global [batch + 1] on the device */
  int batch, world, rank;
  int chunk_begin, chunk_end; /* the CHUNKS layout's range */
  long long rows;             /* destination rows */
  int heads, units_per_head;
  int tensors; /* 1 or 2 (grid y): K and V in one launch */
  const char* src[2];
  char* dst[2];
  struct KjitZigzagLayout from, to;
  /* Optional (null: none), written by block 0: the sequence table of rank `rank`'s grouped
     attention over CHUNKS [0, chunk_end): int32 cu_q [batch + 1] (N_b: either chunk kind's
     query offsets), cu_k [batch + 1] (chunk_end N_b), then the early and the late chunk's
     windows [batch][2]: (0, (rank + 1) n_b) and (0, (2W - rank) n_b) when plan_causal, else
     (0, 2W n_b) for both. */
  int* plan;
  int plan_causal;
};

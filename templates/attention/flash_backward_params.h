/* Parameters of the attention backward kernels (templates/attention/flash_backward.cuh and
   flash_backward_sm90.cuh), shared by them and the host launcher (passed by value). Strides are
   in elements; the head dim is contiguous. */
#pragma once

#include "common/tensor_map.h"

struct KjitAttentionTensor {
  void* data;                                      /* [B, S, H, D] or packed [T, H, D] */
  long long batch_stride, row_stride, head_stride; /* batch_stride 0 when packed */
};

struct KjitFlashBackwardParams {
  /* The wgmma main loop's tiles of q, dout (block_m rows), k and v (block_n rows): 64-column
     boxes, 128-byte swizzled, over [B, S, H, D] (packed: B = 1). Filled at launch. */
  struct KjitTensorMap tma_q, tma_dout, tma_k, tma_v;
  struct KjitAttentionTensor q, k, v, out, dout, dq, dk, dv;
  const float* lse; /* the forward's, natural log: [B, Hq, Sq] or [Hq, Tq] */
  long long lse_batch_stride, lse_head_stride;
  /* Workspace (fp32), written by the prep kernel: lse2 (the lse in log2 units, +inf for rows
     that saw no key) and dsum = rowsum(dout * out), both laid out [B][Hq][Sq] or [Hq][Tq] and
     followed by KJIT_BACKWARD_STATS_SLACK zeros (bulk copies read whole 16-byte aligned runs);
     dq_accum [B x Sq or Tq][Hq][D] collects dQ / scale across key blocks (null when one kernel
     owns each dQ row block: the dq pass). */
  float* lse2;
  float* dsum;
  float* dq_accum;
  long long stats_batch_stride, stats_head_stride, stats_cells, acc_batch_stride;
  const int* cu_seqlens_q; /* [B + 1] on the device; null for batched inputs */
  const int* cu_seqlens_k;
  const int* windows_k;   /* [B][2] on the device: the keys [begin, end) each sequence's queries
                             see (grouped calls); null: all */
  int seqlen_q, seqlen_k; /* batched: every sequence's lengths */
  long long tokens_q, tokens_k; /* rows along the tensors' sequence dim: S, or T when packed */
  int heads_q, group;           /* group = Hq / Hk */
  float scale;                  /* softmax scale */
  float scale_log2;             /* softmax scale * log2(e) */
};

/* Floats past the last cell of lse2 and dsum: a query tile's stats copy reads up to 3 cells
   before its first row and block_m + 4 (<= 132) cells from there. */
#define KJIT_BACKWARD_STATS_SLACK 136

/* A grouped backward: up to KJIT_MAX_ATTENTION_GROUPS varlen backwards over one shared K/V (the
   groups' k, v, dk, dv, cu_seqlens_k, heads and scales are equal), each with its own queries,
   windows and workspace. A block of the main loop walks the query tiles of every group that sees
   its keys, so dK and dV sum over the groups in registers. */
#ifndef KJIT_MAX_ATTENTION_GROUPS
#define KJIT_MAX_ATTENTION_GROUPS 16
#endif
struct KjitGroupedBackwardParams {
  struct KjitFlashBackwardParams group[KJIT_MAX_ATTENTION_GROUPS];
  int groups;
};

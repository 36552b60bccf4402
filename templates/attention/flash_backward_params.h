/* Parameters of templates/attention/flash_backward.cuh, shared by its kernels and the host
   launcher (plain C layout, passed by value). Strides are in elements; the head dim is
   contiguous. */
#pragma once

struct KjitAttentionTensor {
  void* data;                                      /* [B, S, H, D] or packed [T, H, D] */
  long long batch_stride, row_stride, head_stride; /* batch_stride 0 when packed */
};

struct KjitFlashBackwardParams {
  struct KjitAttentionTensor q, k, v, out, dout, dq, dk, dv;
  const float* lse; /* the forward's, natural log: [B, Hq, Sq] or [Hq, Tq] */
  long long lse_batch_stride, lse_head_stride;
  /* Workspace (fp32). dsum = rowsum(dout * out), laid out [B][Hq][Sq] or [Hq][Tq]; dq_accum
     [B x Sq or Tq][Hq][D] collects dQ / scale across key blocks (null in deterministic mode,
     where one kernel owns each dQ row block). */
  float* dsum;
  float* dq_accum;
  long long dsum_batch_stride, dsum_head_stride, acc_batch_stride;
  const int* cu_seqlens_q; /* [B + 1] on the device; null for batched inputs */
  const int* cu_seqlens_k;
  int seqlen_q, seqlen_k; /* batched: every sequence's lengths */
  int heads_q, group;     /* group = Hq / Hk */
  float scale;            /* softmax scale */
  float scale_log2;       /* softmax scale * log2(e) */
};

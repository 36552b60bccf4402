/* Parameters of templates/attention/mla_decode.cuh and mla_decode_sm90.cuh, shared by the kernels
   and their host launcher (plain C layout, passed by value). Strides are in elements; rows are
   contiguous. */
#pragma once

#include "common/tensor_map.h"

struct KjitMlaDecodeParams {
  /* The sm90 kernel's copy-engine view of the cache: 64-column boxes of a block's rows, the block
     id the third coordinate; unset for the mma.sync kernel. */
  struct KjitTensorMap cache_map;
  const void* q;          /* [B, s_q, H, 576] */
  const void* cache;      /* [num_blocks, block_size, 576] */
  const int* block_table; /* [B, max_blocks] */
  const int* lengths;     /* [B]: cached tokens per sequence */
  void* out;              /* [B, s_q, H, 512] */
  float* lse;             /* [B, s_q, H], natural log; may be null */
  /* Split-KV partials, fp32: out [slots][s_q H][512] and lse [slots][s_q H] (rows s_q-major, as
     the block's rows; slots: mla_decode_plan.cuh's); null when no request is split. */
  float* partial_out;
  float* partial_lse;
  long long q_batch_stride, q_token_stride, q_head_stride;
  long long cache_block_stride, cache_row_stride;
  long long o_batch_stride, o_token_stride, o_head_stride;
  long long lse_batch_stride, lse_token_stride, lse_head_stride;
  long long table_keys; /* max_blocks x block_size: the keys a row of the table reaches */
  int batch, s_q, heads, max_blocks, num_blocks;
  /* mla_decode_plan.cuh's split plan. Even (pieces 0): splits blocks a request of split_tokens
     keys (a multiple of the key tile). Balanced: about `pieces` pieces over the batch, of at
     least split_tokens keys (a multiple of 64); splits unused. */
  int splits, split_tokens, pieces;
  float scale_log2; /* softmax scale * log2(e) */
};

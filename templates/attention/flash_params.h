/* Parameters of templates/attention/flash_forward.cuh, shared by the kernel and its host launcher
   (plain C layout, passed by value). Strides are in elements; the head dim is contiguous. */
#pragma once

#include "common/tensor_map.h"

struct KjitFlashParams {
  const void* q; /* [B, Sq, Hq, D] or packed [Tq, Hq, D] */
  const void* k; /* [B, Sk, Hk, D] or packed [Tk, Hk, D] */
  const void* v;
  void* out;               /* like q */
  float* lse;              /* [B, Hq, Sq] or [Hq, Tq]; may be null */
  const int* cu_seqlens_q; /* [B + 1] on the device; null for batched inputs */
  const int* cu_seqlens_k;
  const int* windows_k;   /* [B][2] on the device: each sequence's keys [begin, end); null: all */
  int seqlen_q, seqlen_k; /* batched: every sequence's lengths */
  int heads_q, group;     /* group = Hq / Hk: query heads per key/value head */
  long long q_batch_stride, q_row_stride, q_head_stride;
  long long k_batch_stride, k_row_stride, k_head_stride;
  long long v_batch_stride, v_row_stride, v_head_stride;
  long long o_batch_stride, o_row_stride, o_head_stride;
  long long lse_batch_stride, lse_head_stride; /* the sequence index has stride 1 */
  float scale_log2;                            /* softmax scale * log2(e) */
  int tokens_q, tokens_k; /* rows along the tensors' sequence dim: S, or T when packed */
};

/* The warp-specialised loop's parameters (flash_forward_sm90_ws.cuh): the call's, and the copy
   engine's views of Q (block_m rows), K and V (block_n rows): 64-column boxes of one head,
   128-byte swizzled, over [B, S, H, D] (packed: B = 1). Encoded at launch. The persistent loop's
   blocks take the items (query tile, head, sequence) of the plain grid in its order, tiles the
   fastest: items = tiles x heads x sequences; block b first takes item b, then the next unclaimed
   one, counted in *next_item (zero at launch) from gridDim.x on. */
struct KjitFlashTmaParams {
  struct KjitTensorMap tma_q, tma_k, tma_v;
  struct KjitFlashParams call;
  int tiles, items;
  int* next_item;
};

/* A grouped forward: up to KJIT_MAX_ATTENTION_GROUPS varlen forwards over one shared K/V (the
   groups' k, v, cu_seqlens_k and strides are equal), each with its own queries and windows, in
   one launch: grid (query head within a section, section x query tile, sequence). The query heads
   come in sections of section_heads whose K/V fit in L2 together (blocks start in grid order: x,
   then y, then z), y / tiles is the section (tiles = tile_start[groups]). Within a section,
   y % tiles enumerates the groups' query tiles longest first: the groups in order (the host sorts
   them by window length, longest first), each group's tiles from its last (under causal masking,
   the one that sees the most keys); x is the head, so that the longest tiles of every head of the
   section start first. Group g's tiles are y % tiles in [tile_start[g], tile_start[g + 1]); its
   seqlen_q is its longest query segment. */
#ifndef KJIT_MAX_ATTENTION_GROUPS
#define KJIT_MAX_ATTENTION_GROUPS 16
#endif
struct KjitGroupedFlashParams {
  struct KjitFlashParams group[KJIT_MAX_ATTENTION_GROUPS];
  int tile_start[KJIT_MAX_ATTENTION_GROUPS + 1];
  int groups;
  int section_heads; /* query heads a section */
};

/* A grouped launch of the warp-specialised loop: the shared K and V maps, each group's Q map
   (group g of `call`, in its order), and the groups' parameters, over KjitGroupedFlashParams's
   grid. */
struct KjitGroupedFlashTmaParams {
  struct KjitTensorMap tma_k, tma_v;
  struct KjitTensorMap tma_q[KJIT_MAX_ATTENTION_GROUPS];
  struct KjitGroupedFlashParams call;
};

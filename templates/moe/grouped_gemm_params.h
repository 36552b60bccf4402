/* Parameters of templates/moe/grouped_gemm.cuh, grouped_gemm_fp4.cuh and
   grouped_gemm_decode.cuh (plain C layout, passed by value). The tensor maps are encoded at
   launch from the pointers and strides below them (elements; an FP4 w's in bytes); the decode
   kernel reads the pointers only. */
#pragma once

#include "common/tensor_map.h"

struct KjitMoeGemmParams {
  struct KjitTensorMap x_map; /* x_sorted: 64-column boxes of block_m rows */
  struct KjitTensorMap w_map; /* w: 64-column (FP4: 32-byte) boxes of block_n rows of an expert */
  const void* x;              /* [rows, k], or [experts, rows, k] in the masked layout */
  const void* w;              /* [experts, n, k], or FP4 codes [experts, n, k / 2] */
  const int* block_expert;    /* [rows / block_m]: each block's expert; -1: skipped */
  void* y;                    /* [(experts,) rows, n], or n / 2 columns after SwiGLU */
  const int* masked_m;        /* the masked layout's [experts]: rows of each that hold tokens */
  /* The routing-weight epilogue's: align's sorted [rows] and the router's weights [T k] (pair p's
     weight at p); a row whose pair is not below `pairs` (padding) is written 0. The FP4 and decode
     kernels also read sorted, when given, to multiply only a block's rows up to its last pair. */
  const int* sorted;
  const float* pair_weights;
  /* FP4 w's: block scales [experts, n, k / block] (one byte each) and NVFP4's tensor scale of
     expert e at tensor_scale[e tensor_scale_stride] (MXFP4: unused). */
  const unsigned char* w_scales;
  const float* tensor_scale;
  long long scale_expert_stride, scale_row_stride;
  int tensor_scale_stride;
  int scale_pitch; /* FP4: bytes between two weight rows' scales in shared memory */
  long long x_row_stride, x_expert_stride, w_expert_stride, w_row_stride, y_row_stride,
      y_expert_stride;
  int rows, n, k, experts, pairs; /* k a multiple of 64 (FP4 decode: 128), n of block_n */
  int zero_padding; /* 0: the decode kernel leaves the contiguous layout's padding rows unwritten */
};

/* The decode kernel's shared memory, which the host sizes: KJIT_MOE_DECODE_TOKENS token rows of k
   elements of x and KJIT_MOE_DECODE_ROW_PAD bytes each, its second set of warps' sums (kept,
   unused, in the one-set form), then each thread's ring of weight steps (stages slots of
   KJIT_MOE_DECODE_FP4_SLOT_BYTES or, for 16-bit weights, KJIT_MOE_DECODE_16BIT_SLOT_BYTES). */
enum {
  KJIT_MOE_DECODE_THREADS = 256, /* two sets of 4 warps (the one-set form: half) */
  KJIT_MOE_DECODE_TOKENS = 8,
  KJIT_MOE_DECODE_ROW_PAD = 32,
  KJIT_MOE_DECODE_SUM_BYTES = 4 * 4 * 32 * 4, /* 4 warps' 4 sums a lane */
  KJIT_MOE_DECODE_FP4_SLOT_BYTES = 32,
  KJIT_MOE_DECODE_16BIT_SLOT_BYTES = 64
};

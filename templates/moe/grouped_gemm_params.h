/* Parameters of templates/moe/grouped_gemm.cuh (plain C layout, passed by value). The tensor maps
   are encoded at launch from the pointers and strides below them (elements). */
#pragma once

#include "common/tensor_map.h"

struct KjitMoeGemmParams {
  struct KjitTensorMap x_map; /* x_sorted: 64-column boxes of block_m rows */
  struct KjitTensorMap w_map; /* w: 64-column boxes of block_n rows of one expert */
  const void* x;              /* [rows, k] */
  const void* w;              /* [experts, n, k] */
  const int* block_expert;    /* [rows / block_m]: each block's expert; -1: skipped */
  void* y;                    /* [rows, n] */
  long long x_row_stride, w_expert_stride, w_row_stride, y_row_stride;
  int rows, n, k, experts; /* k a multiple of 64, n of block_n */
};

/* Parameters of templates/moe/permute.cuh (plain C layout, passed by value). Rows are `vectors`
   16-byte vectors (8 elements) long; strides in elements. */
#pragma once

struct KjitMoePermuteParams {
  const void* x;     /* [T, D]: the tokens */
  const int* sorted; /* [rows]: moe align's pair indices by expert; T k (or more) pads */
  void* x_sorted;    /* [rows, D]: row i = x[sorted[i] / k], zeros for a padding row */
  int* positions;    /* [T k]: pair p's row in x_sorted; -1 for a pair align did not place */
  long long x_row_stride, out_row_stride;
  int rows, pairs, top_k, vectors;
  int zero_padding; /* 0: padding rows left unwritten */
};

struct KjitMoeUnpermuteParams {
  const void* y;        /* [rows, D]: the experts' outputs in the dispatch layout */
  const int* positions; /* [T k], as permute wrote them */
  const float* weights; /* [T, k] contiguous; null: every weight 1 */
  const void* shared;   /* [T, D]: the shared expert's output, added once; may be null */
  void* out;            /* [T, D] */
  long long y_row_stride, shared_row_stride, out_row_stride;
  int tokens, top_k, rows, vectors; /* a position outside [0, rows) counts as not placed */
};

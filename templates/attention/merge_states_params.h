/* Parameters of templates/attention/merge_states.cuh, shared by the kernel and its host launcher
   (plain C layout, passed by value). Strides are in elements. */
#pragma once

struct KjitMergeStatesParams {
  const void* parts;      /* [N, T, H, D] of the element type, D contiguous */
  const float* parts_lse; /* [N, T, H] */
  void* out;              /* [T, H, D] */
  float* out_lse;         /* [T, H]; may be null */
  long long rows;         /* T * H */
  long long heads;        /* H */
  long long part_stride, token_stride, head_stride;
  long long lse_part_stride, lse_token_stride, lse_head_stride;
  long long out_token_stride, out_head_stride;
  long long out_lse_token_stride, out_lse_head_stride;
};

/* Parameters of templates/moe/router_topk.cuh (plain C layout, passed by value). */
#pragma once

struct KjitRouterParams {
  const void* logits; /* [T, E], rows `logits_stride` elements apart */
  const float* bias;  /* [E], added to the scores for the choice only; may be null */
  int* ids;           /* [T, k] */
  float* weights;     /* [T, k] */
  long long logits_stride, ids_stride, weights_stride;
  int tokens;
  float scaling; /* the routed scaling factor */
};

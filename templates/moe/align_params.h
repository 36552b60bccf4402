/* Parameters of templates/moe/align.cuh (plain C layout, passed by value). */
#pragma once

struct KjitMoeAlignParams {
  const int* ids; /* [T, k] expert per (token, slot): pair index i = t k + j */
  int* sorted; /* [blocks x block]: pair indices by expert, each expert's run padded to `block` */
  int* block_expert; /* [blocks]: the expert of each block of `sorted`; -1 past the end */
  int* counts;       /* [E]: pairs per expert */
  int* offsets;      /* [E + 1]: each expert's start in `sorted`; offsets[E] = the padded total */
  int* invalid;      /* [1]: pairs whose expert id is outside [0, E) (not placed) */
  int pairs, block, blocks; /* blocks: sorted's rows / block */
};

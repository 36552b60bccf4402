/* Parameters of templates/moe/block_slots.cuh (plain C layout, passed by value). */
#pragma once

struct KjitMoeBlockSlotsParams {
  const int* block_expert;   /* [blocks]: moe align's expert of each block of rows, -1: none */
  const int* slot_of_expert; /* [experts]: the cache slot holding each expert, -1: not this pass */
  int* block_slot;           /* [blocks]: the slot each block's GEMM reads, -1: skip the block */
  int blocks, experts;
};

// moe align's blocks of rows mapped to expert-cache slots (the offloaded MoE layer): a block whose
// expert the pass's table places takes that slot, any other -1, which the grouped GEMM skips. The
// layout itself stays the one every expert resident gives, so the offloaded layer's rows and sums
// are those of moe::layer.
#pragma once

#include "moe/block_slots_params.h"

namespace kjit::moe {

__global__ void moe_block_slots(const KjitMoeBlockSlotsParams p) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= p.blocks) return;
  const int e = p.block_expert[b];
  p.block_slot[b] = e >= 0 && e < p.experts ? p.slot_of_expert[e] : -1;
}

}  // namespace kjit::moe

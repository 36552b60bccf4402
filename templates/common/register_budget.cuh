// Moving registers between the warpgroups of a warp-specialised block (setmaxnreg, sm_90a): a
// warpgroup that needs few (a producer issuing copies) gives its share back to the block's pool,
// and the warpgroups that hold the accumulators take it. Every warp of a warpgroup executes the
// same call; the counts are multiples of 8 in 24..256, and claim waits until the pool has them.
#pragma once

namespace kjit::ptx {

template <int kRegisters>
__device__ __forceinline__ void release_registers() {
  static_assert(kRegisters % 8 == 0 && kRegisters >= 24 && kRegisters <= 256, "setmaxnreg count");
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}

template <int kRegisters>
__device__ __forceinline__ void claim_registers() {
  static_assert(kRegisters % 8 == 0 && kRegisters >= 24 && kRegisters <= 256, "setmaxnreg count");
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}

}  // namespace kjit::ptx

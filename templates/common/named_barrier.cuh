// Named barriers (bar.arrive / bar.sync on ids 1-15; 0 is __syncthreads): one group of warps
// hands data to another without stopping. The producers' shared-memory writes before
// named_barrier_arrive are visible to the consumers after their named_barrier_sync; `threads`
// counts both sides and is a multiple of 32.
#pragma once

namespace kjit::ptx {

__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

}  // namespace kjit::ptx

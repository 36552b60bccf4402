// mbarrier (sm_90): a 64-bit shared-memory barrier whose current phase completes once its
// expected arrivals have arrived and the transaction bytes announced with them have landed (bulk
// and tensor copies credit their bytes to it). Waiting names the phase by its parity: a barrier
// used once per pass of a loop is waited on with parity (pass & 1).
#pragma once

#include <cuda/std/cstdint>

#include "common/cp_async.cuh"

namespace kjit::ptx {

__device__ __forceinline__ void mbarrier_init(cuda::std::uint64_t* bar, unsigned arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_address(bar)), "r"(arrivals)
               : "memory");
}

// Makes the initialised barriers visible to the copy engine; a block-wide barrier must follow
// before anyone uses them.
__device__ __forceinline__ void fence_mbarrier_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// One arrival, announcing `bytes` more transaction bytes for the current phase.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(cuda::std::uint64_t* bar,
                                                          unsigned bytes) {
  asm volatile(
      "mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(shared_address(bar)),
      "r"(bytes)
      : "memory");
}

// One arrival, no transaction bytes (a consumer releasing a stage).
__device__ __forceinline__ void mbarrier_arrive(cuda::std::uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(shared_address(bar)) : "memory");
}

// Spins until the phase of parity `parity` has completed.
__device__ __forceinline__ void mbarrier_wait(cuda::std::uint64_t* bar, unsigned parity) {
  const unsigned address = shared_address(bar);
  unsigned done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(address), "r"(parity)
        : "memory");
  } while (!done);
}

}  // namespace kjit::ptx

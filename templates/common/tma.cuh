// The copy engine (sm_90): tensor copies through a TMA descriptor (common/tensor_map.h) and plain
// bulk copies, global -> shared, each completing on an mbarrier (common/mbarrier.cuh) that the
// issuing thread armed with the bytes to expect. Issued by one thread; boxes past the tensor's
// bounds are zero-filled and still count their full bytes.
#pragma once

#include <cuda/std/cstdint>

#include "common/cp_async.cuh"
#include "common/tensor_map.h"

namespace kjit::ptx {

// Pulls the descriptor into the constant cache ahead of its first copy.
__device__ __forceinline__ void prefetch_tensor_map(const KjitTensorMap& map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(&map) : "memory");
}

// The box at element coordinates (c0 innermost, .., c3) of a rank-4 map into `dst` (aligned as
// the map's swizzle needs: 1024 bytes for 128-byte swizzle).
__device__ __forceinline__ void tma_load_4d(void* dst, const KjitTensorMap& map,
                                            cuda::std::uint64_t* bar, int c0, int c1, int c2,
                                            int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, "
      "%3, %4, %5}], [%6];\n" ::"r"(shared_address(dst)),
      "l"(&map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(shared_address(bar))
      : "memory");
}

// An L2 eviction policy for copies of data read once (createpolicy): its lines go first.
__device__ __forceinline__ cuda::std::uint64_t l2_evict_first() {
  cuda::std::uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
  return policy;
}

// tma_load_4d under an L2 eviction policy (l2_evict_first).
__device__ __forceinline__ void tma_load_4d(void* dst, const KjitTensorMap& map,
                                            cuda::std::uint64_t* bar, int c0, int c1, int c2,
                                            int c3, cuda::std::uint64_t policy) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint "
      "[%0], [%1, {%2, %3, %4, %5}], [%6], %7;\n" ::"r"(shared_address(dst)),
      "l"(&map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(shared_address(bar)), "l"(policy)
      : "memory");
}

// `bytes` (a multiple of 16) from a 16-byte aligned global address to 16-byte aligned shared.
__device__ __forceinline__ void bulk_load(void* dst, const void* src, unsigned bytes,
                                          cuda::std::uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::
          "r"(shared_address(dst)),
      "l"(src), "r"(bytes), "r"(shared_address(bar))
      : "memory");
}

}  // namespace kjit::ptx

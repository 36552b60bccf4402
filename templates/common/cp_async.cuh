// cp.async (sm_80+): 16- and 4-byte global -> shared copies that bypass registers, grouped so a
// multi-stage pipeline can wait for the oldest stage only.
#pragma once

namespace kjit::ptx {

__device__ __forceinline__ unsigned shared_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// Copies 16 bytes; when `valid` is false the destination is zero-filled and nothing is read.
__device__ __forceinline__ void cp_async_16(void* shared_dst, const void* global_src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(shared_dst)),
               "l"(global_src), "r"(src_bytes));
}

// Copies 16 bytes that the block reads once (a decode GEMM's weights) to `shared_dst` (a
// shared_address()), the rest of their 256-byte L2 line fetched with them (the next k-steps of the
// same weight row).
__device__ __forceinline__ void cp_async_16_stream(unsigned shared_dst, const void* global_src) {
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;\n" ::"r"(shared_dst),
               "l"(global_src));
}

// Copies the first `src_bytes` (0 to 4) of a 4-byte-aligned word and zero-fills the rest.
__device__ __forceinline__ void cp_async_4(void* shared_dst, const void* global_src,
                                           int src_bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(shared_address(shared_dst)),
               "l"(global_src), "r"(src_bytes));
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}

// Waits until at most `kPending` committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

}  // namespace kjit::ptx

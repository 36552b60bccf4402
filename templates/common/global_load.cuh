// Loads from global memory that a kernel reads once, streaming (a decode GEMM's weights).
#pragma once

namespace kjit::ptx {

// 16 bytes through the read-only path, not kept in L1 (no other warp of the SM reads them), the
// rest of their 256-byte L2 line fetched with them (the next k-steps of the same weight row).
// Not volatile: the data are constant while a kernel runs, so the compiler may move the load.
__device__ __forceinline__ uint4 ld_global_stream_v4(const void* p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}

}  // namespace kjit::ptx

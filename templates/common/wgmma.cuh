// Warpgroup MMA (wgmma.mma_async, sm_90a) on 16-bit inputs with fp32 accumulators, reading
// shared-memory operands through matrix descriptors of 128-byte-swizzled tiles
// (common/swizzled_tile.cuh). Accumulators of m64nNk16 use the mma.sync C layout per warp: warp w
// of the warpgroup holds rows 16w..16w+15, and d[j][e] is row lane/4 + 8 (e / 2), column
// 8j + 2 (lane % 4) + e % 2. An A operand in registers uses mma.sync's m16n8k16 A layout.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda/std/cstdint>
#include <cuda/std/type_traits>

#include "common/swizzled_tile.cuh"

namespace kjit::ptx {

// Descriptor of a K-major (rows contiguous along K) or MN-major operand in a 128-byte-swizzled
// slab, starting at `start`. Both byte offsets are the 8-row atom stride: the K-major layout
// uses only the stride one, and an MN-major operand of N = 64 lies in one slab, so neither of
// the two strides that field pair may mean points outside it.
__device__ __forceinline__ cuda::std::uint64_t swizzled_descriptor(const void* start) {
  const cuda::std::uint64_t address = shared_address(start);
  const cuda::std::uint64_t atom = kSwizzleAtomBytes >> 4;
  return ((address & 0x3ffff) >> 4) | (atom << 16) | (atom << 32) | (1ull << 62);
}

// Orders earlier register writes (accumulators, A fragments) before the next wgmma reads them.
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Ties registers that an in-flight wgmma writes (accumulators) or reads (A fragments) to this
// point of the program, so that the compiler neither reads nor reuses them across the
// wgmma_wait that precedes it. No instruction is emitted.
template <class R, int kTiles>
__device__ __forceinline__ void fence_operand(R (&r)[kTiles][4]) {
  static_assert(cuda::std::is_same_v<R, float> || cuda::std::is_same_v<R, unsigned>,
                "fp32 accumulators or packed A fragments");
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if constexpr (cuda::std::is_same_v<R, float>) {
        asm volatile("" : "+f"(r[j][e])::"memory");
      } else {
        asm volatile("" : "+r"(r[j][e])::"memory");
      }
    }
  }
}

// Makes this thread's generic-proxy shared writes (cp.async included) visible to wgmma's
// async-proxy reads; a barrier after it publishes them to the warpgroup.
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

#define KJIT_ACC4(d, j) "+f"(d[j][0]), "+f"(d[j][1]), "+f"(d[j][2]), "+f"(d[j][3])
#define KJIT_ACC4_0(d) KJIT_ACC4(d, 0)
#define KJIT_ACC8(d) KJIT_ACC4(d, 0), KJIT_ACC4(d, 1)
#define KJIT_ACC16(d) KJIT_ACC8(d), KJIT_ACC4(d, 2), KJIT_ACC4(d, 3)
#define KJIT_ACC32(d)                                                                  \
  KJIT_ACC4(d, 0), KJIT_ACC4(d, 1), KJIT_ACC4(d, 2), KJIT_ACC4(d, 3), KJIT_ACC4(d, 4), \
      KJIT_ACC4(d, 5), KJIT_ACC4(d, 6), KJIT_ACC4(d, 7)
#define KJIT_ACC64(d)                                                                  \
  KJIT_ACC32(d), KJIT_ACC4(d, 8), KJIT_ACC4(d, 9), KJIT_ACC4(d, 10), KJIT_ACC4(d, 11), \
      KJIT_ACC4(d, 12), KJIT_ACC4(d, 13), KJIT_ACC4(d, 14), KJIT_ACC4(d, 15)
#define KJIT_ACC40(d) KJIT_ACC32(d), KJIT_ACC4(d, 8), KJIT_ACC4(d, 9)
#define KJIT_ACC56(d)                                                                  \
  KJIT_ACC32(d), KJIT_ACC4(d, 8), KJIT_ACC4(d, 9), KJIT_ACC4(d, 10), KJIT_ACC4(d, 11), \
      KJIT_ACC4(d, 12), KJIT_ACC4(d, 13)
#define KJIT_ACC88(d)                                                                    \
  KJIT_ACC64(d), KJIT_ACC4(d, 16), KJIT_ACC4(d, 17), KJIT_ACC4(d, 18), KJIT_ACC4(d, 19), \
      KJIT_ACC4(d, 20), KJIT_ACC4(d, 21)
#define KJIT_ACC96(d)                                                                    \
  KJIT_ACC64(d), KJIT_ACC4(d, 16), KJIT_ACC4(d, 17), KJIT_ACC4(d, 18), KJIT_ACC4(d, 19), \
      KJIT_ACC4(d, 20), KJIT_ACC4(d, 21), KJIT_ACC4(d, 22), KJIT_ACC4(d, 23)
#define KJIT_ACC128(d)                                                                   \
  KJIT_ACC96(d), KJIT_ACC4(d, 24), KJIT_ACC4(d, 25), KJIT_ACC4(d, 26), KJIT_ACC4(d, 27), \
      KJIT_ACC4(d, 28), KJIT_ACC4(d, 29), KJIT_ACC4(d, 30), KJIT_ACC4(d, 31)
#define KJIT_REGS96                                                                             \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "  \
  "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "  \
  "%56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, "  \
  "%74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, "  \
  "%92, %93, %94, %95}"
#define KJIT_REGS128                                                                            \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "  \
  "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "  \
  "%56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, "  \
  "%74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, "  \
  "%92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, "    \
  "%108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, "  \
  "%123, %124, %125, %126, %127}"
#define KJIT_REGS4 "{%0, %1, %2, %3}"
#define KJIT_REGS8 "{%0, %1, %2, %3, %4, %5, %6, %7}"
#define KJIT_REGS16 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}"
#define KJIT_REGS32                                                                             \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define KJIT_REGS64                                                                             \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "  \
  "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "  \
  "%56, %57, %58, %59, %60, %61, %62, %63}"

#define KJIT_REGS40                                                                             \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "  \
  "%38, %39}"
#define KJIT_REGS56                                                                             \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "  \
  "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55}"
#define KJIT_REGS88                                                                             \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "  \
  "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "  \
  "%56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, "  \
  "%74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87}"

// d (+)= A B, A (64 x 16) and B (N x 16) in shared memory, K-major (TRANSPOSE "0") or MN-major
// ("1"); scale_d = 0 overwrites d.
#define KJIT_WGMMA_SS(N, TYPE, REGS, ACC, A, B, SCALE, TRANSPOSE)                               \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" SCALE                                       \
               ", 0;\n"                                                                         \
               "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TYPE "." TYPE " " REGS ", %" A \
               ", %" B ", p, 1, 1, " TRANSPOSE ", " TRANSPOSE ";\n}\n"                          \
               : ACC(d)                                                                         \
               : "l"(a), "l"(b), "r"(scale_d))

// d (+)= A B, A (64 x 16) in registers (the m16n8k16 A layout per warp, operands A0..A3), B in
// shared memory, K-major (TRANSPOSE "0": N x 16) or N-major ("1": one swizzled slab of 16 rows of
// K and N columns); scale_d = 0 overwrites d.
#define KJIT_WGMMA_RS(N, TYPE, REGS, ACC, A, B, SCALE, TRANSPOSE)                              \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" SCALE                                      \
               ", 0;\n"                                                                        \
               "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TYPE "." TYPE " " REGS ", " A \
               ", %" B ", p, 1, 1, " TRANSPOSE ";\n}\n"                                        \
               : ACC(d)                                                                        \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(scale_d))

template <class T>
inline constexpr bool kIsHalf = cuda::std::is_same_v<T, __half>;

// S-type product: N columns of fp32 accumulators, A and B K-major in shared memory. N: 64, 128
// and 256 (the MoE GEMM's column tiles), and the attention key tiles FA3 picks per head dim (80
// at hd 256, 112 at hd 192, 176 at hd 128).
#define KJIT_WGMMA_SS_ANY(TYPE)                                                    \
  if constexpr (N == 64) {                                                         \
    KJIT_WGMMA_SS(64, TYPE, KJIT_REGS32, KJIT_ACC32, "32", "33", "34", "0");       \
  } else if constexpr (N == 80) {                                                  \
    KJIT_WGMMA_SS(80, TYPE, KJIT_REGS40, KJIT_ACC40, "40", "41", "42", "0");       \
  } else if constexpr (N == 112) {                                                 \
    KJIT_WGMMA_SS(112, TYPE, KJIT_REGS56, KJIT_ACC56, "56", "57", "58", "0");      \
  } else if constexpr (N == 128) {                                                 \
    KJIT_WGMMA_SS(128, TYPE, KJIT_REGS64, KJIT_ACC64, "64", "65", "66", "0");      \
  } else if constexpr (N == 176) {                                                 \
    KJIT_WGMMA_SS(176, TYPE, KJIT_REGS88, KJIT_ACC88, "88", "89", "90", "0");      \
  } else {                                                                         \
    KJIT_WGMMA_SS(256, TYPE, KJIT_REGS128, KJIT_ACC128, "128", "129", "130", "0"); \
  }
template <class T, int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 8][4], cuda::std::uint64_t a,
                                         cuda::std::uint64_t b, int scale_d) {
  static_assert(N == 64 || N == 80 || N == 112 || N == 128 || N == 176 || N == 256,
                "wgmma_ss: N is 64, 80, 112, 128, 176 or 256");
  if constexpr (kIsHalf<T>) {
    KJIT_WGMMA_SS_ANY("f16")
  } else {
    KJIT_WGMMA_SS_ANY("bf16")
  }
}

// d (+)= A B for 64 x 64 fp32 accumulators, A (64 x 16) and B (16 x 64) MN-major in shared
// memory: each one swizzled slab of 16 rows of K and 64 columns of M or N.
template <class T>
__device__ __forceinline__ void wgmma_ss_mn_major(float (&d)[8][4], cuda::std::uint64_t a,
                                                  cuda::std::uint64_t b, int scale_d) {
  if constexpr (kIsHalf<T>) {
    KJIT_WGMMA_SS(64, "f16", KJIT_REGS32, KJIT_ACC32, "32", "33", "34", "1");
  } else {
    KJIT_WGMMA_SS(64, "bf16", KJIT_REGS32, KJIT_ACC32, "32", "33", "34", "1");
  }
}

// Descriptor of an N-major operand that spans several 64-column slabs, `slab_bytes` apart: the
// leading byte offset is the stride from one slab (swizzle atom along N) to the next.
__device__ __forceinline__ cuda::std::uint64_t n_major_descriptor(const void* start,
                                                                  unsigned slab_bytes) {
  const cuda::std::uint64_t address = shared_address(start);
  const cuda::std::uint64_t atom = kSwizzleAtomBytes >> 4, slab = slab_bytes >> 4;
  return ((address & 0x3ffff) >> 4) | (slab << 16) | (atom << 32) | (1ull << 62);
}

// R-type product: the first N (8 to 256) columns of fp32 accumulators, A from registers, B
// (N x 16) K-major in shared memory, or N-major (kNMajor: 16 rows of K over N / 64 slabs,
// n_major_descriptor). N below 64 for bf16 only so far. One wide wgmma over a head dim, not a
// 64-column one a slab: with four a step ptxas kept a slab of O in local memory and serialised
// the wgmma at hd 256.
#define KJIT_WGMMA_RS_ANY(TYPE, TRANSPOSE)                                                        \
  if constexpr (N == 8) {                                                                         \
    KJIT_WGMMA_RS(8, TYPE, KJIT_REGS4, KJIT_ACC4_0, "{%4, %5, %6, %7}", "8", "9", TRANSPOSE);     \
  } else if constexpr (N == 16) {                                                                 \
    KJIT_WGMMA_RS(16, TYPE, KJIT_REGS8, KJIT_ACC8, "{%8, %9, %10, %11}", "12", "13", TRANSPOSE);  \
  } else if constexpr (N == 32) {                                                                 \
    KJIT_WGMMA_RS(32, TYPE, KJIT_REGS16, KJIT_ACC16, "{%16, %17, %18, %19}", "20", "21",          \
                  TRANSPOSE);                                                                     \
  } else if constexpr (N == 64) {                                                                 \
    KJIT_WGMMA_RS(64, TYPE, KJIT_REGS32, KJIT_ACC32, "{%32, %33, %34, %35}", "36", "37",          \
                  TRANSPOSE);                                                                     \
  } else if constexpr (N == 128) {                                                                \
    KJIT_WGMMA_RS(128, TYPE, KJIT_REGS64, KJIT_ACC64, "{%64, %65, %66, %67}", "68", "69",         \
                  TRANSPOSE);                                                                     \
  } else if constexpr (N == 192) {                                                                \
    KJIT_WGMMA_RS(192, TYPE, KJIT_REGS96, KJIT_ACC96, "{%96, %97, %98, %99}", "100", "101",       \
                  TRANSPOSE);                                                                     \
  } else {                                                                                        \
    KJIT_WGMMA_RS(256, TYPE, KJIT_REGS128, KJIT_ACC128, "{%128, %129, %130, %131}", "132", "133", \
                  TRANSPOSE);                                                                     \
  }
template <class T, int N, int kTiles, bool kNMajor = false>
__device__ __forceinline__ void wgmma_rs(float (&d)[kTiles][4], const unsigned (&a)[4],
                                         cuda::std::uint64_t b, int scale_d) {
  static_assert((N == 8 || N == 16 || N == 32 || N % 64 == 0) && N <= 256 && N / 8 <= kTiles,
                "wgmma_rs: N is 8 to 256, within d");
  static_assert(N >= 64 || !kIsHalf<T>, "wgmma_rs: N below 64 for bf16 only so far");
  if constexpr (kIsHalf<T> && kNMajor) {
    KJIT_WGMMA_RS_ANY("f16", "1")
  } else if constexpr (kIsHalf<T>) {
    KJIT_WGMMA_RS_ANY("f16", "0")
  } else if constexpr (kNMajor) {
    KJIT_WGMMA_RS_ANY("bf16", "1")
  } else {
    KJIT_WGMMA_RS_ANY("bf16", "0")
  }
}

#undef KJIT_WGMMA_RS_ANY
#undef KJIT_WGMMA_SS_ANY
#undef KJIT_WGMMA_RS
#undef KJIT_WGMMA_SS
#undef KJIT_REGS128
#undef KJIT_REGS96
#undef KJIT_REGS88
#undef KJIT_REGS64
#undef KJIT_REGS56
#undef KJIT_REGS40
#undef KJIT_REGS32
#undef KJIT_REGS16
#undef KJIT_REGS8
#undef KJIT_REGS4
#undef KJIT_ACC128
#undef KJIT_ACC96
#undef KJIT_ACC88
#undef KJIT_ACC64
#undef KJIT_ACC56
#undef KJIT_ACC40
#undef KJIT_ACC32
#undef KJIT_ACC16
#undef KJIT_ACC8
#undef KJIT_ACC4_0
#undef KJIT_ACC4

}  // namespace kjit::ptx

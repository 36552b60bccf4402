// A warp's tile of C += A B on mma.sync m16n8k16 with both operands in shared memory: rows
// [m0, m0 + 16 kMTiles), columns [n0, n0 + 8 kNTiles), summed over kK. A is stored [m][k], or
// [k][m] when kATransposed; B is stored [n][k] (as keys are for S = Q K^T), or [k][n] when
// kBTransposed (as values are for O = P V). Row strides in elements; rows 16-byte aligned.
#pragma once

#include "common/mma.cuh"

namespace kjit::ptx {

template <class T, int kMTiles, int kNTiles, int kK, bool kATransposed, bool kBTransposed>
__device__ __forceinline__ void warp_gemm(float (&c)[kMTiles][kNTiles][4], const T* a, int lda,
                                          int m0, const T* b, int ldb, int n0) {
  static_assert(kNTiles % 2 == 0 && kK % 16 == 0, "B is loaded in pairs of n8 tiles, k by 16");
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int k0 = 0; k0 < kK; k0 += 16) {
    unsigned fa[kMTiles][4];
#pragma unroll
    for (int m = 0; m < kMTiles; ++m) {
      const int row = m0 + 16 * m;
      if constexpr (kATransposed) {
        ldmatrix_x4_trans(fa[m],
                          a + (k0 + lane % 8 + (lane / 16) * 8) * lda + row + ((lane / 8) % 2) * 8);
      } else {
        ldmatrix_x4(fa[m], a + (row + lane % 16) * lda + k0 + (lane / 16) * 8);
      }
    }
#pragma unroll
    for (int j = 0; j < kNTiles; j += 2) {
      const int col = n0 + 8 * j;
      unsigned t[4];
      if constexpr (kBTransposed) {
        ldmatrix_x4_trans(t,
                          b + (k0 + lane % 8 + ((lane / 8) % 2) * 8) * ldb + col + (lane / 16) * 8);
      } else {
        ldmatrix_x4(t, b + (col + lane % 8 + (lane / 16) * 8) * ldb + k0 + ((lane / 8) % 2) * 8);
      }
      const unsigned b0[2] = {t[0], t[1]}, b1[2] = {t[2], t[3]};
#pragma unroll
      for (int m = 0; m < kMTiles; ++m) {
        mma_m16n8k16<T>(c[m][j], fa[m], b0);
        mma_m16n8k16<T>(c[m][j + 1], fa[m], b1);
      }
    }
  }
}

// Writes a warp's C tile (as warp_gemm leaves it) to shared memory [row][col], rounded to T.
template <class T, int kMTiles, int kNTiles>
__device__ __forceinline__ void store_tile(const float (&c)[kMTiles][kNTiles][4], T* s, int lds,
                                           int m0, int n0) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
    for (int j = 0; j < kNTiles; ++j) {
      T* at = s + (m0 + 16 * m + lane / 4) * lds + n0 + 8 * j + 2 * (lane % 4);
      *reinterpret_cast<unsigned*>(at) = pack_pair<T>(c[m][j][0], c[m][j][1]);
      *reinterpret_cast<unsigned*>(at + 8 * lds) = pack_pair<T>(c[m][j][2], c[m][j][3]);
    }
  }
}

}  // namespace kjit::ptx

// Shared-memory tiles in the 128-byte swizzle that wgmma's descriptors (common/wgmma.cuh) read:
// slabs of 64 16-bit columns (128 bytes a row), slab s after s * rows rows; row r of a slab
// starts at r * 128 bytes and its 16-byte chunk c is stored at chunk c ^ (r % 8), so that the
// eight rows of an 8 x 8 matrix load hit eight different bank groups. A tile's base must be
// 1024-byte aligned (one 8-row swizzle atom).
#pragma once

#include "common/cp_async.cuh"

namespace kjit::ptx {

inline constexpr int kSwizzleRowBytes = 128;
inline constexpr int kSwizzleAtomBytes = 8 * kSwizzleRowBytes;

// The first swizzle-atom boundary at or after `raw`, where a kernel's swizzled tiles start (its
// dynamic shared memory is launched with kSwizzleAtomBytes of slack for this).
__device__ __forceinline__ unsigned char* swizzle_aligned(unsigned char* raw) {
  return reinterpret_cast<unsigned char*>(
      (reinterpret_cast<unsigned long long>(raw) + kSwizzleAtomBytes - 1) &
      ~static_cast<unsigned long long>(kSwizzleAtomBytes - 1));
}

// Element offset of (row, col) in a tile of kRows rows.
template <class T, int kRows>
__device__ __forceinline__ int swizzled_offset(int row, int col) {
  constexpr int kSlabCols = kSwizzleRowBytes / sizeof(T), kChunkCols = 16 / sizeof(T);
  const int slab = col / kSlabCols, chunk = (col % kSlabCols) / kChunkCols;
  return (slab * kRows + row) * kSlabCols + (chunk ^ (row % 8)) * kChunkCols + col % kChunkCols;
}

// kRows x kCols from global memory (row stride `stride` elements, 16-byte aligned rows) into a
// swizzled tile, by the block's kThreads threads with cp.async; rows at or past `valid` are
// zero-filled and not read.
template <class T, int kRows, int kCols, int kThreads>
__device__ __forceinline__ void load_swizzled_tile(T* dst, const T* src, long long stride,
                                                   int valid) {
  constexpr int kChunkCols = 16 / sizeof(T), kRowChunks = kCols / kChunkCols;
  constexpr int kChunks = kRows * kRowChunks;
  static_assert(kCols % (kSwizzleRowBytes / sizeof(T)) == 0, "whole 64-column slabs");
#pragma unroll
  for (int i = 0; i < (kChunks + kThreads - 1) / kThreads; ++i) {
    const int chunk = i * kThreads + static_cast<int>(threadIdx.x);
    if (kChunks % kThreads != 0 && chunk >= kChunks) break;
    const int r = chunk / kRowChunks, col = chunk % kRowChunks * kChunkCols;
    const bool ok = r < valid;
    cp_async_16(dst + swizzled_offset<T, kRows>(r, col), src + (ok ? r : 0) * stride + col, ok);
  }
}

}  // namespace kjit::ptx

// Where one block of a flash-attention forward works: grid (query tile, head, sequence) ->
// that sequence's bounds (batched, or packed through cu_seqlens; keys narrowed to the sequence's
// window when the call has windows), the global rows of its query tile and of its key/value head
// (GQA: query head h reads key/value head h / group), and the key tiles it has to visit.
#pragma once

#include "attention/flash_params.h"

namespace kjit::attention {

// The parameters, query tile, head and sequence of this block: a plain launch's grid is (query
// tile, head, sequence); a grouped launch's is (head within a section, section x the groups'
// query tiles longest first, sequence), KjitGroupedFlashParams says how.
struct BlockWork {
  const KjitFlashParams& p;
  int tile, head, batch;
};
__device__ __forceinline__ BlockWork block_work(const KjitFlashParams& p) {
  return {p, static_cast<int>(blockIdx.x), static_cast<int>(blockIdx.y),
          static_cast<int>(blockIdx.z)};
}
// The group whose query tiles `slot` (the grid index that enumerates the groups' tiles) is among.
__device__ __forceinline__ int group_of_slot(const KjitGroupedFlashParams& p, int slot) {
  int g = 0;
  while (slot >= p.tile_start[g + 1])
    ++g;
  return g;
}
// A grouped launch's block: the group's tile that slot blockIdx.y % tiles enumerates, of head
// blockIdx.x of section blockIdx.y / tiles. The block's group is copied to shared memory: a fixed
// address there is an immediate operand, where a parameter indexed at run time would hold its
// address in registers the main loop needs.
__device__ __forceinline__ BlockWork block_work(const KjitGroupedFlashParams& p) {
  // Unsigned: the signed division's extra instructions made hd 256's wgmma loop spill.
  const unsigned tiles = static_cast<unsigned>(p.tile_start[p.groups]);
  const int slot = static_cast<int>(blockIdx.y % tiles);
  const int head =
      static_cast<int>(blockIdx.y / tiles) * p.section_heads + static_cast<int>(blockIdx.x);
  __shared__ KjitFlashParams group;
  const int g = group_of_slot(p, slot);
  const int* from = reinterpret_cast<const int*>(&p.group[g]);
  for (int i = threadIdx.x; i < static_cast<int>(sizeof(KjitFlashParams) / 4); i += blockDim.x)
    reinterpret_cast<int*>(&group)[i] = from[i];
  __syncthreads();
  return {group, p.tile_start[g + 1] - 1 - slot, head, static_cast<int>(blockIdx.z)};
}

template <class T>
struct FlashTile {
  int head, batch;
  int q_start = 0, k_start = 0;  // first token of the sequence (packed inputs)
  int seqlen_q, seqlen_k;
  int row0;      // first query row of the tile, within the sequence
  int diagonal;  // bottom-right causal alignment: row r sees keys <= r + diagonal
  const T* q;    // row row0
  const T* k;    // key 0 of the sequence
  const T* v;
  T* o;  // row row0

  __device__ FlashTile(const BlockWork& work, int block_m)
      : head(work.head),
        batch(work.batch),
        seqlen_q(work.p.seqlen_q),
        seqlen_k(work.p.seqlen_k),
        row0(work.tile * block_m) {
    const KjitFlashParams& p = work.p;
    if (p.cu_seqlens_q) {
      q_start = p.cu_seqlens_q[batch];
      seqlen_q = p.cu_seqlens_q[batch + 1] - q_start;
      k_start = p.cu_seqlens_k[batch];
      seqlen_k = p.cu_seqlens_k[batch + 1] - k_start;
    }
    if (p.windows_k) {
      const int begin = p.windows_k[2 * batch], end = p.windows_k[2 * batch + 1];
      k_start += begin;
      seqlen_k = end - begin;
    }
    diagonal = seqlen_k - seqlen_q;
    const int kv_head = head / p.group;
    const long long q_row = static_cast<long long>(q_start) + row0;
    q = static_cast<const T*>(p.q) + batch * p.q_batch_stride + q_row * p.q_row_stride +
        head * p.q_head_stride;
    k = static_cast<const T*>(p.k) + batch * p.k_batch_stride +
        static_cast<long long>(k_start) * p.k_row_stride + kv_head * p.k_head_stride;
    v = static_cast<const T*>(p.v) + batch * p.v_batch_stride +
        static_cast<long long>(k_start) * p.v_row_stride + kv_head * p.v_head_stride;
    o = static_cast<T*>(p.out) + batch * p.o_batch_stride + q_row * p.o_row_stride +
        head * p.o_head_stride;
  }

  // False for tiles past the sequence end (the grid covers the longest sequence).
  __device__ bool has_rows() const { return row0 < seqlen_q; }

  // Key tiles of block_n the query tile needs: all, or up to the last key its last row sees.
  __device__ int key_blocks(int block_m, int block_n, bool causal) const {
    int blocks = (seqlen_k + block_n - 1) / block_n;
    if (causal) {
      const int visible = min(seqlen_k, row0 + block_m + diagonal);
      blocks = visible <= 0 ? 0 : min(blocks, (visible + block_n - 1) / block_n);
    }
    return blocks;
  }

  // LSE of query row `row` (within the sequence), or null when the caller wants none.
  __device__ float* lse_row(const KjitFlashParams& p, int row) const {
    return p.lse ? p.lse + batch * p.lse_batch_stride + head * p.lse_head_stride + q_start + row
                 : nullptr;
  }
};

}  // namespace kjit::attention

// Thread-block clusters (sm_90) for kernels that also build for earlier archs, over the toolkit's
// cluster intrinsics: the block's rank and the cluster's size, the split cluster barrier and a
// word of a peer block's shared memory (distributed shared memory). Below sm_90 a launch is a
// cluster of one block: rank 0 of 1, the barrier a block barrier, the peer this block.
#pragma once

namespace kjit::ptx {

#if __CUDA_ARCH__ >= 900
__device__ __forceinline__ int cluster_rank() {
  return static_cast<int>(__clusterRelativeBlockRank());
}
__device__ __forceinline__ int cluster_blocks() {
  return static_cast<int>(__clusterSizeInBlocks());
}
#else
__device__ __forceinline__ int cluster_rank() {
  return 0;
}
__device__ __forceinline__ int cluster_blocks() {
  return 1;
}
#endif

// The split cluster barrier: arrive publishes this thread's memory writes (a release by default),
// wait sees every peer's (acquire); the pair is at least a block barrier. A cluster of one block
// (or no clusters) takes a block barrier instead: a release arrival puts a GPU-wide fence in the
// SASS.
__device__ __forceinline__ void cluster_arrive() {
#if __CUDA_ARCH__ >= 900
  if (cluster_blocks() > 1) {
    __cluster_barrier_arrive();
    return;
  }
#endif
  __syncthreads();
}

__device__ __forceinline__ void cluster_wait() {
#if __CUDA_ARCH__ >= 900
  if (cluster_blocks() > 1) __cluster_barrier_wait();
#endif
}

// `local`'s word in the shared memory of the cluster's block `rank` (mapa and a shared::cluster
// load: the toolkit's __cluster_map_shared_rank gives a generic pointer and so a generic load).
__device__ __forceinline__ int load_peer(const int* local, int rank) {
#if __CUDA_ARCH__ >= 900
  unsigned local_address = static_cast<unsigned>(__cvta_generic_to_shared(local)), remote;
  int v;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;"
               : "=r"(remote)
               : "r"(local_address), "r"(rank));
  asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(v) : "r"(remote) : "memory");
  return v;
#else
  return *local;
#endif
}

}  // namespace kjit::ptx

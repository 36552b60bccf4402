// Thread-block clusters (sm_90) for kernels that also build for earlier archs: the block's rank
// and the cluster's size, the split cluster barrier and a word of a peer block's shared memory
// (distributed shared memory). Below sm_90 a launch is a cluster of one block: rank 0 of 1, the
// barrier a block barrier, the peer this block.
#pragma once

namespace kjit::ptx {

__device__ __forceinline__ int cluster_rank() {
#if __CUDA_ARCH__ >= 900
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return static_cast<int>(r);
#else
  return 0;
#endif
}

__device__ __forceinline__ int cluster_blocks() {
#if __CUDA_ARCH__ >= 900
  unsigned n;
  asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(n));
  return static_cast<int>(n);
#else
  return 1;
#endif
}

// The split cluster barrier: arrive publishes this thread's shared-memory writes (release), wait
// sees every peer's (acquire); the pair is at least a block barrier. A cluster of one block (or no
// clusters) takes a block barrier instead: a release arrival puts a GPU-wide fence in the SASS.
__device__ __forceinline__ void cluster_arrive() {
#if __CUDA_ARCH__ >= 900
  if (cluster_blocks() > 1) {
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
    return;
  }
#endif
  __syncthreads();
}

__device__ __forceinline__ void cluster_wait() {
#if __CUDA_ARCH__ >= 900
  if (cluster_blocks() > 1) asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
#endif
}

// `local`'s word in the shared memory of the cluster's block `rank`.
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

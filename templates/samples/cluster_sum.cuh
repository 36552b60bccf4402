// Thread-block clusters (sm_90): every block sums its slice into shared memory, then block rank
// 0 of each cluster reads its peers' sums through distributed shared memory and writes the
// cluster's total. Exercises cluster launches.
#pragma once

#include <cooperative_groups.h>

namespace kjit::samples {

template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    cluster_sum(const float* __restrict__ in, float* __restrict__ cluster_totals, int n_per_block) {
  namespace cg = cooperative_groups;
  __shared__ float partial[kThreads];
  __shared__ float block_total;
  cg::cluster_group cluster = cg::this_cluster();

  const long long base = static_cast<long long>(blockIdx.x) * n_per_block;
  float sum = 0.f;
  for (int i = threadIdx.x; i < n_per_block; i += kThreads)
    sum += in[base + i];
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) block_total = partial[0];
  cluster.sync();  // every block's total is visible cluster-wide
  if (cluster.block_rank() == 0 && threadIdx.x == 0) {
    float total = 0.f;
    for (unsigned r = 0; r < cluster.num_blocks(); ++r)
      total += *cluster.map_shared_rank(&block_total, r);
    cluster_totals[blockIdx.x / cluster.num_blocks()] = total;
  }
  cluster.sync();  // peers keep their shared memory alive until rank 0 has read it
}

}  // namespace kjit::samples

// Thread indexing helpers shared by kernels. 64-bit so that grids over > 2^31 elements index
// safely.
#pragma once

namespace kjit {

__device__ __forceinline__ long long global_thread_index() {
  return static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ long long global_thread_count() {
  return static_cast<long long>(gridDim.x) * blockDim.x;
}

}  // namespace kjit

// Each block reverses its slice of `n_per_block` floats through dynamic shared memory. Exercises
// launches needing more than the default 48 KiB of dynamic shared memory.
#pragma once

namespace kjit::samples {

__global__ void shared_reverse(const float* __restrict__ in, float* __restrict__ out,
                               int n_per_block) {
  extern __shared__ float slice[];
  const long long base = static_cast<long long>(blockIdx.x) * n_per_block;
  for (int i = threadIdx.x; i < n_per_block; i += blockDim.x)
    slice[i] = in[base + i];
  __syncthreads();
  for (int i = threadIdx.x; i < n_per_block; i += blockDim.x) {
    out[base + i] = slice[n_per_block - 1 - i];
  }
}

}  // namespace kjit::samples

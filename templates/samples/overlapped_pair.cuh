// Programmatic dependent launch (sm_90): a slow producer and a consumer launched to overlap it
// (LaunchConfig::overlaps_previous_kernel). The producer lets the consumer launch at once and
// only then fills its output; the consumer, waiting for it, must read every value the producer
// wrote, never what was there before.
#pragma once

#include "common/grid_dependency.cuh"

namespace kjit::samples {

__global__ void slow_fill(float* __restrict__ out, int n, long long spin_cycles) {
  ptx::allow_dependent_launch();
  const long long start = clock64();
  while (clock64() - start < spin_cycles) {
  }
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    out[i] = static_cast<float>(i);
}

__global__ void copy_after_prior_grid(const float* __restrict__ in, float* __restrict__ out,
                                      int n) {
  ptx::wait_for_prior_grid();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    out[i] = in[i];
}

}  // namespace kjit::samples

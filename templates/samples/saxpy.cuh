// y = a * x + y over n elements, grid-stride. The smallest kernel the runtime ships: used by the
// runtime tests, the launch-overhead benchmark and the README example.
#pragma once

#include "common/indexing.cuh"

namespace kjit::samples {

template <class T>
__global__ void saxpy(long long n, T a, const T* __restrict__ x, T* __restrict__ y) {
  for (long long i = global_thread_index(); i < n; i += global_thread_count()) {
    y[i] = a * x[i] + y[i];
  }
}

// Does nothing: measures the launch path alone.
__global__ void empty_kernel() {}

}  // namespace kjit::samples

// Programmatic dependent launch (sm_90; LaunchConfig::overlaps_previous_kernel): a kernel
// launched so may run while the stream's previous kernel finishes, and waits for that kernel's
// results here; the previous kernel lets it launch before its own blocks end. Below sm_90, and
// for a kernel launched the ordinary way, both are no-ops (stream order already holds).
#pragma once

namespace kjit::ptx {

// Blocks until the previous kernel in the stream has completed and its memory is visible.
__device__ __forceinline__ void wait_for_prior_grid() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Lets the next kernel, if launched to overlap this one, start once every block of this kernel
// has called this (or ended): its blocks then take the SMs this kernel leaves idle.
__device__ __forceinline__ void allow_dependent_launch() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

}  // namespace kjit::ptx

// Which SMs share what the L2 holds: blocks, one an SM, read one buffer through L2 only, and the
// DRAM bytes of the launch (ncu's dram__bytes_read.sum, bench/l2_sharing.cpp) say how often a
// line came from memory. On the H100 (2026-12-07, docs/perf.md) a line read by SMs of both halves
// of the L2 costs one DRAM read, but data every SM reads stays resident only up to ~16-24 MB of the
// 50 MB: the two halves each hold a copy.
#pragma once

namespace kjit::samples {

// Which SM this block runs on (%smid: the hardware's numbering, not a launch index).
__device__ __forceinline__ unsigned sm_id() {
  unsigned id;
  asm volatile("mov.u32 %0, %%smid;\n" : "=r"(id));
  return id;
}

// Each block whose SM `mode` admits reads the `words` 16-byte words of src `passes` times with
// ld.global.cg (L2, not L1), starting at its own offset so that the readers spread over the
// memory channels; mode 0: each block its own slice once (one pass over the buffer in all), the
// baseline. Admitted in modes 1-4: 1 every SM, 2 the even SMs, 3 the SMs below `arg`, 4 SM 0 and
// SM `arg`. What a block read, XORed, goes to sink[blockIdx.x] (0 where not admitted).
__global__ void l2_sharing(const uint4* __restrict__ src, long long words, int passes, int mode,
                           int arg, unsigned* __restrict__ sink) {
  const unsigned sm = sm_id();
  const bool admitted = mode == 0 || mode == 1 || (mode == 2 && sm % 2 == 0) ||
                        (mode == 3 && sm < static_cast<unsigned>(arg)) ||
                        (mode == 4 && (sm == 0 || sm == static_cast<unsigned>(arg)));
  unsigned acc = 0;
  if (admitted) {
    const long long slice = words / gridDim.x;
    const long long begin = mode == 0 ? blockIdx.x * slice : 0;
    const long long count = mode == 0 ? slice : words;
    const long long offset = mode == 0 ? 0 : blockIdx.x * slice;
    for (int pass = 0; pass < (mode == 0 ? 1 : passes); ++pass) {
      for (long long i = threadIdx.x; i < count; i += blockDim.x) {
        const long long at = i + offset;  // below 2 count: wraps once at most
        const uint4 v = __ldcg(src + begin + (at < count ? at : at - count));
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
      }
    }
  }
  acc = __reduce_xor_sync(0xffffffffu, acc);
  if (threadIdx.x % 32 == 0) atomicXor(sink + blockIdx.x, acc);
}

}  // namespace kjit::samples

/* A TMA descriptor (CUtensorMap: 128 opaque bytes, 128-byte aligned as CUDA 13 declares it) as a
   kernel parameter field. The host fills it with cuTensorMapEncodeTiled
   (runtime/src/driver/tensor_map.hpp); kernels that read it take their parameter block as `const
   __grid_constant__`, so that its address is the one the bulk tensor copies (common/tma.cuh) are
   given. */
#pragma once

struct alignas(128) KjitTensorMap {
  unsigned long long opaque[16];
};

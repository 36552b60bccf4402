// Conversions between the storage types kernels take (__half, __nv_bfloat16, float) and fp32,
// and vectors of them moved as one 4/8/16-byte access.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace kjit {

__device__ __forceinline__ float negative_infinity() {
  return __int_as_float(0xff800000);
}

__device__ __forceinline__ float to_float(float v) {
  return v;
}
__device__ __forceinline__ float to_float(__half v) {
  return __half2float(v);
}
__device__ __forceinline__ float to_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// kBytes of storage moved as a single access (the unsigned types are only carriers).
template <int kBytes>
struct AccessType;
template <>
struct AccessType<2> {
  using type = unsigned short;
};
template <>
struct AccessType<4> {
  using type = unsigned;
};
template <>
struct AccessType<8> {
  using type = uint2;
};
template <>
struct AccessType<16> {
  using type = uint4;
};

template <class T, int kCount>
union Pack {
  typename AccessType<kCount * sizeof(T)>::type access;
  T values[kCount];
};

}  // namespace kjit

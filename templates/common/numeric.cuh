// Conversions between the storage types kernels take (__half, __nv_bfloat16, float) and fp32,
// vectors of them moved as one 4/8/16-byte access, and the softmax's exponential.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace kjit {

__device__ __forceinline__ float negative_infinity() {
  return __int_as_float(0xff800000);
}

// 2^x on the SFU alone (ex2.approx.ftz): exp2f also rescales inputs below -126 so that its
// results keep their subnormals, three more instructions an exponential beside the MUFU. A
// softmax loses nothing by flushing probabilities below 2^-126 (of a row whose largest is 1).
__device__ __forceinline__ float exp2_flush(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
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

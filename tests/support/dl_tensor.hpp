// A DLTensor over a TensorView's fields (the C ABI tests' input): CUDA device 0, the view's
// dtype, shape and strides (borrowed: the view must outlive it).
#pragma once

#include <dlpack/dlpack.h>

#include <cstdint>

#include "kjit/tensor.hpp"

namespace kjit::test {

inline DLTensor dl(const TensorView& v) {
  DLTensor t{};
  t.data = v.data;
  t.device = {kDLCUDA, 0};
  t.ndim = v.ndim;
  t.dtype = v.dtype == DType::Float32   ? DLDataType{kDLFloat, 32, 1}
            : v.dtype == DType::Int32   ? DLDataType{kDLInt, 32, 1}
            : v.dtype == DType::Float16 ? DLDataType{kDLFloat, 16, 1}
            : v.dtype == DType::UInt8   ? DLDataType{kDLUInt, 8, 1}
                                        : DLDataType{kDLBfloat, 16, 1};
  t.shape = const_cast<std::int64_t*>(v.shape.data());
  t.strides = const_cast<std::int64_t*>(v.strides.data());
  return t;
}

}  // namespace kjit::test

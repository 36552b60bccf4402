#include "kjit/tensor.hpp"

#include <dlpack/dlpack.h>

#include <fmt/format.h>

#include "kjit/error.hpp"

namespace kjit {

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::Float16:
    case DType::BFloat16:
      return 2;
    case DType::Float32:
    case DType::Int32:
      return 4;
    case DType::Int64:
      return 8;
    case DType::UInt8:
      return 1;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::Float16:
      return "fp16";
    case DType::BFloat16:
      return "bf16";
    case DType::Float32:
      return "fp32";
    case DType::Int32:
      return "int32";
    case DType::Int64:
      return "int64";
    case DType::UInt8:
      return "uint8";
  }
  return "?";
}

std::optional<DType> dtype_from_name(std::string_view name) {
  for (DType d : {DType::Float16, DType::BFloat16, DType::Float32, DType::Int32, DType::Int64,
                  DType::UInt8}) {
    if (name == dtype_name(d)) return d;
  }
  return std::nullopt;
}

TensorView::TensorView(void* data, DType dtype, const std::vector<std::int64_t>& shape_list)
    : data(data), dtype(dtype), ndim(static_cast<int>(shape_list.size())) {
  if (ndim > kMaxDims) throw InvalidArgument(fmt::format("a tensor has at most {} dims", kMaxDims));
  std::copy(shape_list.begin(), shape_list.end(), shape.begin());
  std::int64_t s = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    strides[d] = s;
    s *= shape[d];
  }
}

TensorView::TensorView(void* data, DType dtype, std::initializer_list<std::int64_t> shape_list,
                       std::initializer_list<std::int64_t> stride_list)
    : TensorView(data, dtype, std::vector<std::int64_t>(shape_list)) {
  if (stride_list.size() != 0 && stride_list.size() != shape_list.size()) {
    throw InvalidArgument("a tensor's strides must match its shape's length");
  }
  std::copy(stride_list.begin(), stride_list.end(), strides.begin());
}

namespace {

// A DLPack tensor's view, wherever its memory is.
TensorView view_of(const DLTensor& t, const char* what) {
  if (t.ndim < 0 || t.ndim > TensorView::kMaxDims) {
    throw InvalidArgument(
        fmt::format("{} has {} dims; kjit takes at most {}", what, t.ndim, TensorView::kMaxDims));
  }
  TensorView v;
  if (t.dtype.lanes != 1) throw InvalidArgument(fmt::format("{} has vector lanes", what));
  if (t.dtype.code == kDLFloat && t.dtype.bits == 16) {
    v.dtype = DType::Float16;
  } else if (t.dtype.code == kDLBfloat && t.dtype.bits == 16) {
    v.dtype = DType::BFloat16;
  } else if (t.dtype.code == kDLFloat && t.dtype.bits == 32) {
    v.dtype = DType::Float32;
  } else if (t.dtype.code == kDLInt && t.dtype.bits == 32) {
    v.dtype = DType::Int32;
  } else if (t.dtype.code == kDLInt && t.dtype.bits == 64) {
    v.dtype = DType::Int64;
  } else if (t.dtype.code == kDLUInt && t.dtype.bits == 8) {
    v.dtype = DType::UInt8;
  } else {
    throw InvalidArgument(fmt::format("{} has a dtype kjit does not take (code {}, {} bits)", what,
                                      static_cast<int>(t.dtype.code), t.dtype.bits));
  }
  if (t.ndim > 0 && !t.shape) throw InvalidArgument(fmt::format("{} has no shape array", what));
  v.data = t.data ? static_cast<char*>(t.data) + t.byte_offset : nullptr;
  v.ndim = t.ndim;
  std::int64_t s = 1;
  for (int d = v.ndim - 1; d >= 0; --d) {
    v.shape[d] = t.shape[d];
    // NULL strides: compact row-major. A size-1 dim's stride is never stepped and producers set
    // it to anything (PyTorch <= 2.9 to 1): it gets the compact one, so that no layout check
    // refuses it.
    v.strides[d] = t.strides && t.shape[d] != 1 ? t.strides[d] : s;
    s = v.strides[d] * t.shape[d];
  }
  // A tensor given without data is refused rather than taken for an absent optional one (which
  // is a NULL DLTensor pointer).
  if (!v.data && v.numel() > 0)
    throw InvalidArgument(fmt::format("{} has {} elements but no data", what, v.numel()));
  return v;
}

}  // namespace

TensorView TensorView::from_dlpack(const DLTensor& t, const char* what) {
  if (t.device.device_type != kDLCUDA && t.device.device_type != kDLCUDAManaged) {
    throw InvalidArgument(fmt::format("{} is not in CUDA device memory (DLPack device type {})",
                                      what, static_cast<int>(t.device.device_type)));
  }
  return view_of(t, what);
}

TensorView TensorView::from_dlpack_host(const DLTensor& t, const char* what) {
  if (t.device.device_type != kDLCUDAHost && t.device.device_type != kDLCPU) {
    throw InvalidArgument(fmt::format("{} is not in host memory (DLPack device type {})", what,
                                      static_cast<int>(t.device.device_type)));
  }
  return view_of(t, what);
}

std::int64_t TensorView::numel() const {
  std::int64_t n = 1;
  for (int d = 0; d < ndim; ++d)
    n *= shape[d];
  return n;
}

std::string TensorView::describe() const {
  std::string dims, steps;
  for (int d = 0; d < ndim; ++d) {
    dims += (d ? ", " : "") + std::to_string(shape[d]);
    steps += (d ? ", " : "") + std::to_string(strides[d]);
  }
  return fmt::format("{}[{}] strides [{}]", dtype_name(dtype), dims, steps);
}

}  // namespace kjit

// A non-owning view of a tensor in device memory: pointer, dtype, shape and strides (in
// elements). Every op takes these; DLPack tensors convert with from_dlpack().
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <dlpack/dlpack.h>  // DLTensor is an anonymous struct there: no forward declaration

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit {

enum class DType { Float16, BFloat16, Float32, Int32, Int64, UInt8 };

std::size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // "fp16", "bf16", "fp32", "int32", "int64", "uint8"
std::optional<DType> dtype_from_name(std::string_view name);  // the inverse; nullopt if unknown

struct TensorView {
  static constexpr int kMaxDims = 6;

  TensorView() = default;
  // Row-major contiguous strides when `strides` is empty.
  TensorView(void* data, DType dtype, std::initializer_list<std::int64_t> shape,
             std::initializer_list<std::int64_t> strides = {});
  TensorView(void* data, DType dtype, const std::vector<std::int64_t>& shape);

  // Throws InvalidArgument (naming `what`) for a dtype or device kjit does not take.
  static TensorView from_dlpack(const DLTensor& tensor, const char* what);
  // The same for host memory (kDLCUDAHost, or kDLCPU: the op that takes it checks that it is
  // page-locked), as the offloaded experts are.
  static TensorView from_dlpack_host(const DLTensor& tensor, const char* what);

  std::int64_t size(int dim) const { return shape[dim]; }
  std::int64_t stride(int dim) const { return strides[dim]; }
  std::int64_t numel() const;
  std::string describe() const;  // "bf16[4, 128, 8, 512] strides [..]"

  void* data = nullptr;
  DType dtype = DType::Float32;
  int ndim = 0;
  std::array<std::int64_t, kMaxDims> shape{};
  std::array<std::int64_t, kMaxDims> strides{};
};

}  // namespace kjit
#pragma GCC visibility pop

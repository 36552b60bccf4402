#include "ops/tensor_checks.hpp"

#include <cstdint>
#include <cstdlib>
#include <numeric>

#include <fmt/format.h>

#include "kjit/error.hpp"

namespace kjit::ops {

void TensorChecks::fail(const std::string& message) const {
  throw InvalidArgument(std::string(op_) + ": " + message);
}

void TensorChecks::ndim(const TensorView& t, const char* name, int ndim, const char* layout) const {
  if (t.ndim != ndim)
    fail(fmt::format("{} must be {}-D {}, got {}", name, ndim, layout, t.describe()));
}

void TensorChecks::data(const TensorView& t, const char* name) const {
  if (!t.data && t.numel() != 0) fail(fmt::format("{} is a null pointer", name));
}

void TensorChecks::contiguous_last(const TensorView& t, const char* name) const {
  if (t.ndim > 0 && t.stride(t.ndim - 1) != 1 && t.size(t.ndim - 1) > 1)
    fail(fmt::format("{} must be contiguous in its last dim, got {}", name, t.describe()));
}

void TensorChecks::nonnegative_strides(const TensorView& t, const char* name) const {
  for (int d = 0; d < t.ndim; ++d) {
    if (t.strides[d] < 0) fail(fmt::format("{} has a negative stride: {}", name, t.describe()));
  }
}

void TensorChecks::aligned(const TensorView& t, const char* name, unsigned bytes) const {
  if (reinterpret_cast<std::uintptr_t>(t.data) % bytes != 0)
    fail(fmt::format("{} must be {}-byte aligned", name, bytes));
  const auto elem = static_cast<std::int64_t>(dtype_size(t.dtype));
  for (int d = 0; d + 1 < t.ndim; ++d) {
    if (t.shape[d] > 1 && (t.strides[d] * elem) % bytes != 0) {  // (a size-1 dim is never stepped)
      fail(fmt::format("{}'s stride {} ({} elements) is not a multiple of {} bytes", name, d,
                       t.strides[d], bytes));
    }
  }
}

void TensorChecks::same_dtype(const TensorView& t, const char* name, const TensorView& ref,
                              const char* ref_name) const {
  if (t.dtype != ref.dtype) {
    fail(fmt::format("{} must have the dtype of {} ({}), got {}", name, ref_name,
                     dtype_name(ref.dtype), dtype_name(t.dtype)));
  }
}

void TensorChecks::vector(const TensorView& t, const char* name, DType dtype,
                          std::int64_t n) const {
  if (t.dtype != dtype || t.ndim != 1 || t.size(0) != n || (n > 1 && t.stride(0) != 1)) {
    fail(fmt::format("{} must be contiguous {} [{}], got {}", name, dtype_name(dtype), n,
                     t.describe()));
  }
  data(t, name);
}

void TensorChecks::strided(const TensorView& t, const char* name, int ndim,
                           const char* layout) const {
  this->ndim(t, name, ndim, layout);
  data(t, name);
  contiguous_last(t, name);
  nonnegative_strides(t, name);
}

void TensorChecks::matrix(const TensorView& t, const char* name, const char* layout, DType dtype,
                          std::int64_t rows, std::int64_t cols) const {
  strided(t, name, 2, layout);
  if (t.dtype != dtype || t.size(0) != rows || t.size(1) != cols) {
    fail(fmt::format("{} must be {} [{}, {}], got {}", name, dtype_name(dtype), rows, cols,
                     t.describe()));
  }
}

std::int64_t row_alignment(std::initializer_list<std::pair<const TensorView*, int>> tensors) {
  std::uint64_t g = 16;
  for (const auto& [t, row_dims] : tensors) {
    g = std::gcd(g, reinterpret_cast<std::uintptr_t>(t->data));
    for (int d = 0; d < row_dims; ++d) {
      g = std::gcd(g, static_cast<std::uint64_t>(std::llabs(t->strides[d])) * dtype_size(t->dtype));
    }
  }
  return static_cast<std::int64_t>(g == 0 ? 16 : g);
}

}  // namespace kjit::ops

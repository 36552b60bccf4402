// The checks every op makes on its tensors before any device work. Each failure throws
// InvalidArgument "<op>: <argument> ..." naming the argument and what it got.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "kjit/tensor.hpp"

namespace kjit::ops {

class TensorChecks {
 public:
  explicit TensorChecks(const char* op) : op_(op) {}

  [[noreturn]] void fail(const std::string& message) const;

  // `layout` names the dims, e.g. "[B, S, H, D]".
  void ndim(const TensorView& t, const char* name, int ndim, const char* layout) const;
  // A tensor with no elements may have a null pointer (torch gives one for an empty tensor).
  void data(const TensorView& t, const char* name) const;
  void contiguous_last(const TensorView& t, const char* name) const;
  void nonnegative_strides(const TensorView& t, const char* name) const;
  // The data pointer and every stride but the last's are multiples of `bytes`.
  void aligned(const TensorView& t, const char* name, unsigned bytes) const;
  void same_dtype(const TensorView& t, const char* name, const TensorView& ref,
                  const char* ref_name) const;
  // A contiguous 1-D `dtype` [n] with data (unless empty).
  void vector(const TensorView& t, const char* name, DType dtype, std::int64_t n) const;
  // What every strided operand checks first: `ndim` dims, data, a contiguous last dim and no
  // negative stride.
  void strided(const TensorView& t, const char* name, int ndim, const char* layout) const;
  // strided with 2 dims, then `dtype` [rows, cols].
  void matrix(const TensorView& t, const char* name, const char* layout, DType dtype,
              std::int64_t rows, std::int64_t cols) const;

 private:
  const char* op_;
};

// The largest power of two (<= 16) dividing every row start, in bytes: each tensor's base
// address and its first `row_dims` strides (the dims above the contiguous one).
std::int64_t row_alignment(std::initializer_list<std::pair<const TensorView*, int>> tensors);

}  // namespace kjit::ops

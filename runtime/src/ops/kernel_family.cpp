#include "ops/kernel_family.hpp"

namespace kjit::ops {

const char* cxx_type(DType dtype) {
  switch (dtype) {
    case DType::Float16:
      return "__half";
    case DType::BFloat16:
      return "__nv_bfloat16";
    case DType::Float32:
      return "float";
    case DType::Int32:
      return "int";
    case DType::Int64:
      return "long long";
    case DType::UInt8:
      return "unsigned char";
  }
  throw Error("no device type for this dtype");
}

}  // namespace kjit::ops

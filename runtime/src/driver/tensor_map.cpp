#include "driver/tensor_map.hpp"

#include <cstring>

#include <fmt/format.h>

#include "driver/cuda_driver.hpp"
#include "kjit/error.hpp"

namespace kjit::driver {

namespace {

KjitTensorMap encode(CUtensorMapDataType type, std::int64_t element_bytes,
                     CUtensorMapSwizzle swizzle, const void* base,
                     const std::array<std::uint64_t, 4>& dims,
                     const std::array<std::int64_t, 3>& strides,
                     const std::array<std::uint32_t, 4>& box) {
  if (reinterpret_cast<std::uintptr_t>(base) % 16 != 0)
    throw InvalidArgument("tensor map: the base address must be 16-byte aligned");
  cuuint64_t byte_strides[3];
  for (int i = 0; i < 3; ++i) {
    // The stride of a dim of size 1 is never used; the driver still checks it.
    const std::int64_t bytes = dims[i + 1] == 1 ? 16 : strides[i] * element_bytes;
    if (bytes <= 0 || bytes % 16 != 0 || bytes >= (std::int64_t{1} << 40)) {
      throw InvalidArgument(
          fmt::format("tensor map: stride {} ({} elements) must be a positive multiple of 16 bytes",
                      i + 1, strides[i]));
    }
    byte_strides[i] = static_cast<cuuint64_t>(bytes);
  }
  const cuuint64_t global_dims[4] = {dims[0], dims[1], dims[2], dims[3]};
  const cuuint32_t box_dims[4] = {box[0], box[1], box[2], box[3]};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  // A pure encoding (no context needed): a few host instructions on the launch path.
  CUtensorMap map;
  check(api().cuTensorMapEncodeTiled(
            &map, type, 4, const_cast<void*>(base), global_dims, byte_strides, box_dims,
            element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
            CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE),
        "cuTensorMapEncodeTiled");
  static_assert(sizeof(KjitTensorMap) == sizeof(CUtensorMap) &&
                    alignof(KjitTensorMap) == alignof(CUtensorMap),
                "KjitTensorMap carries a CUtensorMap");
  KjitTensorMap out;
  std::memcpy(&out, &map, sizeof(out));
  return out;
}

}  // namespace

KjitTensorMap tiled_map_16bit(const void* base, const std::array<std::uint64_t, 4>& dims,
                              const std::array<std::int64_t, 3>& strides,
                              const std::array<std::uint32_t, 4>& box) {
  return encode(CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, CU_TENSOR_MAP_SWIZZLE_128B, base, dims, strides,
                box);
}

KjitTensorMap tiled_map_bytes(const void* base, const std::array<std::uint64_t, 4>& dims,
                              const std::array<std::int64_t, 3>& strides,
                              const std::array<std::uint32_t, 4>& box) {
  return encode(CU_TENSOR_MAP_DATA_TYPE_UINT8, 1, CU_TENSOR_MAP_SWIZZLE_NONE, base, dims, strides,
                box);
}

}  // namespace kjit::driver

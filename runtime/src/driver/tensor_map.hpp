// TMA descriptors (cuTensorMapEncodeTiled) for the tensor copies of templates/common/tma.cuh.
#pragma once

#include <array>
#include <cstdint>

#include "common/tensor_map.h"

namespace kjit::driver {

// A rank-4 tensor of 16-bit elements, dims innermost first (the innermost contiguous), strides
// of the outer three in elements; copied in `box` tiles into 128-byte-swizzled shared memory
// (box[0] * 2 bytes must be 128 at most), zero-filled past the bounds. A dim of size 1 may have
// any stride. Throws InvalidArgument for a layout the copy engine cannot read (strides not
// multiples of 16 bytes, or base not 16-byte aligned) and DriverError if the driver refuses.
// Returned as the kernels' parameter field.
KjitTensorMap tiled_map_16bit(const void* base, const std::array<std::uint64_t, 4>& dims,
                              const std::array<std::int64_t, 3>& strides,
                              const std::array<std::uint32_t, 4>& box);

// The same for bytes (FP4 codes, two a byte), copied unswizzled (box[0] a multiple of 16).
KjitTensorMap tiled_map_bytes(const void* base, const std::array<std::uint64_t, 4>& dims,
                              const std::array<std::int64_t, 3>& strides,
                              const std::array<std::uint32_t, 4>& box);

}  // namespace kjit::driver

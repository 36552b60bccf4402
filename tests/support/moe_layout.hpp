// kjit::moe::align's outputs over `pairs` routed pairs, owned on the device, and the call that
// fills them: the dispatch layout the MoE tests build their permutation and GEMM inputs on.
#pragma once

#include <cstdint>

#include "kjit/device.hpp"
#include "kjit/moe.hpp"

namespace kjit::test {

struct DeviceAlignment {
  // sorted_rows: sorted's length, align_capacity (0) or more in whole blocks (a buffer sized for
  // more tokens, as a CUDA graph keeps it). The buffers below are sized from the member `rows`.
  DeviceAlignment(std::int64_t pairs, int experts, int block, std::int64_t sorted_rows = 0)
      : rows(sorted_rows ? sorted_rows : moe::align_capacity(pairs, experts, block)),
        experts(experts),
        block(block),
        sorted(rows * 4),
        block_expert(rows / block * 4),
        counts(experts * 4),
        offsets((experts + 1) * 4),
        invalid(4) {}

  TensorView sorted_view() const { return TensorView(sorted.data(), DType::Int32, {rows}); }
  TensorView blocks_view() const {
    return TensorView(block_expert.data(), DType::Int32, {rows / block});
  }
  moe::Alignment views() const {
    return {sorted_view(), blocks_view(), TensorView(counts.data(), DType::Int32, {experts}),
            TensorView(offsets.data(), DType::Int32, {experts + 1}),
            TensorView(invalid.data(), DType::Int32, {1})};
  }
  // The layout of ids [T, k] (int32 on the device).
  void align(const TensorView& ids, StreamHandle stream) const {
    moe::align(ids, experts, block, views(), stream);
  }

  std::int64_t rows;  // the layout's capacity
  int experts, block;
  DeviceBuffer sorted, block_expert, counts, offsets, invalid;
};

}  // namespace kjit::test

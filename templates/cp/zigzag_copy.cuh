// Moves tokens between the zigzag layouts of templates/cp/zigzag_copy_params.h: the K/V slice a
// chunk needs out of the gathered buffer, gradients back to zigzag order, a rank's rows split by
// chunk kind and merged back. Pure data movement, exact in every dtype. kRowsPerBlock groups of
// kThreadsPerRow threads, one destination row each; each thread moves kAccessBytes per access.
#pragma once

#include "common/numeric.cuh"
#include "cp/zigzag_layout.cuh"

namespace kjit::cp {

template <int kAccessBytes, int kThreadsPerRow, int kRowsPerBlock>
__global__ void __launch_bounds__(kThreadsPerRow* kRowsPerBlock)
    zigzag_copy(const KjitZigzagCopyParams p) {
  using Access = typename AccessType<kAccessBytes>::type;
  if (p.plan && blockIdx.x == 0 && blockIdx.y == 0) {
    for (int b = threadIdx.x; b <= p.batch; b += blockDim.x)
      write_plan_entries(p, b);
  }
  const long long row =
      static_cast<long long>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kThreadsPerRow;
  if (row >= p.rows) return;
  long long to_offset = 0;
  const Token t = destination_token(p, row, &to_offset);
  const long long from_offset = source_offset(p, t);
  const char* src = from_offset < 0 ? nullptr : p.src[blockIdx.y] + from_offset;
  char* dst = p.dst[blockIdx.y] + to_offset;
  const int units = p.heads * p.units_per_head;
  for (int e = threadIdx.x % kThreadsPerRow; e < units; e += kThreadsPerRow) {
    const int head = e / p.units_per_head, unit = e - head * p.units_per_head;
    Access value{};
    if (src) {
      value = *reinterpret_cast<const Access*>(src + head * p.from.head_stride +
                                               static_cast<long long>(unit) * kAccessBytes);
    }
    *reinterpret_cast<Access*>(dst + head * p.to.head_stride +
                               static_cast<long long>(unit) * kAccessBytes) = value;
  }
}

}  // namespace kjit::cp

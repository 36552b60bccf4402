// Merging partial attention results (split-KV, context-parallel and helix decode): N parts
// O_i [T, H, D] with their natural-log LSE_i [T, H] become one O [T, H, D] and LSE [T, H],
// exactly (a softmax-weighted average, weights exp(LSE_i - max)). Rows that are -inf in every
// part give O = 0 and LSE = -inf.
#pragma once

#include "kjit/device.hpp"
#include "kjit/tensor.hpp"

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit::attention {

// parts: [N, T, H, D] fp16/bf16/fp32, N 1..64, D contiguous, any strides for N, T, H; D in
// 64..1024, a multiple of 8. parts_lse: [N, T, H] fp32. out: [T, H, D] of the parts' dtype.
// out_lse: [T, H] fp32, or a view with null data to skip it. The config comes from the tuning
// database (`kjit tune --preset merge_states`) or a default valid for every shape. Inputs are
// validated on the host; a bad one throws InvalidArgument naming it.
void merge_states(const TensorView& parts, const TensorView& parts_lse, const TensorView& out,
                  const TensorView& out_lse, StreamHandle stream);

}  // namespace kjit::attention
#pragma GCC visibility pop

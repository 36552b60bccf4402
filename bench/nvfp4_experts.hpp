// Experts in NVFP4 for the MoE benchmarks: a bf16 buffer of E experts' [n, k] weights quantized
// by kjit::moe::quantize_fp4 into the caller's codes [E n, k / 2], scales [E n, k / 16] and one
// tensor scale; returned as the GEMM's views of them.
#pragma once

#include <cstdint>

#include "kjit/jit.hpp"
#include "kjit/moe.hpp"

namespace kjit::bench {

inline moe::Fp4Weights quantize_nvfp4(const DeviceBuffer& w, std::int64_t experts, std::int64_t n,
                                      std::int64_t k, void* codes, void* scales,
                                      float* tensor_scale, StreamHandle stream) {
  const TensorView scale(tensor_scale, DType::Float32, {1});
  moe::quantize_fp4(TensorView(w.data(), DType::BFloat16, {experts * n, k}), moe::Fp4Format::kNvFp4,
                    TensorView(codes, DType::UInt8, {experts * n, k / 2}),
                    TensorView(scales, DType::UInt8, {experts * n, k / 16}), scale, stream);
  return {moe::Fp4Format::kNvFp4, TensorView(codes, DType::UInt8, {experts, n, k / 2}),
          TensorView(scales, DType::UInt8, {experts, n, k / 16}), scale};
}

}  // namespace kjit::bench

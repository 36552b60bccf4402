// The FP4 MoE layer's golden-output regression case: a small layer (T 8, H 128, 8 experts, top 2,
// I 64, GLM-4.7-Flash's router shape: sigmoid, a correction bias, renormalised, x1.8) with NVFP4
// experts, every input drawn from splitmix64 streams (the same bits on every machine), and its
// output as the fp64 composition over the dequantised weights. tests/data/moe_fp4_golden.inc
// holds that output, checked in: tests/unit/moe_golden_test.cpp checks that the reference still
// gives it (and rewrites it under KJIT_WRITE_GOLDEN=1), tests/gpu/moe_golden_test.cpp that the
// layer does, within 1e-2 + 1e-2 |golden| (bf16 rounding of the SwiGLU rows and the output).
#pragma once

#include <cstdint>
#include <vector>

#include "tests/reference/moe_reference.hpp"

namespace kjit::reference {

struct GoldenFp4Layer {
  static constexpr int kT = 8, kH = 128, kE = 8, kTopK = 2, kI = 64;
  std::vector<std::uint16_t> x;     // bf16 [T, H]
  std::vector<float> logits, bias;  // [T, E], [E]
  std::vector<Fp4Tensor> gate_up,
      down;                            // per expert: NVFP4 [2 I, H] (gate, up interleaved), [H, I]
  std::vector<double> output() const;  // [T, H]
};

GoldenFp4Layer golden_fp4_layer();

}  // namespace kjit::reference

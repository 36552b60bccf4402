// A naive attention forward on the GPU in fp32, for shapes too large for the CPU reference:
// one block per (query row, head), the row's scores computed twice (max, then exp and P V).
// Optionally rounds P to bf16 before P V, as the flash kernels do (FlashAttention's "lowprec"
// reference). Inputs bf16 [S, H, D] (one sequence), outputs fp32 O [S, Hq, D] and LSE [Hq, S].
#pragma once

#include <vector>

#include "kjit/device.hpp"

namespace kjit::test::reference {

struct NaiveAttentionGpu {
  std::vector<float> out;  // [Sq, Hq, D]
  std::vector<float> lse;  // [Hq, Sq], natural log; -inf for a row that sees no key
};

NaiveAttentionGpu naive_attention_gpu(const DeviceBuffer& q, const DeviceBuffer& k,
                                      const DeviceBuffer& v, int seqlen_q, int seqlen_k,
                                      int heads_q, int heads_k, int head_dim, float scale,
                                      bool causal, bool round_p_to_bf16);

}  // namespace kjit::test::reference

// A naive attention forward and backward on the GPU in fp32, for shapes too large for the CPU
// reference. Forward: one block per (query row, head), the row's scores computed twice (max,
// then exp and P V); optionally P rounded to bf16 before P V, as the flash kernels do
// (FlashAttention's "lowprec" reference). Backward: dQ one block per (query row, head), dK and
// dV one block per (key row, key/value head) over its group's query heads, from the forward's
// fp32 O and LSE; optionally P and dP rounded to bf16 (the CPU reference's low-precision
// variant). Inputs bf16 [S, H, D] (one sequence); outputs fp32.
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

struct NaiveAttentionGradientsGpu {
  std::vector<float> dq;      // [Sq, Hq, D]
  std::vector<float> dk, dv;  // [Sk, Hk, D]
};

// `forward` is naive_attention_gpu's result for the same inputs (unrounded).
NaiveAttentionGradientsGpu naive_attention_backward_gpu(
    const DeviceBuffer& q, const DeviceBuffer& k, const DeviceBuffer& v, const DeviceBuffer& dout,
    const NaiveAttentionGpu& forward, int seqlen_q, int seqlen_k, int heads_q, int heads_k,
    int head_dim, float scale, bool causal, bool round_to_bf16);

}  // namespace kjit::test::reference

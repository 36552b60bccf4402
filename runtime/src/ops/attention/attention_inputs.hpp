// The input rules the attention forward and backward share: tensor layouts, packed sequences
// (cu_seqlens checked on the caller's host copy), lengths the kernels can index, the scale.
#pragma once

#include <cstdint>
#include <vector>

#include "common/tensor_map.h"
#include "kjit/attention.hpp"
#include "ops/tensor_checks.hpp"

namespace kjit::ops {

extern const TensorChecks kAttentionCheck;

// Indices inside a sequence are 32-bit in the kernels; offsets are 64-bit.
void check_attention_length(std::int64_t n, const char* what);

// q, k, v and out (or any tensors named so): `dims` 4 (batched [B, S, H, D]) or 3 (packed
// [T, H, D]), fp16/bf16, one dtype, head dim last and contiguous, 16-byte aligned rows; k and v
// of one head count, out of q's shape.
// `checks` names the op in messages (a grouped call's names the group).
void check_attention_tensors(const TensorView& q, const TensorView& k, const TensorView& v,
                             const TensorView& out, int dims,
                             const TensorChecks& checks = kAttentionCheck);

// A gradient (or dout) must look like the tensor it belongs to: `dims` dims of ref's shape and
// dtype, head dim contiguous, 16-byte aligned rows.
void check_like(const TensorView& t, const char* name, const TensorView& ref, const char* ref_name,
                int dims, const TensorChecks& checks = kAttentionCheck);

// The longest query and key sequences of a packed call, after checking cu_seqlens (int32
// [B + 1], contiguous, host copies non-decreasing from 0 to the token counts).
struct LongestSequences {
  std::int64_t q = 0, k = 0;
};
LongestSequences check_varlen(const attention::Varlen& seqlens, std::int64_t tokens_q,
                              std::int64_t tokens_k, const TensorChecks& checks = kAttentionCheck);

// The strides of an lse after checking it is fp32 [outer, heads, seq] (batched) or [heads, seq]
// (packed), contiguous in its last dim. `whose` qualifies the expected tensor in the message
// ("" or "the forward's ").
struct LseStrides {
  std::int64_t batch = 0, head = 0;
};
LseStrides check_lse(const TensorView& lse, std::int64_t outer, std::int64_t heads,
                     std::int64_t seq, bool batched, const char* whose,
                     const TensorChecks& checks = kAttentionCheck);

// The copy engine's view of a [B, S, H, D] (packed: [T, H, D], outer 1) operand for the sm_90a
// kernels: 64-column boxes of box_rows rows of one head, 128-byte swizzled, `rows` = S or T.
KjitTensorMap head_tile_map(const void* data, std::int64_t head_dim, std::int64_t rows,
                            std::int64_t heads, std::int64_t outer, std::int64_t row_stride,
                            std::int64_t head_stride, std::int64_t batch_stride,
                            std::int64_t box_rows);

// The rows of FlashAttention's benchmark (B x S = 16k tokens, H x D = 2048, hd 64/128/256, S
// 2k/8k/16k, causal or not) plus GQA 32/8 hd 128 S 8k causal: the fa-bench presets.
struct BenchRow {
  std::int64_t batch, seqlen, heads_q, heads_k, head_dim;
  bool causal;
};
std::vector<BenchRow> fa_bench_rows();

// The softmax scale a call asks for (0: 1 / sqrt(head dim)); refuses negative or non-finite.
float softmax_scale(float requested, std::int64_t head_dim);

}  // namespace kjit::ops

// Zigzag-llama3 context parallelism: packed varlen sequences sharded over W ranks so that causal
// attention costs every rank the same. Each sequence (global cu_seqlens, every length divisible
// by 2W) is cut into 2W equal chunks; rank r holds chunks r and 2W-1-r of every sequence, in
// that order: its local buffer, T/W tokens, local cu_seqlens = global / W.
//
// Attention over the W ranks of a communicator: K and V are all-gathered in groups of
// heads_k_stride heads (the next group's gather overlapped with this group's compute), the K/V
// prefix the rank's chunks need is extracted from the rank-major gathered buffer, and the two
// local chunks run as a 2-group grouped attention (kjit/attention.hpp: chunk r over its prefix,
// chunk 2W-1-r over its longer one, the shared keys read once). The backward sums dK/dV of both
// chunks in gathered order, scatters them to zigzag order and reduce-scatters them.
#pragma once

#include <cstdint>
#include <vector>

#include "kjit/comm.hpp"
#include "kjit/device.hpp"
#include "kjit/tensor.hpp"

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit::cp {

// The global packed sequences: int32 [B + 1] on the device, and its host copy (validated there:
// from 0, non-decreasing, every length divisible by 2W).
struct ZigzagSequences {
  TensorView cu_seqlens;
  const std::int32_t* host_cu_seqlens = nullptr;
};

// A rank's local cu_seqlens (the global ones / W) from the host copy; throws InvalidArgument
// naming the sequence whose length is not divisible by 2W.
std::vector<std::int32_t> zigzag_local_cu_seqlens(const std::int32_t* host_cu_seqlens, int batch,
                                                  int world);

// ---- The component kernels (exact copies, fp16/bf16/fp32, any head count and head dim) ----

// Chunks [begin, end) of every sequence's 2W, in global order.
struct ChunkRange {
  int begin = 0, end = 0;
};

// gathered [T, H, D]: every rank's local buffer in rank order (an all-gather's output).
// out [sum_b (end - begin) L_b / 2W, H, D]: chunks [begin, end) of each sequence in global order,
// sequences packed (early chunks: [0, W); late: [W, 2W); the keys chunk c attends under causal
// masking: [0, c + 1)).
void extract_zigzag_kv_slice(const TensorView& gathered, const ZigzagSequences& seqs, int world,
                             ChunkRange chunks, const TensorView& out, StreamHandle stream);

// The reverse: grad holds chunks [begin, end) of each sequence in global order (as extract's
// out); out is rank `rank`'s local buffer [T / W, H, D], or with rank = kEveryRank every rank's in
// rank order [T, H, D]. Tokens of chunks outside the range get zeros. The seed's case: chunks
// [0, 2W), the rank's own buffer.
inline constexpr int kEveryRank = -1;
void scatter_grad_to_zigzag(const TensorView& grad, const ZigzagSequences& seqs, int world,
                            ChunkRange chunks, int rank, const TensorView& out,
                            StreamHandle stream);

// ---- Attention over the ranks of a communicator ----

struct ZigzagOptions {
  float softmax_scale = 0.f;  // 0: 1 / sqrt(head dim)
  // Causal: what zigzag sharding balances. Not causal: both chunks attend whole sequences.
  bool causal = true;
  // K/V heads gathered per step (a divisor of Hk; 0: all of them). Fewer: less memory for the
  // gathered buffers (2 x 2 x T x stride x D elements), more collectives.
  int heads_k_stride = 0;
};

// On every rank of `comm` (W = comm.size()), with this rank's local tokens Tl = T / W: q [Tl, Hq,
// D], k and v [Tl, Hk, D] (fp16/bf16, head dim 64/96/128/192/256, GQA), out [Tl, Hq, D], lse
// [Hq, Tl] fp32 (null data: skipped). Results equal single-GPU varlen attention over the full
// sequences, in the rank's local order.
void zigzag_forward(comm::Communicator& comm, const TensorView& q, const TensorView& k,
                    const TensorView& v, const TensorView& out, const TensorView& lse,
                    const ZigzagSequences& seqs, const ZigzagOptions& options, StreamHandle stream);

// The backward of zigzag_forward for the same inputs and options: dq, dk, dv like q, k, v,
// holding the gradients of this rank's tokens. dK/dV are reduce-scattered in their dtype
// (fp16/bf16; NCCL adds in fp32 and rounds after each step, as torch's reduce_scatter does).
void zigzag_backward(comm::Communicator& comm, const TensorView& q, const TensorView& k,
                     const TensorView& v, const TensorView& out, const TensorView& dout,
                     const TensorView& lse, const TensorView& dq, const TensorView& dk,
                     const TensorView& dv, const ZigzagSequences& seqs,
                     const ZigzagOptions& options, StreamHandle stream);

}  // namespace kjit::cp
#pragma GCC visibility pop

// Attention forward (FlashAttention-2 semantics): softmax(Q K^T * scale) V per head, with GQA/MQA
// (Hq a multiple of Hk; query head h reads key/value head h / (Hq / Hk)), causal masking aligned
// to the bottom-right when Sq != Sk, fp16/bf16 inputs, fp32 accumulation, natural-log LSE. A
// query that sees no key gets O = 0 and LSE = -inf. Head dims 64, 96, 128, 192, 256.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kjit/device.hpp"
#include "kjit/tensor.hpp"

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit::attention {

struct ForwardOptions {
  float softmax_scale = 0.f;  // 0: 1 / sqrt(head dim)
  bool causal = false;
};

// q [B, Sq, Hq, D], k and v [B, Sk, Hk, D], out [B, Sq, Hq, D] (any strides, head dim
// contiguous, rows 16-byte aligned); lse [B, Hq, Sq] fp32 contiguous in Sq, or a view with null
// data to skip it. B and Hq at most 65535 each.
void forward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
             const TensorView& lse, const ForwardOptions& options, StreamHandle stream);

// Packed sequences: q [Tq, Hq, D], k and v [Tk, Hk, D], out [Tq, Hq, D], lse [Hq, Tq].
// cu_seqlens_* are int32 [B + 1] on the device; the caller also passes host copies, which are
// validated (non-decreasing, starting at 0, ending at the token count) and give the max lengths,
// so no device synchronisation happens.
struct Varlen {
  TensorView cu_seqlens_q, cu_seqlens_k;
  const std::int32_t* host_cu_seqlens_q = nullptr;
  const std::int32_t* host_cu_seqlens_k = nullptr;
};
void forward_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                    const TensorView& out, const TensorView& lse, const Varlen& seqlens,
                    const ForwardOptions& options, StreamHandle stream);

// The backward of forward() / forward_varlen(): dq, dk, dv (in the inputs' dtype, shaped like q,
// k, v) from q, k, v, out, dout (like out) and the forward's lse, for exactly the forward's
// inputs and options. GQA: dk and dv of a key/value head sum over its query heads. Rows that see
// no key contribute nothing; empty sequences are allowed.
struct BackwardOptions {
  float softmax_scale = 0.f;  // 0: 1 / sqrt(head dim); must match the forward's
  bool causal = false;
  // Bitwise identical results run to run: dq is computed by a second pass over the keys instead
  // of fp32 atomics (the default), which recomputes S and dP (docs/perf.md has the cost).
  bool deterministic = false;
  // backward_workspace_bytes() of device memory, aligned to 256 bytes; null: kjit allocates it,
  // ordered on the stream.
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
};

// The workspace a backward over `q` ([B, Sq, Hq, D] or packed [Tq, Hq, D]) needs: fp32
// rowsum(dout * out) per query row and head, plus an fp32 dq accumulator unless deterministic.
std::size_t backward_workspace_bytes(const TensorView& q, const BackwardOptions& options);

// lse [B, Hq, Sq] fp32 (the forward's). Any strides with a contiguous head dim, 16-byte rows.
void backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
              const TensorView& dout, const TensorView& lse, const TensorView& dq,
              const TensorView& dk, const TensorView& dv, const BackwardOptions& options,
              StreamHandle stream);

// Packed sequences, as forward_varlen: lse [Hq, Tq].
void backward_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                     const TensorView& out, const TensorView& dout, const TensorView& lse,
                     const TensorView& dq, const TensorView& dk, const TensorView& dv,
                     const Varlen& seqlens, const BackwardOptions& options, StreamHandle stream);

// Grouped attention: G query groups (1 to kMaxGroups) over one shared packed K/V in one launch,
// so that a K/V tile several groups need is read from HBM once. k and v are [Tk, Hk, D] with
// cu_seqlens_k over B sequences (device, and a host copy). Group g has its own packed queries
// over the same B sequences (its own cu_seqlens_q) and, in sequence b, sees that sequence's keys
// [begin, end): its window (windows of different groups may overlap or coincide; an empty window
// or an empty query segment is allowed). Causal masking is bottom-right aligned to the window,
// so each group's rows are exactly forward_varlen's over its windows (zigzag context parallelism:
// prefixes, begin = 0).
inline constexpr int kMaxGroups = 16;
struct AttentionGroup {
  TensorView q;    // [Tq, Hq, D]
  TensorView out;  // [Tq, Hq, D]: the forward writes it, the backward reads it
  TensorView
      lse;  // [Hq, Tq] fp32: the forward writes it (null data: skipped), the backward reads it
  TensorView cu_seqlens_q;  // int32 [B + 1] on the device
  const std::int32_t* host_cu_seqlens_q = nullptr;
  TensorView windows;  // int32 [B, 2] on the device: (begin, end) per sequence, within it
  const std::int32_t* host_windows = nullptr;
  TensorView dout, dq;  // the backward's: like q (dq written, fp16/bf16 like q)
};
struct SharedKeys {
  TensorView k, v;          // [Tk, Hk, D]
  TensorView cu_seqlens_k;  // int32 [B + 1] on the device
  const std::int32_t* host_cu_seqlens_k = nullptr;
};
// Every host copy (cu_seqlens, windows) is validated before anything runs: errors name the group
// and the sequence.
void forward_grouped(const AttentionGroup* groups, int group_count, const SharedKeys& keys,
                     const ForwardOptions& options, StreamHandle stream);

// dq of every group, and one dk, dv [Tk, Hk, D] for the shared keys, where overlapping windows
// sum their contributions (keys no window sees get 0). dQ is summed with fp32 atomics:
// options.deterministic is refused.
std::size_t backward_grouped_workspace_bytes(const AttentionGroup* groups, int group_count);
void backward_grouped(const AttentionGroup* groups, int group_count, const SharedKeys& keys,
                      const TensorView& dk, const TensorView& dv, const BackwardOptions& options,
                      StreamHandle stream);

}  // namespace kjit::attention
#pragma GCC visibility pop

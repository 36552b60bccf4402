/* The C ABI of kjit, over DLPack tensors, for Python/Rust/C callers. Every call returns a
   status; on failure kjit_last_error() (per thread) says why, naming the argument. */
#ifndef KJIT_C_API_H
#define KJIT_C_API_H

#include <dlpack/dlpack.h>
#include <stddef.h>
#include <stdint.h>

#pragma GCC visibility push(default) /* the API libkjit.so exports */
#ifdef __cplusplus
extern "C" {
#endif

typedef enum kjit_status {
  KJIT_SUCCESS = 0,
  KJIT_ERROR_INVALID_ARGUMENT = 1, /* bad dtype, shape, stride, alignment, pointer */
  KJIT_ERROR_NO_DRIVER = 2,        /* no CUDA driver or device */
  KJIT_ERROR_DRIVER = 3,           /* a CUDA driver call failed */
  KJIT_ERROR_COMPILE = 4,          /* NVRTC rejected a kernel */
  KJIT_ERROR_MISSING_KERNEL = 5,   /* KJIT_NO_JIT=1 and the kernel is not cached */
  KJIT_ERROR_INTERNAL = 6,
  KJIT_ERROR_COMM = 7 /* a collective failed or timed out, or its communicator was aborted */
} kjit_status;

/* The message of this thread's last failed call ("" if none). Valid until the next call. */
const char* kjit_last_error(void);

/* Device memory for callers without a CUDA runtime of their own (the examples, plain C). A
   buffer lives on the current device (device 0 unless the caller made another current). */
typedef struct kjit_buffer kjit_buffer;
kjit_status kjit_buffer_create(size_t bytes, kjit_buffer** buffer);
void kjit_buffer_destroy(kjit_buffer* buffer); /* NULL is ignored */
void* kjit_buffer_data(const kjit_buffer* buffer);
/* Copies that are complete when they return; `bytes` may not exceed the buffer's size. */
kjit_status kjit_buffer_upload(kjit_buffer* buffer, const void* host, size_t bytes);
kjit_status kjit_buffer_download(const kjit_buffer* buffer, void* host, size_t bytes);
/* Waits for the work queued on `stream` (NULL: the default stream). */
kjit_status kjit_stream_synchronize(void* stream);

/* See kjit/merge_states.hpp. out_lse may be NULL. `stream` is a CUstream / cudaStream_t. */
kjit_status kjit_merge_states(const DLTensor* parts, const DLTensor* parts_lse, const DLTensor* out,
                              const DLTensor* out_lse, void* stream);

/* See kjit/attention.hpp. lse may be NULL; softmax_scale 0 means 1/sqrt(head dim). */
kjit_status kjit_attention_forward(const DLTensor* q, const DLTensor* k, const DLTensor* v,
                                   const DLTensor* out, const DLTensor* lse, float softmax_scale,
                                   int causal, void* stream);

/* Packed sequences: cu_seqlens_* are int32 [B + 1] on the device, host_cu_seqlens_* host copies
   of them (validated on the host; no device synchronisation). */
kjit_status kjit_attention_forward_varlen(const DLTensor* q, const DLTensor* k, const DLTensor* v,
                                          const DLTensor* out, const DLTensor* lse,
                                          const DLTensor* cu_seqlens_q,
                                          const DLTensor* cu_seqlens_k,
                                          const int32_t* host_cu_seqlens_q,
                                          const int32_t* host_cu_seqlens_k, float softmax_scale,
                                          int causal, void* stream);

/* See kjit/attention.hpp (backward). dq, dk, dv are written; lse is the forward's (required).
   workspace may be NULL (kjit allocates it on the stream), else 256-byte aligned with
   workspace_bytes >= kjit_attention_backward_workspace_bytes(q, deterministic). */
kjit_status kjit_attention_backward(const DLTensor* q, const DLTensor* k, const DLTensor* v,
                                    const DLTensor* out, const DLTensor* dout, const DLTensor* lse,
                                    const DLTensor* dq, const DLTensor* dk, const DLTensor* dv,
                                    float softmax_scale, int causal, int deterministic,
                                    void* workspace, size_t workspace_bytes, void* stream);
kjit_status kjit_attention_backward_varlen(
    const DLTensor* q, const DLTensor* k, const DLTensor* v, const DLTensor* out,
    const DLTensor* dout, const DLTensor* lse, const DLTensor* dq, const DLTensor* dk,
    const DLTensor* dv, const DLTensor* cu_seqlens_q, const DLTensor* cu_seqlens_k,
    const int32_t* host_cu_seqlens_q, const int32_t* host_cu_seqlens_k, float softmax_scale,
    int causal, int deterministic, void* workspace, size_t workspace_bytes, void* stream);
/* Grouped attention (see kjit/attention.hpp, forward_grouped): one entry per query group.
   lse may be NULL in the forward; dout and dq are the backward's (NULL in the forward). */
typedef struct kjit_attention_group {
  const DLTensor* q;
  const DLTensor* out;
  const DLTensor* lse;
  const DLTensor* cu_seqlens_q;     /* int32 [B + 1], device */
  const int32_t* host_cu_seqlens_q; /* its host copy */
  const DLTensor* windows;          /* int32 [B, 2], device: (begin, end) per sequence */
  const int32_t* host_windows;      /* its host copy */
  const DLTensor* dout;
  const DLTensor* dq;
} kjit_attention_group;
kjit_status kjit_attention_forward_grouped(const kjit_attention_group* groups, int group_count,
                                           const DLTensor* k, const DLTensor* v,
                                           const DLTensor* cu_seqlens_k,
                                           const int32_t* host_cu_seqlens_k, float softmax_scale,
                                           int causal, void* stream);
/* dk, dv [Tk, Hk, D] sum over the groups; workspace as kjit_attention_backward's, sized by
   kjit_attention_backward_grouped_workspace_bytes. */
kjit_status kjit_attention_backward_grouped(const kjit_attention_group* groups, int group_count,
                                            const DLTensor* k, const DLTensor* v,
                                            const DLTensor* cu_seqlens_k,
                                            const int32_t* host_cu_seqlens_k, const DLTensor* dk,
                                            const DLTensor* dv, float softmax_scale, int causal,
                                            void* workspace, size_t workspace_bytes, void* stream);
kjit_status kjit_attention_backward_grouped_workspace_bytes(const kjit_attention_group* groups,
                                                            int group_count, size_t* bytes);
/* Bytes of workspace a backward over q needs (0 with an error status on bad input). */
kjit_status kjit_attention_backward_workspace_bytes(const DLTensor* q, int deterministic,
                                                    size_t* bytes);

/* MLA decode (see kjit/mla.hpp): q [B, s_q, H, 576], cache [num_blocks, block_size, 576],
   block_table int32 [B, max_blocks] and lengths int32 [B] on the device with host copies of both
   (validated on the host), out [B, s_q, H, 512], lse [B, s_q, H] fp32 or NULL; softmax_scale 0
   means 1/sqrt(576). */
kjit_status kjit_mla_decode(const DLTensor* q, const DLTensor* cache, const DLTensor* block_table,
                            const int32_t* host_block_table, const DLTensor* lengths,
                            const int32_t* host_lengths, const DLTensor* out, const DLTensor* lse,
                            float softmax_scale, void* stream);

/* Communicators (see kjit/comm.hpp): NCCL over a unique id that the caller shares between its
   ranks (torch.distributed, a file). Rank 0 makes the id; every rank then creates its
   communicator with the same bytes (collective: it returns once all `size` ranks joined, or
   fails after the timeout). device -1: the current device; timeout_ms 0: KJIT_COMM_TIMEOUT_S. */
typedef struct kjit_comm kjit_comm;
#define KJIT_COMM_UNIQUE_ID_BYTES 128
kjit_status kjit_comm_unique_id(char id[KJIT_COMM_UNIQUE_ID_BYTES]);
kjit_status kjit_comm_create(const char id[KJIT_COMM_UNIQUE_ID_BYTES], int rank, int size,
                             int device, int64_t timeout_ms, kjit_comm** comm);
void kjit_comm_destroy(kjit_comm* comm); /* NULL is ignored */

/* Rank `rank`'s heads [*begin, *end) of `heads` over `world` helix ranks (kjit::mla::helix_heads).
 */
kjit_status kjit_mla_helix_heads(int heads, int world, int rank, int* begin, int* end);
/* One helix MLA decode step on this rank of `comm` (kjit::mla::helix_decode): q [B, 1, H, 576]
   the same on every rank; the cache, block table and lengths this rank's shard (as
   kjit_mla_decode's); out [B, 1, H_r, 512] and lse [B, 1, H_r] fp32 (required) for this rank's
   heads. Collective. */
kjit_status kjit_mla_helix_decode(kjit_comm* comm, const DLTensor* q, const DLTensor* cache,
                                  const DLTensor* block_table, const int32_t* host_block_table,
                                  const DLTensor* lengths, const int32_t* host_lengths,
                                  const DLTensor* out, const DLTensor* lse, float softmax_scale,
                                  void* stream);

/* Zigzag context parallelism (see kjit/zigzag.hpp). cu_seqlens: the global sequences, int32
   [B + 1] on the device, with its host copy (every length a multiple of 2W). The component
   kernels: chunks [chunk_begin, chunk_end) of every sequence, gathered [T, H, D] the rank-major
   all-gather output, out (extract) or grad (scatter) those chunks in global order; the scatter
   writes rank `rank`'s local buffer [T / W, H, D], or every rank's [T, H, D] with rank -1. */
kjit_status kjit_zigzag_extract_kv_slice(const DLTensor* gathered, const DLTensor* cu_seqlens,
                                         const int32_t* host_cu_seqlens, int world, int chunk_begin,
                                         int chunk_end, const DLTensor* out, void* stream);
kjit_status kjit_zigzag_scatter_grad(const DLTensor* grad, const DLTensor* cu_seqlens,
                                     const int32_t* host_cu_seqlens, int world, int chunk_begin,
                                     int chunk_end, int rank, const DLTensor* out, void* stream);
/* Attention over the ranks of `comm` on this rank's local tokens (kjit::cp::zigzag_forward /
   zigzag_backward): q [T / W, Hq, D], k and v [T / W, Hk, D], out like q, lse [Hq, T / W] fp32
   (NULL: skipped in the forward; required in the backward). softmax_scale 0: 1/sqrt(D);
   heads_k_stride 0: every K/V head in one step. Collective. */
kjit_status kjit_zigzag_forward(kjit_comm* comm, const DLTensor* q, const DLTensor* k,
                                const DLTensor* v, const DLTensor* out, const DLTensor* lse,
                                const DLTensor* cu_seqlens, const int32_t* host_cu_seqlens,
                                float softmax_scale, int causal, int heads_k_stride, void* stream);
kjit_status kjit_zigzag_backward(kjit_comm* comm, const DLTensor* q, const DLTensor* k,
                                 const DLTensor* v, const DLTensor* out, const DLTensor* dout,
                                 const DLTensor* lse, const DLTensor* dq, const DLTensor* dk,
                                 const DLTensor* dv, const DLTensor* cu_seqlens,
                                 const int32_t* host_cu_seqlens, float softmax_scale, int causal,
                                 int heads_k_stride, void* stream);

/* MoE (see kjit/moe.hpp for each op's layouts). NULL for an optional tensor means none. The
   grouped GEMMs take K and N in multiples of 64 (the layer: H and I), permute a hidden size in
   multiples of 8; other sizes are refused with kjit's error. */
typedef struct kjit_moe_router_options {
  int sigmoid; /* 0: softmax over the experts */
  int top_k;
  int groups;      /* DeepSeek's grouped top-k (group scores: kjit/moe.hpp): 1 for none */
  int topk_groups; /* 1 for none */
  int renormalize;
  float scaling; /* 1 for none */
} kjit_moe_router_options;
kjit_status kjit_moe_router_topk(const DLTensor* logits, const DLTensor* bias, const DLTensor* ids,
                                 const DLTensor* weights, const kjit_moe_router_options* options,
                                 void* stream);
/* The rows of align's layout for `pairs` routed pairs: the least length of `sorted` (a longer one,
   in whole blocks, is padded to its end). */
int64_t kjit_moe_align_capacity(int64_t pairs, int experts, int block);
kjit_status kjit_moe_align(const DLTensor* ids, int experts, int block, const DLTensor* sorted,
                           const DLTensor* block_expert, const DLTensor* counts,
                           const DLTensor* offsets, const DLTensor* invalid, void* stream);
kjit_status kjit_moe_permute(const DLTensor* x, const DLTensor* sorted, int top_k,
                             const DLTensor* x_sorted, const DLTensor* positions, void* stream);
kjit_status kjit_moe_unpermute(const DLTensor* y_sorted, const DLTensor* positions, int top_k,
                               const DLTensor* weights, const DLTensor* shared, const DLTensor* out,
                               void* stream);
typedef enum kjit_moe_gemm_epilogue {
  KJIT_MOE_GEMM_PLAIN = 0,
  KJIT_MOE_GEMM_SWIGLU = 1,         /* w's rows interleave gate and up (see kjit_moe_layer) */
  KJIT_MOE_GEMM_ROUTING_WEIGHTS = 2 /* rows scaled by weights[sorted[row]] */
} kjit_moe_gemm_epilogue;
/* sorted and weights: the routing-weight epilogue's; optional (NULL) with the others, where they
   let the FP4 GEMM skip padding rows. */
kjit_status kjit_moe_grouped_gemm(const DLTensor* x_sorted, const DLTensor* block_expert, int block,
                                  const DLTensor* w, const DLTensor* y,
                                  kjit_moe_gemm_epilogue epilogue, const DLTensor* sorted,
                                  const DLTensor* weights, void* stream);
kjit_status kjit_moe_balance(const DLTensor* ids, const DLTensor* probs, const DLTensor* logits,
                             const DLTensor* cu_seqlens, int max_seqlen, const DLTensor* bias,
                             float aux_coeff, float z_coeff, float bias_rate,
                             const DLTensor* counts, const DLTensor* f, const DLTensor* p,
                             const DLTensor* losses, void* stream);

/* The masked layout (x [E, M, K], masked_m int32 [E] on the device); plain or SwiGLU. */
kjit_status kjit_moe_grouped_gemm_masked(const DLTensor* x, const DLTensor* masked_m,
                                         int expected_m, const DLTensor* w, const DLTensor* y,
                                         kjit_moe_gemm_epilogue epilogue, void* stream);
/* format: 0 NVFP4 (blocks of 16), 1 MXFP4 (blocks of 32). */
kjit_status kjit_moe_quantize_fp4(const DLTensor* w, int format, const DLTensor* codes,
                                  const DLTensor* scales, const DLTensor* tensor_scale,
                                  void* stream);
/* moe_expert_gemm_fp4: the grouped GEMM with FP4 weights (format as above): codes uint8
   [E, N, K / 2], scales uint8 [E, N, K / block], tensor_scale fp32 [E], [1] or 0-d (NVFP4;
   NULL for MXFP4); x_sorted and y bf16; block 64, 128 or 256 (N a multiple of 128). The rest as
   kjit_moe_grouped_gemm. */
kjit_status kjit_moe_expert_gemm_fp4(const DLTensor* x_sorted, const DLTensor* block_expert,
                                     int block, int format, const DLTensor* codes,
                                     const DLTensor* scales, const DLTensor* tensor_scale,
                                     const DLTensor* y, kjit_moe_gemm_epilogue epilogue,
                                     const DLTensor* sorted, const DLTensor* weights, void* stream);
/* The same over the masked layout, as kjit_moe_grouped_gemm_masked. */
kjit_status kjit_moe_expert_gemm_fp4_masked(const DLTensor* x, const DLTensor* masked_m,
                                            int expected_m, int format, const DLTensor* codes,
                                            const DLTensor* scales, const DLTensor* tensor_scale,
                                            const DLTensor* y, kjit_moe_gemm_epilogue epilogue,
                                            void* stream);

/* A MoE layer (kjit::moe::layer): router_topk over router_logits [T, E], align, permute, the
   gate/up GEMM with SwiGLU, the down GEMM with the routing weights, unpermute adding shared.
   x [T, H] bf16 or fp16; gate_up [E, 2 I, H] with gate and up rows interleaved (row 2c gate c,
   2c + 1 up c: from torch's w13 = cat([gate, up], 1) of [E, 2 I, H],
   w13.view(E, 2, I, H).transpose(1, 2).reshape(E, 2 * I, H)); down [E, H, I]; router_bias [E]
   fp32 or NULL; shared [T, H] (the shared expert's output) or NULL; out [T, H]; block 0 (chosen by
   the tokens), 64 or 128 (kjit_moe_layer_fp4: or 256). sm_90a. */
kjit_status kjit_moe_layer(const DLTensor* x, const DLTensor* router_logits,
                           const DLTensor* gate_up, const DLTensor* down,
                           const DLTensor* router_bias, const DLTensor* shared,
                           const kjit_moe_router_options* options, int block, const DLTensor* out,
                           void* stream);
/* The same with FP4 experts (format as kjit_moe_quantize_fp4; codes, scales and tensor_scale of
   each projection as kjit_moe_expert_gemm_fp4, tensor_scale NULL for MXFP4); x bf16. */
kjit_status kjit_moe_layer_fp4(const DLTensor* x, const DLTensor* router_logits, int format,
                               const DLTensor* gate_up_codes, const DLTensor* gate_up_scales,
                               const DLTensor* gate_up_tensor_scale, const DLTensor* down_codes,
                               const DLTensor* down_scales, const DLTensor* down_tensor_scale,
                               const DLTensor* router_bias, const DLTensor* shared,
                               const kjit_moe_router_options* options, int block,
                               const DLTensor* out, void* stream);

/* MoE expert offloading (kjit/expert_offload.hpp): a stack of MoE layers whose experts are in
   page-locked host memory (DLPack kDLCUDAHost; kDLCPU tensors are refused unless page-locked),
   with a cache of GPU slots a layer, loads on their own stream and prefetch. Outputs bit for bit
   kjit_moe_layer's with every expert resident. */
typedef struct kjit_moe_offload kjit_moe_offload;
typedef struct kjit_moe_offload_options {
  int policy;        /* 0: LRU, 1: LFU */
  int slots;         /* GPU slots a layer, top_k to the experts */
  int prefetch;      /* each token's likeliest experts prefetched for the next layer; 0: none */
  int predictor;     /* 0: frequency, 1: previous token, 2: cross-layer */
  int64_t history;   /* records a layer the routing history keeps (>= 1) */
  const int* pinned; /* layers x pinned_count expert ids kept resident, or NULL */
  int pinned_count;
} kjit_moe_offload_options;
/* layers entries each: gate_up [E, 2 I, H] and down [E, H, I] (host, as kjit_moe_layer's);
   router_bias: NULL, or layers entries (each a device [E] fp32 or NULL). */
kjit_status kjit_moe_offload_create(int layers, const DLTensor* const* gate_up,
                                    const DLTensor* const* down, const DLTensor* const* router_bias,
                                    const kjit_moe_router_options* router, int block,
                                    const kjit_moe_offload_options* options,
                                    kjit_moe_offload** stack);
/* FP4 experts (format 0 NVFP4, 1 MXFP4), codes and scales on the host; a tensor scale [E] on the
   host, or [1] on the device (one for all), or a NULL array (MXFP4). */
kjit_status kjit_moe_offload_create_fp4(
    int layers, int format, const DLTensor* const* gate_up_codes,
    const DLTensor* const* gate_up_scales, const DLTensor* const* gate_up_tensor_scale,
    const DLTensor* const* down_codes, const DLTensor* const* down_scales,
    const DLTensor* const* down_tensor_scale, const DLTensor* const* router_bias,
    const kjit_moe_router_options* router, int block, const kjit_moe_offload_options* options,
    kjit_moe_offload** stack);
void kjit_moe_offload_destroy(kjit_moe_offload* stack); /* NULL is ignored; waits for its work */
/* kjit_moe_layer for layer `layer` (0..layers-1, in order each step); sequences: T ids (the
   predictors' and history's key) or NULL (token t is sequence t). Waits on the host for the
   router's choice. */
kjit_status kjit_moe_offload_layer(kjit_moe_offload* stack, int layer, const DLTensor* x,
                                   const DLTensor* router_logits, const DLTensor* shared,
                                   const DLTensor* out, const uint32_t* sequences, void* stream);
/* Prefetches into `layer` what its router would choose on guess_logits [T, E]. */
kjit_status kjit_moe_offload_prefetch_from_logits(kjit_moe_offload* stack, int layer,
                                                  const DLTensor* guess_logits, void* stream);
typedef struct kjit_moe_offload_stats {
  int64_t tokens, hits, misses, prefetches, prefetch_hits, prefetches_wasted;
  int64_t bytes_on_demand, bytes_prefetched;
  double stall_ms; /* the compute stream's waits for loads */
  double copy_ms;  /* the loader's copies (bytes / copy_ms: its host -> device rate) */
} kjit_moe_offload_stats;
kjit_status kjit_moe_offload_stats_get(kjit_moe_offload* stack, kjit_moe_offload_stats* stats);
/* The routing history as a trace file (".jsonl": JSON lines; else binary), for kjit moe analyze. */
kjit_status kjit_moe_offload_write_history(kjit_moe_offload* stack, const char* path);

#ifdef __cplusplus
}
#endif
#pragma GCC visibility pop

#endif /* KJIT_C_API_H */

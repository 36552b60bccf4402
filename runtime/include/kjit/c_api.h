/* The C ABI of kjit, over DLPack tensors, for Python/Rust/C callers. Every call returns a
   status; on failure kjit_last_error() (per thread) says why, naming the argument. */
#ifndef KJIT_C_API_H
#define KJIT_C_API_H

#include <dlpack/dlpack.h>
#include <stdint.h>

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
  KJIT_ERROR_INTERNAL = 6
} kjit_status;

/* The message of this thread's last failed call ("" if none). Valid until the next call. */
const char* kjit_last_error(void);

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

#ifdef __cplusplus
}
#endif

#endif /* KJIT_C_API_H */

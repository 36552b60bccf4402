// The input rules of MLA decode: q [B, s_q, H, 576] (s_q 1 to 4), a paged latent cache of the
// same dtype (fp16 or bf16) with blocks of 32 or 64 tokens, its block table and lengths checked
// on the caller's host copies, out [B, s_q, H, 512] (any strides, rows contiguous) and an optional
// fp32 lse [B, s_q, H] (any strides). Each failure throws InvalidArgument naming the argument (and
// the sequence, for the table).
#pragma once

#include <cstdint>

#include "kjit/mla.hpp"

namespace kjit::ops {

struct MlaDecodeShape {
  DType dtype = DType::BFloat16;
  std::int64_t batch = 0, s_q = 0, heads = 0;
  std::int64_t num_blocks = 0, block_size = 0, max_blocks = 0;
  std::int64_t longest = 0, keys = 0;  // the longest cached sequence, and all their tokens
};

MlaDecodeShape check_mla_decode(const TensorView& q, const mla::PagedCache& cache,
                                const TensorView& out, const TensorView& lse);

}  // namespace kjit::ops

// Host side of templates/attention/flash_forward.cuh: validation of batched and packed inputs,
// tile configs, the kernel spec and the launch.
#pragma once

#include <string>
#include <vector>

#include "attention/flash_params.h"
#include "cache/tuning_key.hpp"
#include "kjit/attention.hpp"
#include "kjit/kernel.hpp"
#include "kjit/kernel_spec.hpp"

namespace kjit::attention::flash_plan {

inline constexpr const char* kTemplate = "attention/flash_forward.cuh";
inline constexpr int kHeadDims[] = {64, 96, 128, 192, 256};

struct Problem {
  DType dtype = DType::BFloat16;
  int head_dim = 0;
  int batch = 0, heads_q = 0, heads_k = 0;
  int max_seqlen_q = 0, max_seqlen_k = 0;
  bool causal = false;
  KjitFlashParams params{};
};

Problem validate(const TensorView& q, const TensorView& k, const TensorView& v,
                 const TensorView& out, const TensorView& lse, const ForwardOptions& options);
Problem validate_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const TensorView& lse, const Varlen& seqlens,
                        const ForwardOptions& options);

// {block_m, block_n, m_tiles}: each warp owns 16 x m_tiles query rows, so a block has
// block_m / (16 m_tiles) warps.
tuning::Config default_config(int head_dim, bool causal);
unsigned shared_bytes(const tuning::Config& config, DType dtype, int head_dim);
KernelSpec spec(const tuning::Config& config, DType dtype, int head_dim, bool causal,
                const std::string& arch = "");
void launch(const Kernel& kernel, const tuning::Config& config, const Problem& problem,
            StreamHandle stream);

std::vector<KernelSpec> shipped(const std::string& arch);

}  // namespace kjit::attention::flash_plan

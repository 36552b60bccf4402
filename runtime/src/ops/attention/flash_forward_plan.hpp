// Host side of templates/attention/flash_forward.cuh (mma.sync, sm_80+) and
// flash_forward_sm90.cuh (wgmma, sm_90a): validation of batched and packed inputs, the tile
// configs and their search space, the kernel spec and the launch.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "attention/flash_params.h"
#include "cache/config_lookup.hpp"
#include "cache/tuning_key.hpp"
#include "kjit/attention.hpp"
#include "kjit/kernel.hpp"
#include "kjit/kernel_spec.hpp"

namespace kjit::attention::flash_plan {

inline constexpr const char* kTemplate = "attention/flash_forward.cuh";
inline constexpr const char* kTemplateWgmma = "attention/flash_forward_sm90.cuh";
inline constexpr std::int64_t kMainloopMma = 80, kMainloopWgmma = 90;  // config "mainloop"
inline constexpr int kHeadDims[] = {64, 96, 128, 192, 256};

struct Problem {
  DType dtype = DType::BFloat16;
  int head_dim = 0;
  int batch = 0, heads_q = 0, heads_k = 0;
  int max_seqlen_q = 0, max_seqlen_k = 0;
  bool causal = false;
  KjitFlashParams params{};

  bool empty() const { return max_seqlen_q == 0 || batch == 0; }

  // The tuning key. A packed (varlen) call looks up its batched equivalent: B sequences of the
  // longest lengths.
  tuning::Shape shape() const {
    return {{"B", batch},         {"Hq", heads_q},      {"Hk", heads_k},           {"D", head_dim},
            {"Sq", max_seqlen_q}, {"Sk", max_seqlen_k}, {"causal", causal ? 1 : 0}};
  }
};

// How tuned results are bucketed: sequence lengths and batch round up to powers of two.
std::vector<tuning::Dimension> tuning_dimensions();

Problem validate(const TensorView& q, const TensorView& k, const TensorView& v,
                 const TensorView& out, const TensorView& lse, const ForwardOptions& options);
Problem validate_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const TensorView& lse, const Varlen& seqlens,
                        const ForwardOptions& options);

// Configs: mainloop (80: mma.sync, any arch; 90: wgmma, sm_90a and head dims that are multiples
// of 64), block_m query rows and block_n keys per tile, m_tiles (mma.sync: each warp owns
// 16 x m_tiles rows, so a block has block_m / (16 m_tiles) warps; wgmma: 1, a warpgroup per 64
// rows). The default is valid for every shape of its arch.
bool has_wgmma(const std::string& arch);
unsigned max_shared_bytes(const std::string& arch);  // per block
tuning::Config default_config(int head_dim, bool causal, const std::string& arch);
std::vector<std::pair<std::string, std::vector<std::int64_t>>> search_space(
    const std::string& arch);
bool valid(const tuning::Config& config, DType dtype, int head_dim, const std::string& arch);
unsigned shared_bytes(const tuning::Config& config, DType dtype, int head_dim);
KernelSpec spec(const tuning::Config& config, DType dtype, int head_dim, bool causal,
                const std::string& arch = "");
void launch(const Kernel& kernel, const tuning::Config& config, const Problem& problem,
            StreamHandle stream);

std::vector<KernelSpec> shipped(const std::string& arch);

}  // namespace kjit::attention::flash_plan

// Host side of templates/samples: the specs that instantiate them. The samples are the runtime's
// own test and benchmark kernels, and the example of how an op describes its specialisations.
#pragma once

#include <string>
#include <vector>

#include "kjit/kernel_spec.hpp"

namespace kjit::samples {

// T is "float" or "double".
KernelSpec saxpy(const std::string& type, const std::string& arch = "");
KernelSpec empty_kernel(const std::string& arch = "");
KernelSpec shared_reverse(const std::string& arch = "");
KernelSpec cluster_sum(int threads, const std::string& arch = "");
// slow_fill, then copy_after_prior_grid launched to overlap it (sm_90).
KernelSpec overlapped_pair(const std::string& arch = "");
// Blocks reading one buffer through L2, by which SMs they run on (bench/l2_sharing.cpp).
KernelSpec l2_sharing(const std::string& arch = "");

struct MmaGemmConfig {
  std::string type = "__nv_bfloat16";  // or "__half"
  int block_m = 128, block_n = 128, block_k = 32;
  int warps_m = 2, warps_n = 2, stages = 4;

  int threads() const { return warps_m * warps_n * 32; }
  // Mirrors MmaGemmShape::kSharedBytes in templates/samples/mma_gemm.cuh.
  unsigned shared_bytes() const;
};
KernelSpec mma_gemm(const MmaGemmConfig& config, const std::string& arch = "");

// Every sample specialisation kjit ships for `arch` (cluster and overlapped kernels only from
// sm_90).
std::vector<KernelSpec> shipped(const std::string& arch);

}  // namespace kjit::samples

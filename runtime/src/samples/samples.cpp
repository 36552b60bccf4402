#include "samples/samples.hpp"

#include <fmt/format.h>

#include "driver/arch.hpp"

namespace kjit::samples {
namespace {

KernelSpec with_arch(KernelSpec spec, const std::string& arch) {
  spec.arch = arch;
  return spec;
}

}  // namespace

KernelSpec saxpy(const std::string& type, const std::string& arch) {
  return with_arch(KernelSpec(Source::embedded("samples/saxpy.cuh"),
                              {fmt::format("kjit::samples::saxpy<{}>", type)}),
                   arch);
}

KernelSpec empty_kernel(const std::string& arch) {
  return with_arch(
      KernelSpec(Source::embedded("samples/saxpy.cuh"), {"kjit::samples::empty_kernel"}), arch);
}

KernelSpec shared_reverse(const std::string& arch) {
  return with_arch(
      KernelSpec(Source::embedded("samples/shared_reverse.cuh"), {"kjit::samples::shared_reverse"}),
      arch);
}

KernelSpec cluster_sum(int threads, const std::string& arch) {
  return with_arch(KernelSpec(Source::embedded("samples/cluster_sum.cuh"),
                              {fmt::format("kjit::samples::cluster_sum<{}>", threads)}),
                   arch);
}

unsigned MmaGemmConfig::shared_bytes() const {
  constexpr int kPad = 8;
  return static_cast<unsigned>(stages * (block_m + block_n) * (block_k + kPad) * 2);
}

KernelSpec mma_gemm(const MmaGemmConfig& c, const std::string& arch) {
  return with_arch(
      KernelSpec(Source::embedded("samples/mma_gemm.cuh"),
                 {fmt::format("kjit::samples::mma_gemm<{}, {}, {}, {}, {}, {}, {}>", c.type,
                              c.block_m, c.block_n, c.block_k, c.warps_m, c.warps_n, c.stages)}),
      arch);
}

KernelSpec overlapped_pair(const std::string& arch) {
  return with_arch(KernelSpec(Source::embedded("samples/overlapped_pair.cuh"),
                              {"kjit::samples::slow_fill", "kjit::samples::copy_after_prior_grid"}),
                   arch);
}

KernelSpec l2_sharing(const std::string& arch) {
  return with_arch(
      KernelSpec(Source::embedded("samples/l2_sharing.cuh"), {"kjit::samples::l2_sharing"}), arch);
}

std::vector<KernelSpec> shipped(const std::string& arch) {
  std::vector<KernelSpec> out{saxpy("float", arch), saxpy("double", arch), empty_kernel(arch),
                              shared_reverse(arch), l2_sharing(arch)};
  for (const char* type : {"__nv_bfloat16", "__half"}) {
    MmaGemmConfig c;
    c.type = type;
    out.push_back(mma_gemm(c, arch));
  }
  if (Arch(arch).version() >= 90) {
    out.push_back(cluster_sum(256, arch));
    out.push_back(overlapped_pair(arch));
  }
  return out;
}

}  // namespace kjit::samples

// The sample kernels' numerics on the GPU against CPU references in double precision, with
// poisoned outputs and fresh random inputs per case.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kjit/jit.hpp"
#include "samples/samples.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/isolated_cache.hpp"
#include "util/half_float.hpp"

namespace kjit::test {
namespace {

struct GemmCase {
  samples::MmaGemmConfig config;
  int m, n, k;
};

void PrintTo(const GemmCase& c, std::ostream* os) {
  *os << samples::mma_gemm(c.config).describe() << " M=" << c.m << " N=" << c.n << " K=" << c.k;
}

class MmaGemm : public SharedKernelStore, public ::testing::WithParamInterface<GemmCase> {};

TEST_P(MmaGemm, MatchesDoubleReference) {
  KJIT_REQUIRE_GPU();
  const GemmCase& c = GetParam();
  const bool bf16 = c.config.type == "__nv_bfloat16";
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<std::uint16_t> a(static_cast<std::size_t>(c.m) * c.k),
      b(static_cast<std::size_t>(c.n) * c.k);
  std::vector<double> af(a.size()), bf(b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    a[i] = bf16 ? float_to_bf16(dist(rng)) : float_to_fp16(dist(rng));
    af[i] = bf16 ? bf16_to_float(a[i]) : fp16_to_float(a[i]);
  }
  for (std::size_t i = 0; i < b.size(); ++i) {
    b[i] = bf16 ? float_to_bf16(dist(rng)) : float_to_fp16(dist(rng));
    bf[i] = bf16 ? bf16_to_float(b[i]) : fp16_to_float(b[i]);
  }
  DeviceBuffer da(a.size() * 2), db(b.size() * 2), dc(static_cast<std::size_t>(c.m) * c.n * 4);
  da.upload(a.data(), da.size());
  db.upload(b.data(), db.size());
  dc.fill_bytes(0xff);  // NaN everywhere: an unwritten element cannot pass

  const Kernel kernel = load(samples::mma_gemm(c.config)).kernel();
  Stream stream;
  const LaunchConfig launch{{static_cast<unsigned>(c.n / c.config.block_n),
                             static_cast<unsigned>(c.m / c.config.block_m), 1},
                            {static_cast<unsigned>(c.config.threads()), 1, 1},
                            c.config.shared_bytes(),
                            stream.handle(),
                            {}};
  kernel.launch(launch, da.as<const void>(), db.as<const void>(), dc.as<float>(), c.m, c.n, c.k);
  stream.synchronize();
  std::vector<float> out(static_cast<std::size_t>(c.m) * c.n);
  dc.download(out.data(), dc.size());

  double max_err = 0, max_ref = 0, err2 = 0, ref2 = 0;
  for (int i = 0; i < c.m; ++i) {
    for (int j = 0; j < c.n; ++j) {
      double ref = 0;
      for (int kk = 0; kk < c.k; ++kk)
        ref +=
            af[i * static_cast<std::size_t>(c.k) + kk] * bf[j * static_cast<std::size_t>(c.k) + kk];
      const double got = out[i * static_cast<std::size_t>(c.n) + j];
      ASSERT_TRUE(std::isfinite(got)) << "C[" << i << "," << j << "] not written";
      max_err = std::max(max_err, std::abs(got - ref));
      max_ref = std::max(max_ref, std::abs(ref));
      err2 += (got - ref) * (got - ref);
      ref2 += ref * ref;
    }
  }
  // Products of 16-bit inputs are exact in fp32; only fp32 accumulation rounds.
  EXPECT_LT(std::sqrt(err2 / ref2), 1e-5) << "relative L2 error";
  EXPECT_LT(max_err, 1e-4 * max_ref) << "max abs error " << max_err << " of max |ref| " << max_ref;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, MmaGemm,
    ::testing::Values(GemmCase{{"__nv_bfloat16", 128, 128, 32, 2, 2, 4}, 256, 384, 512},
                      GemmCase{{"__half", 128, 128, 32, 2, 2, 4}, 384, 256, 256},
                      GemmCase{{"__nv_bfloat16", 64, 128, 32, 2, 2, 3}, 192, 128, 96},
                      GemmCase{{"__half", 128, 64, 64, 2, 2, 2}, 128, 192, 640}),
    [](const ::testing::TestParamInfo<GemmCase>& info) {
      const GemmCase& c = info.param;
      return std::string(c.config.type == "__half" ? "fp16" : "bf16") + "_" +
             std::to_string(c.config.block_m) + "x" + std::to_string(c.config.block_n) + "x" +
             std::to_string(c.config.block_k) + "_s" + std::to_string(c.config.stages);
    });

}  // namespace
}  // namespace kjit::test

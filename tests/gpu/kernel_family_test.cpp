// A family written in the test (tests/support/toy_family.hpp) runs through the generic op path
// on the GPU: validated call -> memo -> default config -> kernel -> launch.
#include <gtest/gtest.h>

#include <vector>

#include "ops/dispatch.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/isolated_cache.hpp"
#include "tests/support/toy_family.hpp"

namespace kjit::test {
namespace {

class ToyFamilyGpu : public IsolatedCache {};

TEST_F(ToyFamilyGpu, RunsThroughTheGenericOpPath) {
  KJIT_REQUIRE_GPU();
  for (std::int64_t n : {1, 1000, 1 << 20}) {
    std::vector<float> x(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < x.size(); ++i)
      x[i] = static_cast<float>(i % 1000) - 500.f;
    DeviceBuffer dx(x.size() * 4), dy(x.size() * 4);
    dx.upload(x.data(), dx.size());
    dy.fill_bytes(0xff);
    const ToyScale::Problem p{DType::Float32, n};
    const ops::Call<ToyScale> call{p,
                                   ToyScale::args(p, {TensorView(dx.data(), DType::Float32, {n}),
                                                      TensorView(dy.data(), DType::Float32, {n})})};
    Stream stream;
    ops::run(call, stream.handle());
    stream.synchronize();
    std::vector<float> y(x.size());
    dy.download(y.data(), dy.size());
    for (std::size_t i = 0; i < y.size(); ++i)
      ASSERT_EQ(y[i], 2.f * x[i]) << "n=" << n << " i=" << i;
  }
}

}  // namespace
}  // namespace kjit::test

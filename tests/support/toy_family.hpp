// A kernel family written outside kjit: y = factor * x over n floats, one thread per element.
// The struct below and its template are all the plumbing a new family needs (docs/design.md
// counts them); the tests use it to check the generic paths (dispatch, registry view, tuner
// adapter) on a family they control.
#pragma once

#include <fmt/format.h>

#include "ops/kernel_family.hpp"

namespace kjit::test {

inline constexpr const char* kToyTemplate = R"(
namespace toy {
template <int kThreads>
__global__ void __launch_bounds__(kThreads) scale(const float* x, float* y, long long n, float f) {
  const long long i = static_cast<long long>(blockIdx.x) * kThreads + threadIdx.x;
  if (i < n) y[i] = f * x[i];
}
}  // namespace toy
)";

struct ToyScale {
  static constexpr const char* kName = "toy_scale";
  static std::vector<Source> sources() { return {Source::string("toy/scale.cuh", kToyTemplate)}; }
  struct Problem {
    DType dtype = DType::Float32;
    std::int64_t n = 0;
  };
  struct Config {
    std::int64_t threads = 0;
  };
  struct Args {
    const float* x;
    float* y;
    long long n;
    float factor;
  };
  static constexpr ops::Field<Problem> kShape[] = {
      ops::field<&Problem::n>("n", tuning::Bucket::Pow2)};
  static constexpr ops::Field<Config> kConfig[] = {ops::field<&Config::threads>("threads")};
  static constexpr DType kDTypes[] = {DType::Float32};

  static void check(const Problem& p) {
    if (p.n < 0) throw InvalidArgument("toy_scale: n must not be negative");
  }
  static std::vector<Config> space(const Problem&, const Arch&) {
    return {{64}, {128}, {256}, {2048}};
  }
  static bool valid(const Config& c, const Problem&, const Arch&) {
    return c.threads >= 32 && c.threads <= 1024 && c.threads % 32 == 0;
  }
  static Config default_config(const Problem&, const Arch&) { return {128}; }
  static KernelSpec spec(const Config& c, const Problem&, const Arch& arch) {
    KernelSpec s(sources()[0], {fmt::format("toy::scale<{}>", c.threads)});
    s.arch = arch.name();
    return s;
  }
  static void launch(const Program& program, const Config& c, const Problem& p, const Args& args,
                     StreamHandle stream) {
    const auto blocks = static_cast<unsigned>((p.n + c.threads - 1) / c.threads);
    program.kernel().launch({{blocks}, {static_cast<unsigned>(c.threads)}, 0, stream, {}}, args.x,
                            args.y, args.n, args.factor);
  }
  static std::vector<Problem> shipped(const Arch&) { return {{DType::Float32, 1}}; }

  static std::vector<ops::TensorSpec> tensors(const Problem& p) {
    return {{"x", DType::Float32, {p.n}},
            {"y", DType::Float32, {p.n}, ops::TensorSpec::Role::Output}};
  }
  static Args args(const Problem& p, const std::vector<TensorView>& t) {
    return {static_cast<const float*>(t.at(0).data), static_cast<float*>(t.at(1).data), p.n, 2.f};
  }
  static double tolerance(const Problem&) { return 0; }
  static std::vector<ops::Preset<Problem>> presets() {
    return {{"toy", {{DType::Float32, 1 << 20}}}};
  }
};

}  // namespace kjit::test

// The one adapter from a typed kernel family (kernel_family.hpp) to the registry's type-erased
// interface, with the generic tuner workload over the family's tensor list. A family gets both
// by being named in registry.cpp (or, in tests, by family_of<F>()).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "kjit/device.hpp"
#include "kjit/error.hpp"
#include "ops/kernel_family.hpp"
#include "ops/registry.hpp"
#include "util/half_float.hpp"

namespace kjit::ops {

template <class F>
class FamilyWorkload final : public Workload {
 public:
  FamilyWorkload(const typename F::Problem& problem, std::size_t l2_bytes)
      : problem_(problem), specs_(F::tensors(problem)) {
    std::size_t set_bytes = 0;
    for (const TensorSpec& t : specs_) {
      if (t.role == TensorSpec::Role::Input) set_bytes += bytes_of(t);
    }
    sets_ = static_cast<int>(
        std::max<std::size_t>(2, 3 * l2_bytes / std::max<std::size_t>(set_bytes, 1) + 1));
    std::mt19937 rng(std::random_device{}());
    for (const TensorSpec& t : specs_) {
      if (t.role != TensorSpec::Role::Input)
        outputs_.emplace_back(std::max<std::size_t>(bytes_of(t), 1));
    }
    for (int s = 0; s < sets_; ++s) {
      std::vector<TensorView> views;
      std::size_t out = 0;
      for (const TensorSpec& t : specs_) {
        void* data = nullptr;
        if (t.role == TensorSpec::Role::Input) {
          inputs_.push_back(random_buffer(t, rng));
          data = inputs_.back().data();
        } else {
          data = outputs_[out++].data();
        }
        views.push_back(TensorView(data, t.dtype, t.shape));
      }
      args_.push_back(F::args(problem_, views));
    }
  }

  int input_sets() const override { return sets_; }

  void run(const Program& program, const tuning::Config& config, int set,
           StreamHandle stream) override {
    const std::optional<typename F::Config> c = config_of<F>(config);
    if (!c)
      throw InvalidArgument(std::string(F::kName) + ": malformed config " +
                            tuning::config_json(config));
    F::launch(program, *c, problem_, args_[static_cast<std::size_t>(set % sets_)], stream);
  }

  void poison_output() override {
    for (DeviceBuffer& b : outputs_)
      b.fill_bytes(0xff);
  }

  std::vector<double> output() override {
    std::vector<double> out;
    std::size_t i = 0;
    for (const TensorSpec& t : specs_) {
      if (t.role == TensorSpec::Role::Input) continue;
      const DeviceBuffer& buffer = outputs_[i++];
      if (t.role == TensorSpec::Role::Scratch) continue;
      std::vector<unsigned char> raw(bytes_of(t));
      if (!raw.empty()) buffer.download(raw.data(), raw.size());
      const std::size_t elem = dtype_size(t.dtype);
      for (std::size_t e = 0; e < raw.size() / elem; ++e)
        out.push_back(to_double(t.dtype, &raw[e * elem]) * t.compare_scale);
    }
    return out;
  }

  double tolerance() const override { return F::tolerance(problem_); }

 private:
  static std::size_t bytes_of(const TensorSpec& t) {
    std::size_t n = dtype_size(t.dtype);
    for (std::int64_t d : t.shape)
      n *= static_cast<std::size_t>(d);
    return n;
  }

  static double to_double(DType dtype, const unsigned char* p) {
    std::uint16_t h;
    float f;
    std::int32_t i;
    switch (dtype) {
      case DType::Float32:
        std::memcpy(&f, p, 4);
        return f;
      case DType::Int32:  // exact in a double
        std::memcpy(&i, p, 4);
        return i;
      case DType::BFloat16:
        std::memcpy(&h, p, 2);
        return bf16_to_float(h);
      case DType::Float16:
        std::memcpy(&h, p, 2);
        return fp16_to_float(h);
      default:
        throw Error(std::string("tuner workload: cannot compare a ") + dtype_name(dtype) +
                    " output");
    }
  }

  // Standard normal values, or uniform in [lo, hi), or the spec's own, in the tensor's dtype.
  static DeviceBuffer random_buffer(const TensorSpec& t, std::mt19937& rng) {
    std::normal_distribution<float> normal(0.f, 1.f);
    std::uniform_real_distribution<float> uniform(t.lo, t.hi);
    const std::size_t elem = dtype_size(t.dtype), n = bytes_of(t) / elem;
    std::vector<unsigned char> host(n * elem);
    for (std::size_t i = 0; i < n; ++i) {
      const float v = t.value        ? t.value(static_cast<std::int64_t>(i))
                      : t.lo == t.hi ? normal(rng)
                                     : uniform(rng);
      if (t.dtype == DType::Float32) {
        std::memcpy(&host[i * 4], &v, 4);
      } else if (t.dtype == DType::BFloat16 || t.dtype == DType::Float16) {
        const std::uint16_t h = t.dtype == DType::BFloat16 ? float_to_bf16(v) : float_to_fp16(v);
        std::memcpy(&host[i * 2], &h, 2);
      } else if (t.dtype == DType::Int32) {  // indices: uniform integers in [lo, hi)
        const auto x = static_cast<std::int32_t>(std::floor(v));
        std::memcpy(&host[i * 4], &x, 4);
      } else if (t.dtype == DType::UInt8) {  // codes: uniform bytes in [lo, hi)
        host[i] = static_cast<unsigned char>(std::clamp(std::floor(v), 0.f, 255.f));
      } else {
        throw Error(std::string("tuner workload: cannot fill a ") + dtype_name(t.dtype) + " input");
      }
    }
    DeviceBuffer d(std::max<std::size_t>(host.size(), 1));
    if (!host.empty()) d.upload(host.data(), host.size());
    return d;
  }

  typename F::Problem problem_;
  std::vector<TensorSpec> specs_;
  int sets_ = 2;
  std::vector<DeviceBuffer> inputs_, outputs_;
  std::vector<typename F::Args> args_;  // one per input set
};

template <class F>
class FamilyModel final : public KernelFamily {
 public:
  using Problem = typename F::Problem;
  using Config = typename F::Config;

  std::string name() const override { return F::kName; }
  const std::string& template_hash() const override { return ops::template_hash<F>(); }
  std::vector<tuning::Dimension> dimensions() const override { return ops::dimensions<F>(); }
  std::vector<KernelSpec> shipped(const Arch& arch) const override {
    std::vector<KernelSpec> out;
    for (const Problem& p : F::shipped(arch))
      out.push_back(F::spec(F::default_config(p, arch), p, arch));
    return out;
  }
  void check(const TuneCase& c) const override { problem(c); }
  bool well_formed(const tuning::Config& m) const override { return config_of<F>(m).has_value(); }
  std::vector<tuning::Config> space(const TuneCase& c, const Arch& arch) const override {
    std::vector<tuning::Config> out;
    for (const Config& config : F::space(problem(c), arch))
      out.push_back(config_map<F>(config));
    return out;
  }
  bool valid(const tuning::Config& m, const TuneCase& c, const Arch& arch) const override {
    const std::optional<Config> config = config_of<F>(m);
    return config && F::valid(*config, problem(c), arch);
  }
  tuning::Config default_config(const TuneCase& c, const Arch& arch) const override {
    return config_map<F>(F::default_config(problem(c), arch));
  }
  KernelSpec spec(const tuning::Config& m, const TuneCase& c, const Arch& arch) const override {
    const std::optional<Config> config = config_of<F>(m);
    if (!config) {
      throw InvalidArgument(std::string(F::kName) + ": " + tuning::config_json(m) +
                            " is not a config of this family");
    }
    return F::spec(*config, problem(c), arch);
  }
  std::unique_ptr<Workload> workload(const TuneCase& c, std::size_t l2_bytes) const override {
    return std::make_unique<FamilyWorkload<F>>(problem(c), l2_bytes);
  }
  std::vector<NamedCases> presets() const override {
    std::vector<NamedCases> out;
    for (const Preset<Problem>& p : F::presets()) {
      NamedCases named{p.name, {}};
      for (const Problem& problem : p.problems)
        named.cases.push_back({shape_of<F>(problem), problem.dtype});
      out.push_back(std::move(named));
    }
    return out;
  }

 private:
  static Problem problem(const TuneCase& c) { return problem_of<F>(c.shape, c.dtype); }
};

// The registry's view of a family (a test's own family too).
template <class F>
const KernelFamily& family_of() {
  static const FamilyModel<F> model;
  return model;
}

}  // namespace kjit::ops

// merge_states registered with the autotuner.
#include <cstring>
#include <random>

#include <fmt/format.h>

#include "autotune/tunable_op.hpp"
#include "kjit/error.hpp"
#include "ops/catalog.hpp"
#include "ops/merge_states/merge_states_plan.hpp"
#include "util/half_float.hpp"

namespace kjit::autotune {
namespace {

namespace plan = attention::merge_states_plan;

DType parse_dtype(const std::string& s) {
  if (s == "bf16") return DType::BFloat16;
  if (s == "fp16") return DType::Float16;
  if (s == "fp32") return DType::Float32;
  throw InvalidArgument("merge_states: dtype must be bf16, fp16 or fp32, got \"" + s + "\"");
}

std::int64_t dim_of(const Target& t, const char* name) {
  auto it = t.shape.find(name);
  if (it == t.shape.end()) {
    throw InvalidArgument(fmt::format("merge_states: shape needs {} (D, N and rows), got \"{}\"",
                                      name, tuning::problem_key(t.shape)));
  }
  return it->second;
}

// Parts [N, rows, 1, D] (one head: rows = tokens), inputs in `sets` rotating copies.
class MergeStatesWorkload : public Workload {
 public:
  MergeStatesWorkload(const Target& t, std::size_t l2_bytes)
      : dtype_(parse_dtype(t.dtype)),
        dim_(dim_of(t, "D")),
        parts_(dim_of(t, "N")),
        rows_(dim_of(t, "rows")) {
    if (rows_ <= 0 || t.shape.size() != 3) {
      throw InvalidArgument("merge_states: shape must be exactly D, N, rows > 0, got " +
                            tuning::problem_key(t.shape));
    }
    const std::size_t elem = dtype_size(dtype_);
    const std::size_t part_bytes = static_cast<std::size_t>(parts_ * rows_ * dim_) * elem;
    sets_ = static_cast<int>(
        std::max<std::size_t>(2, 3 * l2_bytes / std::max<std::size_t>(part_bytes, 1) + 1));
    std::mt19937 rng(std::random_device{}());
    std::uniform_real_distribution<float> value(-1.f, 1.f), lse(-4.f, 4.f);
    for (int s = 0; s < sets_; ++s) {
      std::vector<unsigned char> host(part_bytes);
      for (std::size_t i = 0; i < host.size() / 4; ++i) {
        // Random finite values in any dtype: fp32 directly, 16-bit types as pairs of halves
        // built from a float's upper bits.
        const float v = value(rng);
        if (elem == 4) {
          std::memcpy(&host[i * 4], &v, 4);
        } else {
          std::uint32_t bits;
          std::memcpy(&bits, &v, 4);
          const std::uint32_t hi = dtype_ == DType::BFloat16 ? (bits >> 16) : 0x3c00 | (bits >> 22);
          const std::uint32_t pair = (hi & 0xffff) | ((hi & 0xffff) << 16);
          std::memcpy(&host[i * 4], &pair, 4);
        }
      }
      inputs_.emplace_back(part_bytes);
      inputs_.back().upload(host.data(), part_bytes);
      std::vector<float> l(static_cast<std::size_t>(parts_ * rows_));
      for (float& x : l)
        x = lse(rng);
      lse_.emplace_back(l.size() * 4);
      lse_.back().upload(l.data(), l.size() * 4);
    }
    out_ = DeviceBuffer(static_cast<std::size_t>(rows_ * dim_) * elem);
    out_lse_ = DeviceBuffer(static_cast<std::size_t>(rows_) * 4);
  }

  int input_sets() const override { return sets_; }

  void run(const Kernel& kernel, const tuning::Config& config, int set,
           StreamHandle stream) override {
    const plan::Problem p = problem(set % sets_);
    plan::launch(kernel, config, p, stream);
  }

  void poison_output() override {
    out_.fill_bytes(0xff);
    out_lse_.fill_bytes(0xff);
  }

  std::vector<double> output() override {
    std::vector<unsigned char> raw(out_.size());
    out_.download(raw.data(), raw.size());
    std::vector<float> lse(static_cast<std::size_t>(rows_));
    out_lse_.download(lse.data(), lse.size() * 4);
    std::vector<double> out;
    out.reserve(static_cast<std::size_t>(rows_ * dim_) + lse.size());
    for (std::size_t i = 0; i < static_cast<std::size_t>(rows_ * dim_); ++i) {
      float f;
      if (dtype_ == DType::Float32) {
        std::memcpy(&f, &raw[i * 4], 4);
      } else {
        std::uint16_t h;
        std::memcpy(&h, &raw[i * 2], 2);
        f = dtype_ == DType::BFloat16 ? bf16_to_float(h) : fp16_to_float(h);
      }
      out.push_back(f);
    }
    for (float l : lse)
      out.push_back(l);
    return out;
  }

  // Configs differ only in how rows are split over threads: each output element is the same
  // fp32 sum, so they agree to a few fp32 ulps before rounding to the output dtype.
  double tolerance() const override { return dtype_ == DType::Float32 ? 1e-6 : 1e-2; }

  std::uint64_t bytes_moved() const override { return plan::bytes_moved(problem(0)); }

 private:
  plan::Problem problem(int set) const {
    const TensorView parts(inputs_[set].data(), dtype_, {parts_, rows_, 1, dim_});
    const TensorView lse(lse_[set].data(), DType::Float32, {parts_, rows_, 1});
    const TensorView out(out_.data(), dtype_, {rows_, 1, dim_});
    const TensorView out_lse(out_lse_.data(), DType::Float32, {rows_, 1});
    return plan::validate(parts, lse, out, out_lse);
  }

  DType dtype_;
  std::int64_t dim_, parts_, rows_;
  int sets_ = 2;
  std::vector<DeviceBuffer> inputs_, lse_;
  DeviceBuffer out_, out_lse_;
};

class MergeStatesTunable : public TunableOp {
 public:
  std::string name() const override { return "merge_states"; }
  std::string template_hash() const override { return catalog::template_hash(name()); }
  std::vector<tuning::Dimension> dimensions() const override {
    return {
        {"D", tuning::Bucket::Exact}, {"N", tuning::Bucket::Exact}, {"rows", tuning::Bucket::Pow2}};
  }
  Space space(const Target& t, const std::string&) const override {
    return plan::search_space(parse_dtype(t.dtype));
  }
  bool valid(const tuning::Config& c, const Target& t, const std::string&) const override {
    return plan::valid(c, parse_dtype(t.dtype), static_cast<int>(dim_of(t, "D")), 16);
  }
  tuning::Config default_config(const Target& t, const std::string&) const override {
    return plan::default_config(parse_dtype(t.dtype), static_cast<int>(dim_of(t, "D")), 16);
  }
  KernelSpec spec(const tuning::Config& c, const Target& t,
                  const std::string& arch) const override {
    return plan::spec(c, parse_dtype(t.dtype), static_cast<int>(dim_of(t, "D")),
                      static_cast<int>(dim_of(t, "N")), arch);
  }
  std::unique_ptr<Workload> workload(const Target& t, std::size_t l2_bytes) const override {
    return std::make_unique<MergeStatesWorkload>(t, l2_bytes);
  }
  std::vector<std::string> presets() const override {
    return {"merge_states", "merge_states-quick"};
  }
  std::vector<Target> preset(const std::string& name) const override {
    std::vector<Target> out;
    if (name == "merge_states") {
      // The benchmark's rows (T*H = 64k, D = 512) and the helix-decode head dims.
      for (const char* dtype : {"bf16", "fp32"}) {
        for (std::int64_t n : {2, 4, 8, 16})
          out.push_back({{{"D", 512}, {"N", n}, {"rows", 65536}}, dtype});
      }
      for (std::int64_t d : {128, 576})
        out.push_back({{{"D", d}, {"N", 4}, {"rows", 65536}}, "bf16"});
    } else if (name == "merge_states-quick") {
      out.push_back({{{"D", 512}, {"N", 2}, {"rows", 65536}}, "bf16"});
      out.push_back({{{"D", 128}, {"N", 4}, {"rows", 8192}}, "bf16"});
    }
    return out;
  }
};

}  // namespace

const TunableOp& merge_states_tunable() {
  static const MergeStatesTunable op;
  return op;
}

}  // namespace kjit::autotune

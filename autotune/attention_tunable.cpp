// Attention forward registered with the autotuner: batched inputs [B, S, H, D] of the target's
// shape, both main loops' tile configs, and the presets of the issue (Llama 3 prefill, the
// FlashAttention benchmark rows).
#include <cstring>
#include <random>

#include <fmt/format.h>

#include "autotune/tunable_op.hpp"
#include "kjit/error.hpp"
#include "ops/attention/flash_forward_plan.hpp"
#include "ops/catalog.hpp"
#include "util/half_float.hpp"

namespace kjit::autotune {
namespace {

namespace plan = attention::flash_plan;

DType parse_dtype(const std::string& s) {
  if (s == "bf16") return DType::BFloat16;
  if (s == "fp16") return DType::Float16;
  throw InvalidArgument("attention: dtype must be bf16 or fp16, got \"" + s + "\"");
}

// The target's shape, checked: B, Hq, Hk, D, Sq, Sk, causal.
struct AttentionShape {
  std::int64_t b, hq, hk, d, sq, sk;
  bool causal;
};

AttentionShape shape_of(const Target& t) {
  auto get = [&](const char* name) {
    auto it = t.shape.find(name);
    if (it == t.shape.end() || t.shape.size() != 7) {
      throw InvalidArgument(
          fmt::format("attention: shape must be exactly B, Hq, Hk, D, Sq, Sk, causal, got \"{}\"",
                      tuning::problem_key(t.shape)));
    }
    return it->second;
  };
  const AttentionShape s{get("B"),  get("Hq"), get("Hk"),         get("D"),
                         get("Sq"), get("Sk"), get("causal") != 0};
  if (s.b <= 0 || s.hq <= 0 || s.hk <= 0 || s.sq <= 0 || s.sk <= 0) {
    throw InvalidArgument("attention: B, Hq, Hk, Sq and Sk must be positive, got " +
                          tuning::problem_key(t.shape));
  }
  return s;
}

class AttentionWorkload : public Workload {
 public:
  AttentionWorkload(const Target& t, std::size_t l2_bytes)
      : dtype_(parse_dtype(t.dtype)), s_(shape_of(t)) {
    const std::size_t q_elems = static_cast<std::size_t>(s_.b * s_.sq * s_.hq * s_.d),
                      kv_elems = static_cast<std::size_t>(s_.b * s_.sk * s_.hk * s_.d);
    const std::size_t set_bytes = (q_elems + 2 * kv_elems) * 2;
    sets_ = static_cast<int>(std::max<std::size_t>(1, 3 * l2_bytes / set_bytes + 1));
    std::mt19937 rng(std::random_device{}());
    std::normal_distribution<float> normal(0.f, 1.f);
    auto random = [&](std::size_t n) {
      std::vector<std::uint16_t> host(n);
      for (auto& x : host) {
        const float f = normal(rng);
        x = dtype_ == DType::BFloat16 ? float_to_bf16(f) : float_to_fp16(f);
      }
      DeviceBuffer d(n * 2);
      d.upload(host.data(), n * 2);
      return d;
    };
    for (int i = 0; i < sets_; ++i) {
      q_.push_back(random(q_elems));
      k_.push_back(random(kv_elems));
      v_.push_back(random(kv_elems));
    }
    out_ = DeviceBuffer(q_elems * 2);
    lse_ = DeviceBuffer(static_cast<std::size_t>(s_.b * s_.hq * s_.sq) * 4);
  }

  int input_sets() const override { return sets_; }

  void run(const Kernel& kernel, const tuning::Config& config, int set,
           StreamHandle stream) override {
    plan::launch(kernel, config, problem(set % sets_), stream);
  }

  void poison_output() override {
    out_.fill_bytes(0xff);
    lse_.fill_bytes(0xff);
  }

  // O, then the LSE divided by 100: configs differ in fp32 summation order and where P is
  // rounded, and O (|O| <= max|v|) and LSE (~ log Sk + max score) should both count under one
  // tolerance relative to the largest value.
  std::vector<double> output() override {
    std::vector<std::uint16_t> raw(out_.size() / 2);
    out_.download(raw.data(), out_.size());
    std::vector<float> lse(lse_.size() / 4);
    lse_.download(lse.data(), lse_.size());
    std::vector<double> out;
    out.reserve(raw.size() + lse.size());
    for (std::uint16_t h : raw)
      out.push_back(dtype_ == DType::BFloat16 ? bf16_to_float(h) : fp16_to_float(h));
    for (float l : lse)
      out.push_back(l / 100.0);
    return out;
  }

  double tolerance() const override { return 2e-2; }

  std::uint64_t bytes_moved() const override {
    return (out_.size() * 2 + k_[0].size() + v_[0].size() + lse_.size());
  }

 private:
  plan::Problem problem(int set) const {
    attention::ForwardOptions o;
    o.causal = s_.causal;
    return plan::validate(TensorView(q_[set].data(), dtype_, {s_.b, s_.sq, s_.hq, s_.d}),
                          TensorView(k_[set].data(), dtype_, {s_.b, s_.sk, s_.hk, s_.d}),
                          TensorView(v_[set].data(), dtype_, {s_.b, s_.sk, s_.hk, s_.d}),
                          TensorView(out_.data(), dtype_, {s_.b, s_.sq, s_.hq, s_.d}),
                          TensorView(lse_.data(), DType::Float32, {s_.b, s_.hq, s_.sq}), o);
  }

  DType dtype_;
  AttentionShape s_;
  int sets_ = 1;
  std::vector<DeviceBuffer> q_, k_, v_;
  DeviceBuffer out_, lse_;
};

tuning::Shape make_shape(std::int64_t b, std::int64_t s, std::int64_t hq, std::int64_t hk,
                         std::int64_t d, bool causal) {
  return {{"B", b}, {"Hq", hq}, {"Hk", hk}, {"D", d}, {"Sq", s}, {"Sk", s}, {"causal", causal}};
}

class AttentionTunable : public TunableOp {
 public:
  std::string name() const override { return "attention"; }
  std::string template_hash() const override { return catalog::template_hash(name()); }
  std::vector<tuning::Dimension> dimensions() const override { return plan::tuning_dimensions(); }
  Space space(const Target&, const std::string& arch) const override {
    return plan::search_space(arch);
  }
  bool valid(const tuning::Config& c, const Target& t, const std::string& arch) const override {
    return plan::valid(c, parse_dtype(t.dtype), static_cast<int>(shape_of(t).d), arch);
  }
  tuning::Config default_config(const Target& t, const std::string& arch) const override {
    const AttentionShape s = shape_of(t);
    return plan::default_config(static_cast<int>(s.d), s.causal, arch);
  }
  KernelSpec spec(const tuning::Config& c, const Target& t,
                  const std::string& arch) const override {
    const AttentionShape s = shape_of(t);
    return plan::spec(c, parse_dtype(t.dtype), static_cast<int>(s.d), s.causal, arch);
  }
  std::unique_ptr<Workload> workload(const Target& t, std::size_t l2_bytes) const override {
    return std::make_unique<AttentionWorkload>(t, l2_bytes);
  }
  std::vector<std::string> presets() const override {
    return {"llama3-8b-prefill", "llama3-70b-prefill", "fa-bench"};
  }
  std::vector<Target> preset(const std::string& name) const override {
    std::vector<Target> out;
    if (name == "llama3-8b-prefill" || name == "llama3-70b-prefill") {
      // GQA 32/8 (8B) or 64/8 (70B), hd 128, causal; 16k tokens a batch up to one sequence.
      const std::int64_t hq = name == "llama3-8b-prefill" ? 32 : 64;
      for (std::int64_t s : {2048, 4096, 8192, 16384, 32768})
        out.push_back(
            {make_shape(std::max<std::int64_t>(1, 16384 / s), s, hq, 8, 128, true), "bf16"});
    } else if (name == "fa-bench") {
      // bench/attention_forward.cpp's batched rows: B x S = 16k tokens, H x D = 2048.
      for (std::int64_t d : {64, 128, 256}) {
        for (std::int64_t s : {2048, 8192, 16384}) {
          for (bool causal : {false, true})
            out.push_back({make_shape(16384 / s, s, 2048 / d, 2048 / d, d, causal), "bf16"});
        }
      }
      out.push_back({make_shape(2, 8192, 32, 8, 128, true), "bf16"});
    }
    return out;
  }
};

}  // namespace

const TunableOp& attention_tunable() {
  static const AttentionTunable op;
  return op;
}

}  // namespace kjit::autotune

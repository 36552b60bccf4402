// The experts' weights [E, N, K] on the device for the grouped GEMM and layer tests: uniform
// values of the given deviation from a splitmix64 stream (cheap beside a normal distribution's
// draws for up to 400 M of them), 16-bit in x's dtype, or FP4 quantised per expert (a tensor scale
// each) by the CPU reference, bit for bit as moe::quantize_fp4. at(): a weight's value as the
// kernels read it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kjit/device.hpp"
#include "kjit/moe.hpp"
#include "ops/moe/grouped_gemm.hpp"
#include "tests/reference/moe_reference.hpp"
#include "tests/support/dtype_bits.hpp"
#include "tests/support/splitmix.hpp"

namespace kjit::test {

class ExpertWeights {
 public:
  using Format = ops::MoeGemm::WeightFormat;
  ExpertWeights(Format format, DType dtype, int experts, int n, int k, std::uint64_t seed,
                double deviation = 0.1)
      : format_(format), dtype_(dtype), experts_(experts), n_(n), k_(k) {
    const std::size_t count = static_cast<std::size_t>(experts) * n * k;
    SplitMix64 bits{seed};
    const auto next = [&bits, deviation] {
      const double unit = static_cast<double>(bits.next() >> 11) * 0x1p-53;  // [0, 1)
      return (unit - 0.5) * std::sqrt(12.0) * deviation;
    };
    if (format == Format::kSameAsX) {
      bits_.resize(count);
      for (auto& e : bits_)
        e = to_bits(dtype, next());
      w_ = DeviceBuffer(count * 2);
      w_.upload(bits_.data(), count * 2);
      return;
    }
    const bool nv = format == Format::kNvFp4;
    const int block = moe::fp4_scale_block(fp4_format());
    std::vector<std::uint8_t> codes(count / 2), scales(count / block);
    std::vector<float> tensor_scales(static_cast<std::size_t>(experts));
    values_.resize(count);
    const std::size_t per_expert = static_cast<std::size_t>(n) * k;
    std::vector<double> expert(per_expert);
    for (int e = 0; e < experts; ++e) {
      for (double& v : expert)
        v = next();
      reference::Fp4Tensor q =
          nv ? reference::quantize_nvfp4(expert, n, k) : reference::quantize_mxfp4(expert, n, k);
      q.tensor_scale = tensor_scales[e] =
          static_cast<float>(q.tensor_scale);  // as the GEMM reads it
      const std::size_t base = e * per_expert;
      for (std::size_t i = 0; i < per_expert; ++i)
        codes[(base + i) / 2] |= static_cast<std::uint8_t>(q.codes[i] << (4 * (i % 2)));
      const std::vector<double> values = reference::dequantize(q, n, k, nv);
      std::copy(values.begin(), values.end(), values_.begin() + base);
      std::copy(q.scales.begin(), q.scales.end(), scales.begin() + base / block);
    }
    w_ = DeviceBuffer(codes.size());
    w_.upload(codes.data(), codes.size());
    scales_ = DeviceBuffer(scales.size());
    scales_.upload(scales.data(), scales.size());
    tensor_scale_ = DeviceBuffer(tensor_scales.size() * 4);
    tensor_scale_.upload(tensor_scales.data(), tensor_scales.size() * 4);
  }

  double at(std::size_t index) const {
    return format_ == Format::kSameAsX ? from_bits(dtype_, bits_[index]) : values_[index];
  }

  ops::MoeGemm::Weights view() const {
    if (format_ == Format::kSameAsX) return TensorView(w_.data(), dtype_, {experts_, n_, k_});
    return fp4();
  }
  moe::Fp4Weights fp4() const {
    const moe::Fp4Format format = fp4_format();
    return {
        format, TensorView(w_.data(), DType::UInt8, {experts_, n_, k_ / 2}),
        TensorView(scales_.data(), DType::UInt8, {experts_, n_, k_ / moe::fp4_scale_block(format)}),
        TensorView(tensor_scale_.data(), DType::Float32, {experts_})};
  }

 private:
  moe::Fp4Format fp4_format() const {
    return format_ == Format::kNvFp4 ? moe::Fp4Format::kNvFp4 : moe::Fp4Format::kMxFp4;
  }

  Format format_;
  DType dtype_;
  std::int64_t experts_, n_, k_;
  std::vector<std::uint16_t> bits_;  // 16-bit
  std::vector<double> values_;       // FP4, dequantised
  DeviceBuffer w_, scales_, tensor_scale_;
};

}  // namespace kjit::test

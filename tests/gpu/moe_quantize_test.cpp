// The FP4 weight quantizer on the GPU against tests/reference/moe_reference's quantize_nvfp4 and
// quantize_mxfp4, bit for bit: every E2M1 code (both nibbles of each byte), every block scale and
// the tensor scale. Random weights in both dtypes and formats, rows wider than the tensor, a
// crafted block of exact ties and saturating values, a zero block, an empty tensor; outputs
// poisoned first.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kjit/moe.hpp"
#include "tests/reference/moe_reference.hpp"
#include "tests/support/dtype_bits.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/isolated_cache.hpp"

namespace kjit::test {
namespace {

struct QuantizeCase {
  const char* name;
  DType dtype;
  moe::Fp4Format format;
  int rows, cols;
  int row_pad = 0;       // extra elements at the end of w's rows
  bool crafted = false;  // row 0: ties, saturation, signed zeros; row 1: zeros
};

void PrintTo(const QuantizeCase& c, std::ostream* os) {
  *os << c.name;
}

class MoeQuantizeTest : public SharedKernelStore,
                        public ::testing::WithParamInterface<QuantizeCase> {};

TEST_P(MoeQuantizeTest, MatchesTheReferenceBitForBit) {
  KJIT_REQUIRE_GPU();
  const QuantizeCase& c = GetParam();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "input seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal(0.0, 0.02);
  const bool nv = c.format == moe::Fp4Format::kNvFp4;
  const int block = moe::fp4_scale_block(c.format), stride = c.cols + c.row_pad;
  std::vector<std::uint16_t> w(static_cast<std::size_t>(c.rows) * stride);
  for (auto& v : w)
    v = to_bits(c.dtype, normal(rng));
  if (c.crafted) {
    // Midpoints of the E2M1 grid at an element scale of exactly 1, signs and signed zeros. MXFP4:
    // a block max of 7 (exponent 0, scale 1; 7 saturates to 6). NVFP4: the tensor's max is 6 (the
    // random rows' are far below), so global = 448, the block scale 448 and each element's
    // multiplier global / scale = 1.
    const double big = nv ? 6 : 7;
    const double row0[] = {4,     0.25, 0.75, 1.25, 1.75, 2.5,  3.5, 5,
                           -0.25, -5,   big,  -big, 0,    -0.0, 0.1, -1.5};
    for (int i = 0; i < c.cols; ++i)
      w[i] = to_bits(c.dtype, row0[i % 16]);
    for (int i = 0; i < c.cols; ++i)
      w[static_cast<std::size_t>(stride) + i] = 0;
  }
  std::vector<double> values(static_cast<std::size_t>(c.rows) * c.cols);
  for (int r = 0; r < c.rows; ++r) {
    for (int i = 0; i < c.cols; ++i)
      values[static_cast<std::size_t>(r) * c.cols + i] =
          from_bits(c.dtype, w[static_cast<std::size_t>(r) * stride + i]);
  }
  const reference::Fp4Tensor want = nv ? reference::quantize_nvfp4(values, c.rows, c.cols)
                                       : reference::quantize_mxfp4(values, c.rows, c.cols);

  DeviceBuffer dw(std::max<std::size_t>(w.size() * 2, 16)),
      dcodes(std::max<std::size_t>(static_cast<std::size_t>(c.rows) * c.cols / 2, 16)),
      dscales(std::max<std::size_t>(static_cast<std::size_t>(c.rows) * c.cols / block, 16)),
      dscale(4);
  if (!w.empty()) dw.upload(w.data(), w.size() * 2);
  for (DeviceBuffer* b : {&dcodes, &dscales, &dscale})
    b->fill_bytes(0xa5);
  Stream stream;
  moe::quantize_fp4(TensorView(dw.data(), c.dtype, {c.rows, c.cols}, {stride, 1}), c.format,
                    TensorView(dcodes.data(), DType::UInt8, {c.rows, c.cols / 2}),
                    TensorView(dscales.data(), DType::UInt8, {c.rows, c.cols / block}),
                    TensorView(dscale.data(), DType::Float32, {1}), stream.handle());
  stream.synchronize();
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(c.rows) * c.cols / 2),
      scales(static_cast<std::size_t>(c.rows) * c.cols / block);
  float tensor_scale = 0;
  if (!codes.empty()) dcodes.download(codes.data(), codes.size());
  if (!scales.empty()) dscales.download(scales.data(), scales.size());
  dscale.download(&tensor_scale, 4);
  EXPECT_EQ(tensor_scale, static_cast<float>(want.tensor_scale));
  for (std::size_t i = 0; i < scales.size(); ++i)
    ASSERT_EQ(scales[i], want.scales[i]) << "scale of block " << i;
  for (std::size_t i = 0; i < codes.size(); ++i) {
    ASSERT_EQ(codes[i] & 0xf, want.codes[2 * i]) << "element " << 2 * i << " = " << values[2 * i];
    ASSERT_EQ(codes[i] >> 4, want.codes[2 * i + 1])
        << "element " << 2 * i + 1 << " = " << values[2 * i + 1];
  }
}

std::vector<QuantizeCase> cases() {
  const DType bf16 = DType::BFloat16, fp16 = DType::Float16;
  const auto nv = moe::Fp4Format::kNvFp4, mx = moe::Fp4Format::kMxFp4;
  return {{"nvfp4_bf16", bf16, nv, 96, 2048},
          {"mxfp4_bf16", bf16, mx, 96, 2048},
          {"nvfp4_fp16_padded_rows", fp16, nv, 33, 160, 24},
          {"mxfp4_fp16_padded_rows", fp16, mx, 33, 160, 8},
          {"mxfp4_crafted_ties", bf16, mx, 4, 64, 0, true},
          {"nvfp4_crafted_ties", bf16, nv, 4, 64, 0, true},
          {"empty", bf16, nv, 0, 2048}};
}

INSTANTIATE_TEST_SUITE_P(All, MoeQuantizeTest, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace kjit::test

// Attention forward at scale and through its other entry points: a 128k-token sequence against
// the naive fp32 GPU reference, 1000 calls without device-memory growth, and the C ABI giving
// the C++ API's bytes.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kjit/attention.hpp"
#include "kjit/c_api.h"
#include "kjit/jit.hpp"
#include "ops/attention/flash_forward.hpp"
#include "tests/reference/naive_attention_gpu.hpp"
#include "tests/support/bf16_buffers.hpp"
#include "tests/support/forced_launch.hpp"
#include "tests/support/gpu.hpp"
#include "util/half_float.hpp"

namespace kjit::test {
namespace {

using ops::FlashForward;
constexpr DType kBf16 = DType::BFloat16;

// One causal sequence of 128k tokens (hd 128, one head): FlashAttention's bound against the
// fp32 naive reference, for the op's own main loop and for the mma.sync one. The LSE bound is
// 1e-4 absolute: the reference sums up to 128k fp32 terms itself.
TEST(AttentionForwardScale, SingleSequenceOf128kTokens) {
  KJIT_REQUIRE_GPU();
  const int s = 131072, d = 128;
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("input seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const DeviceBuffer q = random_bf16(std::size_t{1} * s * d, rng).device,
                     k = random_bf16(std::size_t{1} * s * d, rng).device,
                     v = random_bf16(std::size_t{1} * s * d, rng).device;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  const auto ref = reference::naive_attention_gpu(q, k, v, s, s, 1, 1, d, scale, true, false);
  const auto low = reference::naive_attention_gpu(q, k, v, s, s, 1, 1, d, scale, true, true);
  double low_err = 0;
  for (std::size_t i = 0; i < ref.out.size(); ++i)
    low_err = std::max(
        low_err,
        std::abs(static_cast<double>(bf16_to_float(float_to_bf16(low.out[i]))) - ref.out[i]));

  DeviceBuffer out(std::size_t{1} * s * d * 2), lse(std::size_t{1} * s * 4);
  const TensorView vq(q.data(), kBf16, {1, s, 1, d}), vk(k.data(), kBf16, {1, s, 1, d}),
      vv(v.data(), kBf16, {1, s, 1, d}), vout(out.data(), kBf16, {1, s, 1, d}),
      vlse(lse.data(), DType::Float32, {1, 1, s});
  attention::ForwardOptions options;
  options.causal = true;
  for (std::int64_t mainloop : {std::int64_t{0}, FlashForward::kMainloopMma}) {
    out.fill_bytes(0xff);
    lse.fill_bytes(0xff);
    Stream stream;
    if (mainloop == 0) {
      attention::forward(vq, vk, vv, vout, vlse, options, stream.handle());
    } else {
      const ops::Call<FlashForward> call = FlashForward::validate(vq, vk, vv, vout, vlse, options);
      const FlashForward::Config c = FlashForward::default_config(call.problem, "sm_80");
      launch_forced(c, call, stream.handle());
    }
    stream.synchronize();
    const std::vector<float> got = download_bf16(out);
    std::vector<float> got_lse(s);
    lse.download(got_lse.data(), got_lse.size() * 4);
    double err = 0, lse_err = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      ASSERT_TRUE(std::isfinite(got[i])) << "out[" << i << "] mainloop " << mainloop;
      err = std::max(err, std::abs(static_cast<double>(got[i]) - ref.out[i]));
    }
    for (int i = 0; i < s; ++i)
      lse_err = std::max(lse_err, std::abs(static_cast<double>(got_lse[i]) - ref.lse[i]));
    EXPECT_LE(err, 2 * low_err + 1e-5)
        << "mainloop " << mainloop << ", same-dtype reference error " << low_err;
    EXPECT_LE(lse_err, 1e-4) << "mainloop " << mainloop;
  }
}

// After one warm-up call per shape, 1000 more (batched and packed, causal and not) leave the
// device's free memory exactly where it was.
TEST(AttentionForwardScale, ThousandCallsDoNotGrowDeviceMemory) {
  KJIT_REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  const int b = 2, s = 1000, h = 8, d = 128;
  const DeviceBuffer q = random_bf16(std::size_t{1} * b * s * h * d, rng).device,
                     k = random_bf16(std::size_t{1} * b * s * h * d, rng).device;
  DeviceBuffer out(std::size_t{1} * b * s * h * d * 2), lse(std::size_t{1} * b * h * s * 4),
      cu(3 * 4);
  const int cu_host[3] = {0, 300, b * s};
  cu.upload(cu_host, sizeof cu_host);
  Stream stream;
  auto call = [&](int i) {
    attention::ForwardOptions o;
    o.causal = i % 2;
    if (i % 4 < 2) {
      attention::forward(
          TensorView(q.data(), kBf16, {b, s, h, d}), TensorView(k.data(), kBf16, {b, s, h, d}),
          TensorView(k.data(), kBf16, {b, s, h, d}), TensorView(out.data(), kBf16, {b, s, h, d}),
          TensorView(lse.data(), DType::Float32, {b, h, s}), o, stream.handle());
    } else {
      const TensorView cu_view(cu.data(), DType::Int32, {3});
      attention::forward_varlen(
          TensorView(q.data(), kBf16, {b * s, h, d}), TensorView(k.data(), kBf16, {b * s, h, d}),
          TensorView(k.data(), kBf16, {b * s, h, d}), TensorView(out.data(), kBf16, {b * s, h, d}),
          TensorView(lse.data(), DType::Float32, {h, b * s}), {cu_view, cu_view, cu_host, cu_host},
          o, stream.handle());
    }
  };
  for (int i = 0; i < 4; ++i)
    call(i);
  stream.synchronize();
  std::size_t free_before = 0, free_after = 0, total = 0;
  memory_info(&free_before, &total);
  for (int i = 0; i < 1000; ++i)
    call(i);
  stream.synchronize();
  memory_info(&free_after, &total);
  EXPECT_EQ(free_after, free_before) << "device memory changed over 1000 calls";
}

DLTensor dl(void* data, DLDataType type, int ndim, std::int64_t* shape) {
  return DLTensor{data, {kDLCUDA, 0}, ndim, type, shape, nullptr, 0};
}

// kjit_attention_forward(_varlen) on the GPU write the C++ API's output and LSE bit for bit.
TEST(AttentionForwardScale, CAbiMatchesCppApi) {
  KJIT_REQUIRE_GPU();
  std::mt19937 rng(std::random_device{}());
  const int b = 2, s = 333, hq = 8, hk = 2, d = 64;
  const DeviceBuffer q = random_bf16(std::size_t{1} * b * s * hq * d, rng).device,
                     k = random_bf16(std::size_t{1} * b * s * hk * d, rng).device,
                     v = random_bf16(std::size_t{1} * b * s * hk * d, rng).device;
  DeviceBuffer out_c(q.size()), out_cpp(q.size()), lse_c(std::size_t{1} * b * hq * s * 4),
      lse_cpp(lse_c.size()), cu(3 * 4);
  const std::int32_t cu_host[3] = {0, 100, b * s};
  cu.upload(cu_host, sizeof cu_host);
  const DLDataType bf16{kDLBfloat, 16, 1}, f32{kDLFloat, 32, 1}, i32{kDLInt, 32, 1};
  for (bool varlen : {false, true}) {
    SCOPED_TRACE(varlen ? "varlen" : "batched");
    for (DeviceBuffer* buf : {&out_c, &out_cpp, &lse_c, &lse_cpp})
      buf->fill_bytes(0xff);
    Stream stream;
    attention::ForwardOptions o;
    o.causal = true;
    o.softmax_scale = 0.1f;
    if (!varlen) {
      std::int64_t qs[4] = {b, s, hq, d}, ks[4] = {b, s, hk, d}, ls[3] = {b, hq, s};
      const DLTensor tq = dl(q.data(), bf16, 4, qs), tk = dl(k.data(), bf16, 4, ks),
                     tv = dl(v.data(), bf16, 4, ks), to = dl(out_c.data(), bf16, 4, qs),
                     tl = dl(lse_c.data(), f32, 3, ls);
      ASSERT_EQ(kjit_attention_forward(&tq, &tk, &tv, &to, &tl, 0.1f, 1, stream.handle()),
                KJIT_SUCCESS)
          << kjit_last_error();
      attention::forward(
          TensorView(q.data(), kBf16, {b, s, hq, d}), TensorView(k.data(), kBf16, {b, s, hk, d}),
          TensorView(v.data(), kBf16, {b, s, hk, d}),
          TensorView(out_cpp.data(), kBf16, {b, s, hq, d}),
          TensorView(lse_cpp.data(), DType::Float32, {b, hq, s}), o, stream.handle());
    } else {
      std::int64_t qs[3] = {b * s, hq, d}, ks[3] = {b * s, hk, d}, ls[2] = {hq, b * s}, cs[1] = {3};
      const DLTensor tq = dl(q.data(), bf16, 3, qs), tk = dl(k.data(), bf16, 3, ks),
                     tv = dl(v.data(), bf16, 3, ks), to = dl(out_c.data(), bf16, 3, qs),
                     tl = dl(lse_c.data(), f32, 2, ls), tc = dl(cu.data(), i32, 1, cs);
      ASSERT_EQ(kjit_attention_forward_varlen(&tq, &tk, &tv, &to, &tl, &tc, &tc, cu_host, cu_host,
                                              0.1f, 1, stream.handle()),
                KJIT_SUCCESS)
          << kjit_last_error();
      const TensorView cu_view(cu.data(), DType::Int32, {3});
      attention::forward_varlen(TensorView(q.data(), kBf16, {b * s, hq, d}),
                                TensorView(k.data(), kBf16, {b * s, hk, d}),
                                TensorView(v.data(), kBf16, {b * s, hk, d}),
                                TensorView(out_cpp.data(), kBf16, {b * s, hq, d}),
                                TensorView(lse_cpp.data(), DType::Float32, {hq, b * s}),
                                {cu_view, cu_view, cu_host, cu_host}, o, stream.handle());
    }
    stream.synchronize();
    std::vector<std::uint16_t> a(out_c.size() / 2), c(a.size());
    out_c.download(a.data(), out_c.size());
    out_cpp.download(c.data(), out_cpp.size());
    EXPECT_EQ(a, c);
    std::vector<float> la(lse_c.size() / 4), lc(la.size());
    lse_c.download(la.data(), lse_c.size());
    lse_cpp.download(lc.data(), lse_cpp.size());
    EXPECT_EQ(0, std::memcmp(la.data(), lc.data(), la.size() * 4));
    EXPECT_NE(a[0], 0xffff) << "output was not written";
  }
}

}  // namespace
}  // namespace kjit::test

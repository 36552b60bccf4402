// Attention input validation runs on the host before any device work: each bad input throws
// InvalidArgument naming the argument.
#include <gtest/gtest.h>

#include <cmath>

#include "kjit/c_api.h"
#include "kjit/error.hpp"
#include "ops/attention/flash_forward.hpp"

namespace kjit::test {
namespace {

using ops::FlashForward;

void* fake(std::uintptr_t offset = 0) {
  return reinterpret_cast<void*>(0x200000 + offset);
}

struct Batched {
  TensorView q{fake(), DType::BFloat16, {2, 100, 8, 128}};
  TensorView k{fake(), DType::BFloat16, {2, 120, 2, 128}};
  TensorView v{fake(), DType::BFloat16, {2, 120, 2, 128}};
  TensorView out{fake(), DType::BFloat16, {2, 100, 8, 128}};
  TensorView lse{fake(), DType::Float32, {2, 8, 100}};
};

std::string error_of(const Batched& b) {
  try {
    FlashForward::validate(b.q, b.k, b.v, b.out, b.lse, {});
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

void expect_error(const Batched& b, const std::string& needle) {
  const std::string e = error_of(b);
  EXPECT_NE(e.find(needle), std::string::npos) << "expected \"" << needle << "\" in: " << e;
}

TEST(AttentionValidation, AcceptsGqaAndFillsTheParams) {
  Batched b;
  EXPECT_EQ(error_of(b), "");
  const KjitFlashParams p = FlashForward::validate(b.q, b.k, b.v, b.out, b.lse, {}).args;
  EXPECT_EQ(p.group, 4);
  EXPECT_EQ(p.q_row_stride, 8 * 128);
  EXPECT_EQ(p.lse_head_stride, 100);
  EXPECT_NEAR(p.scale_log2, 1.4426950408889634 / std::sqrt(128.0), 1e-7);
}

TEST(AttentionValidation, NamesEachBadInput) {
  Batched b;
  b.k.dtype = DType::Float16;
  expect_error(b, "k must have the dtype of q");
  b = Batched{};
  b.q = TensorView(fake(), DType::BFloat16, {2, 100, 8, 80});
  b.out = b.q;
  expect_error(b, "head dim 80");
  b = Batched{};
  b.k = TensorView(fake(), DType::BFloat16, {2, 120, 3, 128});
  b.v = b.k;
  expect_error(b, "multiple of key/value heads");
  b = Batched{};
  b.q.data = fake(8);
  expect_error(b, "q must be 16-byte aligned");
  b = Batched{};
  b.v = TensorView(fake(), DType::BFloat16, {2, 120, 2, 128}, {120 * 2 * 128, 2 * 128 + 4, 128, 1});
  expect_error(b, "not a multiple of 16 bytes");
  b = Batched{};
  b.out.data = nullptr;
  expect_error(b, "out is a null pointer");
  b = Batched{};
  b.lse = TensorView(fake(), DType::Float32, {2, 8, 99});
  expect_error(b, "lse must be fp32 [2, 8, 100]");
  b = Batched{};
  b.q = TensorView(fake(), DType::Float32, {2, 100, 8, 128});
  b.k.dtype = b.v.dtype = b.out.dtype = DType::Float32;
  expect_error(b, "q must be fp16 or bf16");
}

TEST(AttentionValidation, EmptyTensorsMayHaveNullPointers) {
  // Sk = 0: K and V hold no element, and torch gives NULL data for them.
  Batched b;
  b.k = TensorView(nullptr, DType::BFloat16, {2, 0, 2, 128});
  b.v = b.k;
  EXPECT_EQ(error_of(b), "");
  EXPECT_EQ(FlashForward::validate(b.q, b.k, b.v, b.out, b.lse, {}).problem.seqlen_k, 0);
  // Sq = 0: nothing to compute at all.
  b = Batched{};
  b.q = TensorView(nullptr, DType::BFloat16, {2, 0, 8, 128});
  b.out = b.q;
  b.lse = TensorView(nullptr, DType::Float32, {2, 8, 0});
  EXPECT_EQ(error_of(b), "");
  EXPECT_TRUE(FlashForward::validate(b.q, b.k, b.v, b.out, b.lse, {}).problem.empty());
  // A tensor with elements still may not be NULL.
  b = Batched{};
  b.k.data = nullptr;
  expect_error(b, "k is a null pointer");
}

TEST(AttentionCApi, EmptyKeysPassValidationWithNullData) {
  int64_t q_shape[] = {2, 100, 8, 128}, kv_shape[] = {2, 0, 2, 128};
  DLTensor q{fake(), {kDLCUDA, 0}, 4, {kDLBfloat, 16, 1}, q_shape, nullptr, 0};
  DLTensor k{nullptr, {kDLCUDA, 0}, 4, {kDLBfloat, 16, 1}, kv_shape, nullptr, 0};
  // Validation passes; without a GPU the op then stops at the driver, not at "k is a null pointer".
  const kjit_status s = kjit_attention_forward(&q, &k, &k, &q, nullptr, 0.f, 1, nullptr);
  EXPECT_EQ(std::string(kjit_last_error()).find("null pointer"), std::string::npos)
      << kjit_last_error();
  EXPECT_NE(s, KJIT_ERROR_INVALID_ARGUMENT) << kjit_last_error();
}

TEST(AttentionCApi, SizeOneDimsTakeAnyStride) {
  // B = 1 and one key/value head (MQA): what PyTorch <= 2.9 exported as stride 1 or any other
  // producer sets, e.g. an odd stride that no alignment rule would take on a stepped dim.
  int64_t q_shape[] = {1, 100, 8, 128}, kv_shape[] = {1, 120, 1, 128}, lse_shape[] = {1, 8, 100};
  int64_t q_strides[] = {1, 1024, 128, 1}, kv_strides[] = {3, 128, 7, 1},
          lse_strides[] = {5, 100, 1};
  DLTensor q{fake(), {kDLCUDA, 0}, 4, {kDLBfloat, 16, 1}, q_shape, q_strides, 0};
  DLTensor k{fake(), {kDLCUDA, 0}, 4, {kDLBfloat, 16, 1}, kv_shape, kv_strides, 0};
  DLTensor lse{fake(), {kDLCUDA, 0}, 3, {kDLFloat, 32, 1}, lse_shape, lse_strides, 0};
  // Validation passes; without a GPU the op then stops at the driver.
  const kjit_status s = kjit_attention_forward(&q, &k, &k, &q, &lse, 0.f, 1, nullptr);
  EXPECT_NE(s, KJIT_ERROR_INVALID_ARGUMENT) << kjit_last_error();
  // The same strides on dims of more than one entry are refused.
  int64_t k2_shape[] = {2, 120, 1, 128}, k2_strides[] = {3, 128, 128, 1};
  DLTensor k2{fake(), {kDLCUDA, 0}, 4, {kDLBfloat, 16, 1}, k2_shape, k2_strides, 0};
  int64_t q2_shape[] = {2, 100, 8, 128};
  DLTensor q2{fake(), {kDLCUDA, 0}, 4, {kDLBfloat, 16, 1}, q2_shape, nullptr, 0};
  EXPECT_EQ(kjit_attention_forward(&q2, &k2, &k2, &q2, nullptr, 0.f, 1, nullptr),
            KJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kjit_last_error()).find("stride 0"), std::string::npos)
      << kjit_last_error();
}

TEST(AttentionCApi, ATensorWithElementsButNoDataIsRefused) {
  // A NULL DLTensor pointer is an absent optional tensor; one with elements and NULL data is
  // an error, not taken for absent.
  int64_t q_shape[] = {2, 100, 8, 128}, kv_shape[] = {2, 120, 2, 128}, lse_shape[] = {2, 8, 100};
  DLTensor q{fake(), {kDLCUDA, 0}, 4, {kDLBfloat, 16, 1}, q_shape, nullptr, 0};
  DLTensor k{fake(), {kDLCUDA, 0}, 4, {kDLBfloat, 16, 1}, kv_shape, nullptr, 0};
  DLTensor lse{nullptr, {kDLCUDA, 0}, 3, {kDLFloat, 32, 1}, lse_shape, nullptr, 0};
  EXPECT_EQ(kjit_attention_forward(&q, &k, &k, &q, &lse, 0.f, 1, nullptr),
            KJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kjit_last_error()).find("lse has 1600 elements but no data"),
            std::string::npos)
      << kjit_last_error();
}

TEST(AttentionValidation, LseStridesMustNotBeNegative) {
  Batched b;
  b.lse = TensorView(fake(), DType::Float32, {2, 8, 100}, {-800, 100, 1});
  expect_error(b, "lse has a negative stride");
}

TEST(AttentionValidation, VarlenSeqlensAreCheckedOnTheHostCopy) {
  const TensorView q(fake(), DType::Float16, {10, 4, 64}), k(fake(), DType::Float16, {12, 4, 64});
  const TensorView out = q, lse(fake(), DType::Float32, {4, 10});
  auto error = [&](std::vector<std::int32_t> cq, std::vector<std::int32_t> ck,
                   DType type = DType::Int32) {
    attention::Varlen s{TensorView(fake(), type, {static_cast<std::int64_t>(cq.size())}),
                        TensorView(fake(), type, {static_cast<std::int64_t>(ck.size())}), cq.data(),
                        ck.data()};
    try {
      FlashForward::validate_varlen(q, k, k, out, lse, s, {});
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(error({0, 4, 10}, {0, 0, 12}), "");
  EXPECT_NE(error({0, 4, 10}, {0, 0, 12}, DType::Int64).find("must be int32"), std::string::npos);
  EXPECT_NE(error({0, 6, 4, 10}, {0, 1, 2, 12}).find("non-decreasing"), std::string::npos);
  EXPECT_NE(error({0, 4, 9}, {0, 0, 12}).find("cu_seqlens_q[B] = 9 but the tensor holds 10"),
            std::string::npos);
  EXPECT_NE(error({0, 4, 10}, {0, 12}).find("both must be B + 1"), std::string::npos);
  EXPECT_NE(error({1, 4, 10}, {0, 0, 12}).find("[0] must be 0"), std::string::npos);
  attention::Varlen no_host{TensorView(fake(), DType::Int32, {3}),
                            TensorView(fake(), DType::Int32, {3}), nullptr, nullptr};
  EXPECT_THROW(FlashForward::validate_varlen(q, k, k, out, lse, no_host, {}), InvalidArgument);
}

TEST(AttentionCApi, ReportsInvalidArgumentsWithAMessage) {
  int64_t q_shape[] = {2, 100, 8, 80};  // head dim 80 is not supported
  int64_t kv_shape[] = {2, 120, 2, 80};
  DLTensor q{fake(), {kDLCUDA, 0}, 4, {kDLBfloat, 16, 1}, q_shape, nullptr, 0};
  DLTensor k{fake(), {kDLCUDA, 0}, 4, {kDLBfloat, 16, 1}, kv_shape, nullptr, 0};
  EXPECT_EQ(kjit_attention_forward(&q, &k, &k, &q, nullptr, 0.f, 1, nullptr),
            KJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kjit_last_error()).find("head dim 80"), std::string::npos)
      << kjit_last_error();
  EXPECT_EQ(kjit_attention_forward(&q, nullptr, &k, &q, nullptr, 0.f, 0, nullptr),
            KJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kjit_last_error()).find("k is NULL"), std::string::npos);
  int64_t packed_q[] = {10, 4, 64}, packed_k[] = {12, 4, 64}, cu_shape[] = {3};
  DLTensor pq{fake(), {kDLCUDA, 0}, 3, {kDLFloat, 16, 1}, packed_q, nullptr, 0};
  DLTensor pk{fake(), {kDLCUDA, 0}, 3, {kDLFloat, 16, 1}, packed_k, nullptr, 0};
  DLTensor cu{fake(), {kDLCUDA, 0}, 1, {kDLInt, 32, 1}, cu_shape, nullptr, 0};
  const int32_t host_q[] = {0, 4, 11}, host_k[] = {0, 0, 12};  // 11 != 10 tokens
  EXPECT_EQ(kjit_attention_forward_varlen(&pq, &pk, &pk, &pq, nullptr, &cu, &cu, host_q, host_k,
                                          0.f, 1, nullptr),
            KJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kjit_last_error()).find("cu_seqlens_q[B] = 11"), std::string::npos)
      << kjit_last_error();
}

}  // namespace
}  // namespace kjit::test

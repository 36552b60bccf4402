// merge_states on the CPU: the fp64 reference on hand-computed cases, input validation (which
// needs no GPU: it runs before any device work), the C ABI's status codes.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kjit/c_api.h"
#include "kjit/error.hpp"
#include "kjit/merge_states.hpp"
#include "ops/merge_states/merge_states.hpp"
#include "tests/reference/merge_states_reference.hpp"

namespace kjit::test {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(MergeStatesReference, HandComputedCases) {
  // Two parts, D = 2, three rows: equal weights, one part empty, both empty.
  const std::vector<double> parts = {1, 2, 5, 6, 9, 9,   // part 0, rows 0..2
                                     3, 4, 7, 8, 1, 1};  // part 1
  const std::vector<double> lse = {0.0, -kInf, -kInf,    // part 0
                                   0.0, 1.5,   -kInf};   // part 1
  const reference::MergedStates m = reference::merge_states(parts, lse, 2, 3, 2);
  EXPECT_DOUBLE_EQ(m.out[0], 2.0);  // (1 + 3) / 2
  EXPECT_DOUBLE_EQ(m.out[1], 3.0);
  EXPECT_DOUBLE_EQ(m.lse[0], std::log(2.0));
  EXPECT_DOUBLE_EQ(m.out[2], 7.0);  // part 0 saw nothing
  EXPECT_DOUBLE_EQ(m.out[3], 8.0);
  EXPECT_DOUBLE_EQ(m.lse[1], 1.5);
  EXPECT_EQ(m.out[4], 0.0);  // nobody saw anything: 0, -inf, never NaN
  EXPECT_EQ(m.out[5], 0.0);
  EXPECT_TRUE(std::isinf(m.lse[2]) && m.lse[2] < 0);
}

TEST(MergeStatesReference, WeightsFollowTheLse) {
  // lse 0 and log(3): weights 1/4 and 3/4.
  const reference::MergedStates m = reference::merge_states({4, 8}, {0.0, std::log(3.0)}, 2, 1, 1);
  EXPECT_NEAR(m.out[0], 0.25 * 4 + 0.75 * 8, 1e-12);
  EXPECT_NEAR(m.lse[0], std::log(4.0), 1e-12);
}

// Fake, well-aligned addresses: validation never dereferences them.
void* fake(std::uintptr_t offset = 0) {
  return reinterpret_cast<void*>(0x100000 + offset);
}

struct Views {
  TensorView parts{fake(), DType::BFloat16, {4, 10, 8, 512}};
  TensorView lse{fake(), DType::Float32, {4, 10, 8}};
  TensorView out{fake(), DType::BFloat16, {10, 8, 512}};
  TensorView out_lse{fake(), DType::Float32, {10, 8}};
};

using ops::MergeStates;

std::string error_of(const Views& v) {
  try {
    MergeStates::validate(v.parts, v.lse, v.out, v.out_lse);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "";
}

TEST(MergeStatesValidation, AcceptsAGoodProblem) {
  Views v;
  EXPECT_EQ(error_of(v), "");
  const auto call = MergeStates::validate(v.parts, v.lse, v.out, v.out_lse);
  EXPECT_EQ(call.problem.parts, 4);
  EXPECT_EQ(call.problem.rows, 80);
  EXPECT_EQ(call.problem.alignment, 16);
  EXPECT_EQ(call.args.part_stride, 10 * 8 * 512);
}

TEST(MergeStatesValidation, NamesTheBadArgument) {
  auto expect = [](const Views& v, const std::string& needle) {
    const std::string e = error_of(v);
    EXPECT_NE(e.find(needle), std::string::npos) << "expected \"" << needle << "\" in: " << e;
  };
  Views v;
  v.out.dtype = DType::Float16;
  expect(v, "out must have the dtype of parts");
  v = Views{};
  v.parts = TensorView(fake(), DType::BFloat16, {4, 10, 8, 48});
  v.out = TensorView(fake(), DType::BFloat16, {10, 8, 48});
  expect(v, "head dim");
  v = Views{};
  v.parts = TensorView(fake(), DType::Int32, {4, 10, 8, 512});
  expect(v, "parts must be fp16, bf16 or fp32");
  v = Views{};
  v.lse.dtype = DType::BFloat16;
  expect(v, "parts_lse must be fp32");
  v = Views{};
  v.lse = TensorView(fake(), DType::Float32, {4, 10, 7});
  expect(v, "parts_lse must be [N, T, H] = [4, 10, 8]");
  v = Views{};
  v.out = TensorView(fake(), DType::BFloat16, {10, 8, 512}, {8 * 1024, 1024, 2});
  expect(v, "out must be contiguous in its last dim");
  v = Views{};
  v.parts.data = nullptr;
  expect(v, "parts is a null pointer");
  v = Views{};
  v.parts.data = fake(1);
  expect(v, "aligned");
  v = Views{};
  v.parts = TensorView(fake(), DType::BFloat16, {0, 10, 8, 512});
  expect(v, "number of parts");
  v = Views{};
  v.parts = TensorView(fake(), DType::BFloat16, {4, 10, 8});
  expect(v, "parts must be 4-D");
}

TEST(MergeStatesValidation, UnalignedRowsNarrowTheVectorInsteadOfFailing) {
  Views v;
  v.parts.data = fake(4);  // 4-byte aligned rows: 2 bf16 per access at most
  const MergeStates::Problem p = MergeStates::validate(v.parts, v.lse, v.out, v.out_lse).problem;
  EXPECT_EQ(p.alignment, 4);
  const MergeStates::Config c = MergeStates::default_config(p, "sm_90a");
  EXPECT_EQ(c.vec, 2);
  EXPECT_TRUE(MergeStates::valid(c, p, "sm_90a"));
  EXPECT_FALSE(MergeStates::valid({8, 32, 8}, p, "sm_90a"));
}

TEST(MergeStatesValidation, DefaultIsValidForEveryShippedShape) {
  for (DType dtype : {DType::Float16, DType::BFloat16, DType::Float32}) {
    for (std::int64_t dim = 64; dim <= 1024; dim += 8) {
      for (std::int64_t align : {2, 4, 8, 16}) {
        if (align < static_cast<std::int64_t>(dtype_size(dtype))) continue;
        const MergeStates::Problem p{dtype, dim, 4, 1000, align};
        const auto c = MergeStates::default_config(p, "sm_90a");
        EXPECT_TRUE(MergeStates::valid(c, p, "sm_90a"))
            << dtype_name(dtype) << " D=" << dim << " align=" << align;
      }
    }
  }
}

TEST(MergeStatesCApi, ReportsInvalidArgumentsWithAMessage) {
  int64_t shape4[] = {2, 3, 4, 100};  // head dim 100 is not a multiple of 8
  int64_t shape3[] = {2, 3, 4};
  int64_t out_shape[] = {3, 4, 100};
  DLTensor parts{fake(), {kDLCUDA, 0}, 4, {kDLBfloat, 16, 1}, shape4, nullptr, 0};
  DLTensor lse{fake(), {kDLCUDA, 0}, 3, {kDLFloat, 32, 1}, shape3, nullptr, 0};
  DLTensor out{fake(), {kDLCUDA, 0}, 3, {kDLBfloat, 16, 1}, out_shape, nullptr, 0};
  EXPECT_EQ(kjit_merge_states(&parts, &lse, &out, nullptr, nullptr), KJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kjit_last_error()).find("head dim"), std::string::npos)
      << kjit_last_error();
  EXPECT_EQ(kjit_merge_states(nullptr, &lse, &out, nullptr, nullptr), KJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kjit_last_error()).find("parts is NULL"), std::string::npos);
  DLTensor host = parts;
  host.device = {kDLCPU, 0};
  EXPECT_EQ(kjit_merge_states(&host, &lse, &out, nullptr, nullptr), KJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kjit_last_error()).find("not in CUDA device memory"), std::string::npos);
}

}  // namespace
}  // namespace kjit::test

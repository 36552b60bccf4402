// The MoE router's input rules, on the host (fake device pointers: validation does no device
// work): shapes, dtypes, top-k and group rules, each refusal naming what is wrong.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>

#include "kjit/error.hpp"
#include "ops/moe/router.hpp"

namespace kjit::test {
namespace {

void* fake(std::uintptr_t offset = 0) {
  return reinterpret_cast<void*>(0x200000 + offset);
}

struct Route {
  TensorView logits{fake(), DType::Float32, {10, 64}};
  TensorView bias{fake(), DType::Float32, {64}};
  TensorView ids{fake(), DType::Int32, {10, 4}};
  TensorView weights{fake(), DType::Float32, {10, 4}};
  moe::RouterOptions options{true, 4, 1, 1, true, 1.8f};
  ops::Call<ops::MoeRouter> check() const {
    return ops::MoeRouter::validate(logits, bias, ids, weights, options);
  }
};

void expect_refused(const Route& r, const std::string& says) {
  try {
    r.check();
    ADD_FAILURE() << "accepted; expected an error saying \"" << says << "\"";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
  }
}

TEST(MoeRouterValidation, AcceptsGlmAndDeepSeekRouters) {
  Route r;
  const auto call = r.check();
  EXPECT_EQ(call.problem.experts, 64);
  EXPECT_EQ(call.problem.top_k, 4);
  EXPECT_TRUE(call.problem.sigmoid);
  EXPECT_FLOAT_EQ(call.args.scaling, 1.8f);
  Route d;
  d.logits = TensorView(fake(), DType::BFloat16, {10, 256});
  d.bias = TensorView(fake(), DType::Float32, {256});
  d.ids = TensorView(fake(), DType::Int32, {10, 8});
  d.weights = TensorView(fake(), DType::Float32, {10, 8});
  d.options = {true, 8, 8, 4, true, 2.5f};
  EXPECT_NO_THROW(d.check());
  d.bias = TensorView();  // no bias
  EXPECT_NO_THROW(d.check());
}

TEST(MoeRouterValidation, RefusesBadTopKGroupsAndTensors) {
  Route r;
  r.options.top_k = 65;
  r.ids = TensorView(fake(), DType::Int32, {10, 65});
  r.weights = TensorView(fake(), DType::Float32, {10, 65});
  expect_refused(r, "top_k must be 1 to min(32, E = 64)");
  r = Route();
  r.options.groups = 3;
  expect_refused(r, "groups (3) must divide E (64)");
  r = Route();
  r.options.groups = 8;
  r.options.topk_groups = 9;
  expect_refused(r, "topk_groups (9)");
  r = Route();
  r.options.groups = 16;
  r.options.topk_groups = 1;  // 4 experts allowed, top-4: fine; top-5 is not
  EXPECT_NO_THROW(r.check());
  r.options.top_k = 5;
  r.ids = TensorView(fake(), DType::Int32, {10, 5});
  r.weights = TensorView(fake(), DType::Float32, {10, 5});
  expect_refused(r, "top_k 5 is more than the 4 experts of the 1 kept groups");
  r = Route();
  r.ids = TensorView(fake(), DType::Int64, {10, 4});
  expect_refused(r, "ids must be int32 [10, 4]");
  r = Route();
  r.weights = TensorView(fake(), DType::Float32, {9, 4});
  expect_refused(r, "weights must be fp32 [10, 4]");
  r = Route();
  r.bias = TensorView(fake(), DType::Float32, {63});
  expect_refused(r, "bias must be contiguous fp32 [64]");
  r = Route();
  r.logits = TensorView(fake(), DType::Int32, {10, 64});
  expect_refused(r, "logits must be fp32, bf16 or fp16");
  r = Route();
  r.logits = TensorView(fake(), DType::Float32, {10, 2000});
  expect_refused(r, "1 to 1024");
  r = Route();
  r.options.scaling = std::numeric_limits<float>::infinity();
  expect_refused(r, "scaling must be finite");
}

}  // namespace
}  // namespace kjit::test

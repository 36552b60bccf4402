// The offloaded MoE stack's refusals, all before it touches a device (so here, without one): a
// cache smaller than top_k or larger than the experts, pinned experts that fill it, layers of
// different shapes, the replay-only policy, prefetch counts out of range. The stack itself runs in
// tests/gpu/expert_offload_test.cpp.
#include <gtest/gtest.h>

#include <vector>

#include "kjit/error.hpp"
#include "kjit/expert_offload.hpp"

namespace kjit::moe {
namespace {

// Shapes only: the checks read no data.
LayerWeights layer(std::int64_t experts, std::int64_t hidden = 128, std::int64_t inter = 64) {
  return {TensorView(nullptr, DType::BFloat16, {experts, 2 * inter, hidden}),
          TensorView(nullptr, DType::BFloat16, {experts, hidden, inter}), TensorView()};
}

void expect_refused(const std::vector<LayerWeights>& layers, int top_k,
                    const OffloadOptions& offload, const char* says) {
  LayerOptions options;
  options.router.top_k = top_k;
  try {
    OffloadedMoe stack(layers, options, offload);
    ADD_FAILURE() << "accepted; expected a refusal saying \"" << says << "\"";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
  }
}

TEST(ExpertOffload, RefusesBadStacksBeforeAnyDeviceWork) {
  const std::vector<LayerWeights> two{layer(16), layer(16)};
  OffloadOptions o;
  o.slots = 3;
  expect_refused(two, 4, o, "slots a layer must be between top_k (4)");  // smaller than top_k
  o.slots = 17;
  expect_refused(two, 4, o, "and the experts (16)");
  o.slots = 4;
  expect_refused({}, 4, o, "no layers");
  expect_refused({layer(16), layer(16, 256)}, 4, o, "layer 1's weights");
  o.pinned = {{0, 1}};
  expect_refused(two, 4, o, "pinned experts for 1 layers, the stack has 2");
  o.pinned = {{0, 1, 2, 3}, {}};
  expect_refused(two, 4, o, "4 pinned experts leave none of its 4 slots");
  o.pinned = {{0}, {16}};
  expect_refused(two, 4, o, "outside 0..15");
  o.pinned.clear();
  o.policy = CachePolicy::Optimal;
  expect_refused(two, 4, o, "needs the future");
  o.policy = CachePolicy::Lfu;
  o.prefetch = 17;
  expect_refused(two, 4, o, "prefetch 17");
  o.prefetch = 0;
  o.history = 0;
  expect_refused(two, 4, o, "history 0");
}

}  // namespace
}  // namespace kjit::moe

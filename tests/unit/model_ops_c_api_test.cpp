// The C ABI of the MLA, MoE, expert offload and zigzag ops, on the host (fake device pointers:
// every call here is refused by validation, before any device work): each refusal comes back as
// KJIT_ERROR_INVALID_ARGUMENT with kjit's message, NULL where a tensor is required is named, and
// the layout's capacity matches the C++ API's.
#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "kjit/c_api.h"
#include "kjit/mla.hpp"
#include "kjit/moe.hpp"
#include "tests/support/dl_tensor.hpp"

namespace kjit::test {
namespace {

void* fake(std::uintptr_t offset = 0) {
  return reinterpret_cast<void*>(0x200000 + offset);
}

// A DLTensor over a fake device pointer (compact strides), and the view it borrows its shape
// from.
struct Tensor {
  Tensor(DType dtype, std::initializer_list<std::int64_t> shape)
      : view(fake(), dtype, shape), t(dl(view)) {}
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;
  TensorView view;
  DLTensor t;
};

constexpr DType kBf16 = DType::BFloat16, kF32 = DType::Float32, kI32 = DType::Int32;

void expect_refused(kjit_status status, const std::string& says) {
  EXPECT_EQ(status, KJIT_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kjit_last_error()).find(says), std::string::npos) << kjit_last_error();
}

TEST(ModelOpsCApi, MlaDecodeRefusesABadHeadDim) {
  const Tensor q(kBf16, {2, 1, 20, 512}), cache(kBf16, {4, 64, 576}), table(kI32, {2, 2}),
      lengths(kI32, {2}), out(kBf16, {2, 1, 20, 512});
  const std::int32_t host_table[] = {0, 1, 2, 3}, host_lengths[] = {100, 10};
  expect_refused(kjit_mla_decode(&q.t, &cache.t, &table.t, host_table, &lengths.t, host_lengths,
                                 &out.t, nullptr, 0.0625f, nullptr),
                 "576");
  expect_refused(kjit_mla_decode(&q.t, nullptr, &table.t, host_table, &lengths.t, host_lengths,
                                 &out.t, nullptr, 0.f, nullptr),
                 "cache is NULL");
}

TEST(ModelOpsCApi, MoeOpsRefuseBadInputWithKjitsMessage) {
  const Tensor logits(kF32, {10, 64}), ids(kI32, {10, 4}), weights(kF32, {10, 4});
  kjit_moe_router_options options{1, 65, 1, 1, 1, 1.8f};
  expect_refused(kjit_moe_router_topk(&logits.t, nullptr, &ids.t, &weights.t, &options, nullptr),
                 "top_k must be 1 to min(32, E = 64)");
  expect_refused(kjit_moe_router_topk(&logits.t, nullptr, &ids.t, &weights.t, nullptr, nullptr),
                 "options is NULL");

  const std::int64_t rows = kjit_moe_align_capacity(40, 64, 64);
  EXPECT_EQ(rows, moe::align_capacity(40, 64, 64));
  const Tensor sorted(kI32, {rows}), blocks(kI32, {rows / 64}), counts(kI32, {64}),
      offsets(kI32, {65}), invalid(kI32, {1});
  expect_refused(kjit_moe_align(&ids.t, 64, 2000, &sorted.t, &blocks.t, &counts.t, &offsets.t,
                                &invalid.t, nullptr),
                 "block must be 1 to 1024 rows");

  const Tensor x(kBf16, {10, 20}), x_sorted(kBf16, {rows, 20}), positions(kI32, {40});
  expect_refused(kjit_moe_permute(&x.t, &sorted.t, 4, &x_sorted.t, &positions.t, nullptr),
                 "multiple of 8");
  const Tensor y(kBf16, {rows, 2048}), out(kBf16, {10, 2048}), bad_weights(kF32, {10, 3});
  expect_refused(
      kjit_moe_unpermute(&y.t, &positions.t, 4, &bad_weights.t, nullptr, &out.t, nullptr),
      "weights must be contiguous fp32 [10, 4]");

  const Tensor xs(kBf16, {1024, 2048}), gemm_blocks(kI32, {8}), w(kBf16, {64, 3072, 2048}),
      gemm_y(kBf16, {1024, 3072});
  expect_refused(
      kjit_moe_grouped_gemm(&xs.t, &gemm_blocks.t, 128, &w.t, &gemm_y.t,
                            static_cast<kjit_moe_gemm_epilogue>(7), nullptr, nullptr, nullptr),
      "unknown epilogue 7");
  expect_refused(kjit_moe_grouped_gemm(&xs.t, &gemm_blocks.t, 128, &w.t, &gemm_y.t,
                                       KJIT_MOE_GEMM_ROUTING_WEIGHTS, nullptr, nullptr, nullptr),
                 "sorted is NULL");
  expect_refused(kjit_moe_grouped_gemm(&xs.t, &gemm_blocks.t, 128, &w.t, &gemm_y.t,
                                       KJIT_MOE_GEMM_SWIGLU, nullptr, nullptr, nullptr),
                 "N / 2 after SwiGLU");

  const Tensor codes(DType::UInt8, {64, 3072, 1024}), scales(DType::UInt8, {64, 3072, 128}),
      tensor_scale(kF32, {64});
  expect_refused(
      kjit_moe_expert_gemm_fp4(&xs.t, &gemm_blocks.t, 128, 2, &codes.t, &scales.t, &tensor_scale.t,
                               &gemm_y.t, KJIT_MOE_GEMM_PLAIN, nullptr, nullptr, nullptr),
      "format must be 0 (NVFP4) or 1 (MXFP4), got 2");
  expect_refused(
      kjit_moe_expert_gemm_fp4(&xs.t, &gemm_blocks.t, 128, 0, &codes.t, &scales.t, nullptr,
                               &gemm_y.t, KJIT_MOE_GEMM_PLAIN, nullptr, nullptr, nullptr),
      "NVFP4 w's tensor_scale must be");
  expect_refused(
      kjit_moe_expert_gemm_fp4(&xs.t, &gemm_blocks.t, 128, 1, &codes.t, &scales.t, nullptr,
                               &gemm_y.t, KJIT_MOE_GEMM_PLAIN, nullptr, nullptr, nullptr),
      "w's scales must be uint8 [64, 3072, 64] (E, N, K / 32)");
  const Tensor pair_sorted(kI32, {1024});
  expect_refused(
      kjit_moe_expert_gemm_fp4(&xs.t, &gemm_blocks.t, 128, 0, &codes.t, &scales.t, &tensor_scale.t,
                               &gemm_y.t, KJIT_MOE_GEMM_PLAIN, &pair_sorted.t, nullptr, nullptr),
      "sorted given without weights");
  const Tensor mx(kBf16, {64, 8, 2048}), masked_m(kI32, {64}), my(kBf16, {64, 8, 3072});
  expect_refused(
      kjit_moe_expert_gemm_fp4_masked(&mx.t, &masked_m.t, 8, 0, nullptr, &scales.t, &tensor_scale.t,
                                      &my.t, KJIT_MOE_GEMM_PLAIN, nullptr),
      "codes is NULL");

  const Tensor probs(kF32, {10, 64}), f(kF32, {64}), p(kF32, {64}), losses(kF32, {3});
  expect_refused(kjit_moe_balance(&ids.t, &probs.t, nullptr, nullptr, 10, nullptr, 1.f, 1.f, 1e-3f,
                                  &counts.t, &f.t, &p.t, &losses.t, nullptr),
                 "losses must be contiguous fp32 [4]");
}

// The communicator and helix entry points refuse bad arguments before touching NCCL or a GPU.
TEST(ModelOpsCApi, CommunicatorAndHelixRefuseBadArguments) {
  char id[KJIT_COMM_UNIQUE_ID_BYTES] = {};
  kjit_comm* comm = reinterpret_cast<kjit_comm*>(0x1);  // must be reset to NULL on failure
  expect_refused(kjit_comm_create(id, 3, 2, -1, 0, &comm), "rank 3 is outside 0..1");
  EXPECT_EQ(comm, nullptr);
  expect_refused(kjit_comm_create(id, 0, 1, -1, -5, &comm), "timeout_ms must be 0 or more");
  expect_refused(kjit_comm_create(nullptr, 0, 1, -1, 0, &comm), "id is NULL");
  expect_refused(kjit_comm_create(id, 0, 1, -1, 0, nullptr), "comm is NULL");
  kjit_comm_destroy(nullptr);

  int begin = -1, end = -1;
  ASSERT_EQ(kjit_mla_helix_heads(20, 3, 2, &begin, &end), KJIT_SUCCESS);
  const mla::HeadRange expected = mla::helix_heads(20, 3, 2);
  EXPECT_EQ(begin, expected.begin);
  EXPECT_EQ(end, expected.end);
  expect_refused(kjit_mla_helix_heads(2, 3, 0, &begin, &end), "would leave a rank without heads");
  expect_refused(kjit_mla_helix_heads(20, 3, 0, nullptr, &end), "begin or end is NULL");

  const Tensor q(kBf16, {2, 1, 20, 576}), cache(kBf16, {4, 64, 576}), table(kI32, {2, 2}),
      lengths(kI32, {2}), out(kBf16, {2, 1, 20, 512}), lse(kF32, {2, 1, 20});
  const std::int32_t host_table[] = {0, 1, 2, 3}, host_lengths[] = {100, 10};
  expect_refused(kjit_mla_helix_decode(nullptr, &q.t, &cache.t, &table.t, host_table, &lengths.t,
                                       host_lengths, &out.t, &lse.t, 0.f, nullptr),
                 "comm is NULL");
}

// The zigzag entry points: kjit's refusals, the chunk range and rank passed through, NULL comm.
TEST(ModelOpsCApi, ZigzagRefusesBadArguments) {
  const std::int32_t host_cu[] = {0, 512, 1536};  // W = 4: chunks of 64 and 128 tokens
  const Tensor cu(kI32, {3}), gathered(kBf16, {1536, 8, 128}), early(kBf16, {768, 8, 128}),
      local(kBf16, {384, 8, 128}), q(kBf16, {384, 32, 128}), lse(kF32, {32, 384});
  expect_refused(
      kjit_zigzag_extract_kv_slice(&gathered.t, &cu.t, host_cu, 4, 0, 4, &local.t, nullptr),
      "extract_zigzag_kv_slice: destination must hold 768 rows");
  expect_refused(
      kjit_zigzag_extract_kv_slice(&gathered.t, &cu.t, host_cu, 4, 0, 9, &early.t, nullptr),
      "chunks [0, 9) must be a non-empty range inside the 2W = 8 chunks");
  expect_refused(
      kjit_zigzag_extract_kv_slice(&gathered.t, nullptr, host_cu, 4, 0, 4, &early.t, nullptr),
      "cu_seqlens is NULL");
  expect_refused(kjit_zigzag_scatter_grad(&early.t, &cu.t, host_cu, 4, 0, 4, 4, &local.t, nullptr),
                 "rank must be in [0, 4)");
  expect_refused(kjit_zigzag_scatter_grad(&early.t, &cu.t, host_cu, 3, 0, 4, 0, &local.t, nullptr),
                 "sequence 0 has 512 tokens, not a multiple of 2W = 6");
  expect_refused(kjit_zigzag_forward(nullptr, &q.t, &local.t, &local.t, &q.t, &lse.t, &cu.t,
                                     host_cu, 0.f, 1, 0, nullptr),
                 "comm is NULL");
  expect_refused(kjit_zigzag_backward(nullptr, &q.t, &local.t, &local.t, &q.t, &q.t, &lse.t, &q.t,
                                      &local.t, &local.t, &cu.t, host_cu, 0.f, 1, 0, nullptr),
                 "comm is NULL");
}

// Every tensor in host memory (a binding allocates outputs like the caller's inputs): the error
// names the first argument, not whichever the compiler converted first.
TEST(ModelOpsCApi, NamesTheFirstBadTensorInArgumentOrder) {
  const auto on_host = [](DLTensor t) {
    t.device = {kDLCPU, 0};
    return t;
  };
  const Tensor x(kBf16, {10, 64}), sorted(kI32, {256}), x_sorted(kBf16, {256, 64}),
      positions(kI32, {40});
  const DLTensor hx = on_host(x.t), hsorted = on_host(sorted.t), hx_sorted = on_host(x_sorted.t),
                 hpositions = on_host(positions.t);
  expect_refused(kjit_moe_permute(&hx, &hsorted, 4, &hx_sorted, &hpositions, nullptr),
                 "x is not in CUDA device memory");
  const Tensor q(kBf16, {1, 8, 4, 64}), out(kBf16, {1, 8, 4, 64}), lse(kF32, {1, 4, 8});
  const DLTensor hq = on_host(q.t), hout = on_host(out.t), hlse = on_host(lse.t);
  expect_refused(kjit_attention_forward(&hq, &hq, &hq, &hout, &hlse, 0.f, 1, nullptr),
                 "q is not in CUDA device memory");
}

// GLM-4.7-Flash's layer at T 10 with 8 experts: each refusal before any device work.
TEST(ModelOpsCApi, MoeLayerRefusesBadInputWithKjitsMessage) {
  const Tensor x(kBf16, {10, 2048}), logits(kF32, {10, 8}), gate_up(kBf16, {8, 3072, 2048}),
      down(kBf16, {8, 2048, 1536}), bias(kF32, {8}), out(kBf16, {10, 2048}),
      short_out(kBf16, {9, 2048}), wide_down(kBf16, {8, 2048, 1024});
  const kjit_moe_router_options glm{1, 4, 1, 1, 1, 1.8f};
  expect_refused(kjit_moe_layer(&x.t, &logits.t, &gate_up.t, &down.t, &bias.t, nullptr, nullptr, 0,
                                &out.t, nullptr),
                 "options is NULL");
  expect_refused(kjit_moe_layer(&x.t, &logits.t, &gate_up.t, &down.t, &bias.t, nullptr, &glm, 0,
                                &short_out.t, nullptr),
                 "out and shared (when given) must be [T, H]");
  expect_refused(kjit_moe_layer(&x.t, &logits.t, &gate_up.t, &down.t, &bias.t, &short_out.t, &glm,
                                0, &out.t, nullptr),
                 "out and shared (when given) must be [T, H]");
  expect_refused(kjit_moe_layer(&x.t, &logits.t, &gate_up.t, &wide_down.t, &bias.t, nullptr, &glm,
                                0, &out.t, nullptr),
                 "disagree");
  expect_refused(kjit_moe_layer(&x.t, &logits.t, &gate_up.t, &down.t, &bias.t, nullptr, &glm, 96,
                                &out.t, nullptr),
                 "block 96 is not 64, 128, 256 (FP4 weights) or 0");
  expect_refused(kjit_moe_layer(&x.t, &logits.t, &gate_up.t, &down.t, &bias.t, nullptr, &glm, 256,
                                &out.t, nullptr),
                 "block 256 is not 64, 128, 256 (FP4 weights) or 0");

  const Tensor up_codes(DType::UInt8, {8, 3072, 1024}), up_scales(DType::UInt8, {8, 3072, 128}),
      down_codes(DType::UInt8, {8, 2048, 768}), down_scales(DType::UInt8, {8, 2048, 96}),
      tensor_scale(kF32, {8});
  expect_refused(kjit_moe_layer_fp4(&x.t, &logits.t, 3, &up_codes.t, &up_scales.t, &tensor_scale.t,
                                    &down_codes.t, &down_scales.t, &tensor_scale.t, &bias.t,
                                    nullptr, &glm, 0, &out.t, nullptr),
                 "format must be 0 (NVFP4) or 1 (MXFP4), got 3");
  expect_refused(kjit_moe_layer_fp4(&x.t, &logits.t, 0, &up_codes.t, &up_scales.t, nullptr,
                                    &down_codes.t, &down_scales.t, &tensor_scale.t, &bias.t,
                                    nullptr, &glm, 0, &out.t, nullptr),
                 "NVFP4 w's tensor_scale must be");
  expect_refused(kjit_moe_layer_fp4(&x.t, &logits.t, 0, nullptr, &up_scales.t, &tensor_scale.t,
                                    &down_codes.t, &down_scales.t, &tensor_scale.t, &bias.t,
                                    nullptr, &glm, 0, &out.t, nullptr),
                 "gate_up_codes is NULL");
}

// The offloaded stack's entry points: everything refused before a device is touched (host
// weights given as device tensors, a cache smaller than top_k, bad options, NULLs).
TEST(ModelOpsCApi, MoeOffloadRefusesBadStacks) {
  Tensor up(kBf16, {16, 256, 128}), down(kBf16, {16, 128, 128});
  up.t.device.device_type = kDLCUDAHost;
  down.t.device.device_type = kDLCUDAHost;
  const DLTensor* ups[] = {&up.t, &up.t};
  const DLTensor* downs[] = {&down.t, &down.t};
  const kjit_moe_router_options glm{1, 4, 1, 1, 1, 1.8f};
  kjit_moe_offload_options o{0, 3, 0, 2, 64, nullptr, 0};
  kjit_moe_offload* stack = reinterpret_cast<kjit_moe_offload*>(fake());
  expect_refused(kjit_moe_offload_create(2, ups, downs, nullptr, &glm, 0, &o, &stack),
                 "slots a layer must be between top_k (4)");
  EXPECT_EQ(stack, nullptr);  // cleared on failure
  o.slots = 8;
  o.policy = 2;
  expect_refused(kjit_moe_offload_create(2, ups, downs, nullptr, &glm, 0, &o, &stack),
                 "policy must be 0 (LRU) or 1 (LFU)");
  o.policy = 1;
  o.predictor = 3;
  expect_refused(kjit_moe_offload_create(2, ups, downs, nullptr, &glm, 0, &o, &stack),
                 "predictor must be");
  o.predictor = 2;
  const int pinned[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8};
  o.pinned = pinned;
  o.pinned_count = 9;
  expect_refused(kjit_moe_offload_create(2, ups, downs, nullptr, &glm, 0, &o, &stack),
                 "leave none of its 8 slots");
  o.pinned_count = 0;
  expect_refused(kjit_moe_offload_create(2, ups, downs, nullptr, &glm, 0, &o, &stack),
                 "pinned and pinned_count go together");
  o.pinned = nullptr;
  expect_refused(kjit_moe_offload_create(0, ups, downs, nullptr, &glm, 0, &o, &stack),
                 "layers must be >= 1");
  expect_refused(kjit_moe_offload_create(2, ups, nullptr, nullptr, &glm, 0, &o, &stack),
                 "down is NULL");
  expect_refused(kjit_moe_offload_create(2, ups, downs, nullptr, &glm, 0, nullptr, &stack),
                 "options is NULL");
  expect_refused(kjit_moe_offload_create(2, ups, downs, nullptr, &glm, 0, &o, nullptr),
                 "stack is NULL");
  const Tensor device_up(kBf16, {16, 256, 128});
  const DLTensor* on_device[] = {&device_up.t, &device_up.t};
  expect_refused(kjit_moe_offload_create(2, on_device, downs, nullptr, &glm, 0, &o, &stack),
                 "gate_up[0] is not in host memory");
  Tensor codes(DType::UInt8, {16, 256, 64}), scales(DType::UInt8, {16, 256, 8});
  codes.t.device.device_type = kDLCUDAHost;
  scales.t.device.device_type = kDLCUDAHost;
  const DLTensor* c[] = {&codes.t, &codes.t};
  const DLTensor* sc[] = {&scales.t, &scales.t};
  expect_refused(kjit_moe_offload_create_fp4(2, 5, c, sc, nullptr, c, sc, nullptr, nullptr, &glm, 0,
                                             &o, &stack),
                 "format must be 0 (NVFP4) or 1 (MXFP4), got 5");
  expect_refused(kjit_moe_offload_layer(nullptr, 0, &up.t, &up.t, nullptr, &up.t, nullptr, nullptr),
                 "stack is NULL");
  kjit_moe_offload_stats stats;
  expect_refused(kjit_moe_offload_stats_get(nullptr, &stats), "stack is NULL");
  kjit_moe_offload_destroy(nullptr);  // ignored
}

}  // namespace
}  // namespace kjit::test

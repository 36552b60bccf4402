// The offloaded MoE stack on the GPU against the same layers with every expert resident
// (moe::layer): the outputs bit for bit, whatever the cache size (top_k slots, passes when a step
// needs more), policy, pinned experts, prefetch and weight format; and its statistics against the
// routing it recorded. Fresh random tokens and router logits each layer and step.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <vector>

#include "driver/arch.hpp"
#include "kjit/c_api.h"
#include "kjit/expert_offload.hpp"
#include "kjit/moe.hpp"
#include "tests/support/dl_tensor.hpp"
#include "tests/support/dtype_bits.hpp"
#include "tests/support/expert_weights.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/isolated_cache.hpp"

namespace kjit::test {
namespace {

using Format = ops::MoeGemm::WeightFormat;

struct OffloadCase {
  const char* name;
  Format weights;
  int tokens, slots;
  moe::CachePolicy policy;
  int prefetch;  // OffloadOptions::prefetch
  bool pin_two = false, speculative = false;
};

void PrintTo(const OffloadCase& c, std::ostream* os) {
  *os << c.name;
}

constexpr int kLayers = 3, kExperts = 16, kHidden = 128, kInter = 128, kTopK = 4, kSteps = 5;

// A device tensor's bytes in page-locked host memory, as a view of the same shape.
struct HostCopy {
  HostCopy(const TensorView& device) : buffer(bytes(device)), view(device) {
    copy_async(buffer.data(), device.data, buffer.size(), nullptr);
    synchronize(nullptr);
    view.data = buffer.data();
  }
  static std::size_t bytes(const TensorView& t) {
    return static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype);
  }
  HostBuffer buffer;
  TensorView view;
};

class ExpertOffloadTest : public IsolatedCache,
                          public ::testing::WithParamInterface<OffloadCase> {};

TEST_P(ExpertOffloadTest, MatchesTheResidentLayersBitForBit) {
  KJIT_REQUIRE_GPU();
  if (!arch::current().has_wgmma())
    GTEST_SKIP() << "the layer's GEMM needs sm_90a so far; this card is " << arch::current().name();
  const OffloadCase& c = GetParam();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "input seed " << seed);
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  const bool fp4 = c.weights != Format::kSameAsX;
  const int t = c.tokens;

  // Each layer's experts on the device (the resident reference) and in page-locked host memory.
  std::vector<ExpertWeights> gate_up, down;
  std::vector<std::unique_ptr<HostCopy>> host;  // keeps the host copies alive
  std::vector<moe::LayerWeights> resident16, offloaded16;
  std::vector<moe::Fp4LayerWeights> resident4, offloaded4;
  const auto copy = [&](const TensorView& v) {
    host.push_back(std::make_unique<HostCopy>(v));
    return host.back()->view;
  };
  for (int l = 0; l < kLayers; ++l) {
    gate_up.emplace_back(c.weights, DType::BFloat16, kExperts, 2 * kInter, kHidden, rng(),
                         1.0 / std::sqrt(kHidden));
    down.emplace_back(c.weights, DType::BFloat16, kExperts, kHidden, kInter, rng(),
                      1.0 / std::sqrt(kInter));
  }
  for (int l = 0; l < kLayers; ++l) {
    if (fp4) {
      const moe::Fp4Weights up = gate_up[l].fp4(), dn = down[l].fp4();
      resident4.push_back({up, dn, TensorView()});
      offloaded4.push_back({{up.format, copy(up.codes), copy(up.scales), copy(up.tensor_scale)},
                            {dn.format, copy(dn.codes), copy(dn.scales), copy(dn.tensor_scale)},
                            TensorView()});
    } else {
      const TensorView up = gate_up[l].view().codes, dn = down[l].view().codes;
      resident16.push_back({up, dn, TensorView()});
      offloaded16.push_back({copy(up), copy(dn), TensorView()});
    }
  }
  moe::LayerOptions options;
  options.router = moe::RouterOptions{true, kTopK, 1, 1, true, 1.8f};
  moe::OffloadOptions offload;
  offload.slots = c.slots;
  offload.policy = c.policy;
  offload.prefetch = c.prefetch;
  if (c.pin_two) offload.pinned.assign(kLayers, {0, 1});
  std::unique_ptr<moe::OffloadedMoe> stack =
      fp4 ? std::make_unique<moe::OffloadedMoe>(offloaded4, options, offload)
          : std::make_unique<moe::OffloadedMoe>(offloaded16, options, offload);

  // 16-bit stacks also through the C ABI: the same bits and statistics.
  kjit_moe_offload* c_stack = nullptr;
  std::vector<DLTensor> c_up, c_down;
  if (!fp4) {
    for (const moe::LayerWeights& l : offloaded16) {
      c_up.push_back(dl(l.gate_up));
      c_down.push_back(dl(l.down));
      c_up.back().device.device_type = c_down.back().device.device_type = kDLCUDAHost;
    }
    std::vector<const DLTensor*> up_ptrs, down_ptrs;
    for (int l = 0; l < kLayers; ++l) {
      up_ptrs.push_back(&c_up[l]);
      down_ptrs.push_back(&c_down[l]);
    }
    const kjit_moe_router_options router{1, kTopK, 1, 1, 1, 1.8f};
    std::vector<int> pinned;
    for (const std::vector<int>& p : offload.pinned)
      pinned.insert(pinned.end(), p.begin(), p.end());
    const kjit_moe_offload_options o{
        c.policy == moe::CachePolicy::Lru ? 0 : 1, c.slots,          c.prefetch, 2, offload.history,
        pinned.empty() ? nullptr : pinned.data(),  c.pin_two ? 2 : 0};
    ASSERT_EQ(kjit_moe_offload_create(kLayers, up_ptrs.data(), down_ptrs.data(), nullptr, &router,
                                      0, &o, &c_stack),
              KJIT_SUCCESS)
        << kjit_last_error();
  }
  struct Destroy {
    kjit_moe_offload* s;
    ~Destroy() { kjit_moe_offload_destroy(s); }
  } destroy{c_stack};

  Stream stream;
  DeviceBuffer dx(static_cast<std::size_t>(t) * kHidden * 2), dlogits(t * kExperts * 4),
      dref(dx.size()), dout(dx.size());
  const TensorView vx(dx.data(), DType::BFloat16, {t, kHidden}),
      vlogits(dlogits.data(), DType::Float32, {t, kExperts}),
      vref(dref.data(), DType::BFloat16, {t, kHidden}),
      vout(dout.data(), DType::BFloat16, {t, kHidden});
  std::vector<std::uint16_t> x(static_cast<std::size_t>(t) * kHidden), ref(x.size()), out(x.size());
  std::vector<float> logits(static_cast<std::size_t>(t) * kExperts);
  for (int step = 0; step < kSteps; ++step) {
    for (int l = 0; l < kLayers; ++l) {
      SCOPED_TRACE(::testing::Message() << "step " << step << " layer " << l);
      for (auto& v : x)
        v = to_bits(DType::BFloat16, normal(rng));
      for (float& v : logits)
        v = static_cast<float>(normal(rng));
      dx.upload(x.data(), dx.size());
      dlogits.upload(logits.data(), dlogits.size());
      dref.fill_bytes(0xff);
      dout.fill_bytes(0xff);
      if (fp4) {
        moe::layer(vx, vlogits, resident4[l], TensorView(), options, vref, stream.handle());
      } else {
        moe::layer(vx, vlogits, resident16[l], TensorView(), options, vref, stream.handle());
      }
      if (c.speculative) stack->prefetch_from_logits(l, vlogits, stream.handle());
      stack->layer(l, vx, vlogits, TensorView(), vout, stream.handle());
      stream.synchronize();
      dref.download(ref.data(), dref.size());
      dout.download(out.data(), dout.size());
      ASSERT_EQ(out, ref) << "the offloaded layer's output differs from the resident one's";
      if (c_stack) {
        dout.fill_bytes(0xff);
        const DLTensor lx = dl(vx), llogits = dl(vlogits), lout = dl(vout);
        if (c.speculative) {
          ASSERT_EQ(kjit_moe_offload_prefetch_from_logits(c_stack, l, &llogits, stream.handle()),
                    KJIT_SUCCESS)
              << kjit_last_error();
        }
        ASSERT_EQ(kjit_moe_offload_layer(c_stack, l, &lx, &llogits, nullptr, &lout, nullptr,
                                         stream.handle()),
                  KJIT_SUCCESS)
            << kjit_last_error();
        stream.synchronize();
        dout.download(out.data(), dout.size());
        ASSERT_EQ(out, ref) << "the C ABI's offloaded layer differs from the resident one's";
      }
    }
  }

  // The statistics against the routing the stack recorded: each layer call's distinct experts
  // are its hits plus its misses, and each miss moved one expert's bytes.
  const moe::RoutingTrace trace = stack->history();
  ASSERT_EQ(trace.records(), static_cast<std::int64_t>(kSteps) * t);
  std::int64_t distinct = 0;
  for (std::int64_t first = 0; first < trace.records(); first += t) {
    EXPECT_EQ(trace.step(first), static_cast<std::uint32_t>(first / t));
    for (int l = 0; l < kLayers; ++l) {
      std::set<int> experts;
      for (std::int64_t r = first; r < first + t; ++r)
        experts.insert(trace.choice(r, l), trace.choice(r, l) + kTopK);
      distinct += static_cast<std::int64_t>(experts.size());
    }
  }
  const moe::OffloadStats s = stack->stats();
  EXPECT_EQ(s.hits + s.misses, distinct);
  if (!c.speculative) {  // the host-side replay of the recorded routing decides alike
    const moe::ExpertCacheStats replay = moe::replay_expert_cache(trace, offload);
    EXPECT_EQ(s.hits, replay.hits);
    EXPECT_EQ(s.prefetches, replay.prefetches);
    EXPECT_EQ(s.prefetch_hits, replay.prefetch_hits);
  }
  EXPECT_EQ(s.tokens, static_cast<std::int64_t>(kSteps) * t);
  // A slot holds an expert's tiles: 16-bit gate_up and down, or FP4 codes and scales, and
  // NVFP4's per-expert tensor scales (MXFP4's are not read, so not moved).
  const std::int64_t weights = 2 * kInter * kHidden + kHidden * kInter;
  const std::int64_t expert_bytes =
      !fp4 ? weights * 2
           : weights / 2 + weights / moe::fp4_scale_block(gate_up[0].fp4().format) +
                 (c.weights == Format::kNvFp4 ? 2 * 4 : 0);
  EXPECT_EQ(s.bytes_on_demand, s.misses * expert_bytes);
  EXPECT_EQ(s.bytes_prefetched, s.prefetches * expert_bytes);
  EXPECT_LE(s.prefetch_hits + s.prefetches_wasted, s.prefetches);
  EXPECT_GE(s.stall_ms, 0.0);
  // Every load was timed: a rate within what a host -> device link can carry.
  EXPECT_GT(s.copy_ms, 0.0);
  EXPECT_GT(s.copy_gbps(), 0.1);
  EXPECT_LT(s.copy_gbps(), 1000.0);
  if (c.slots == kExperts && !c.pin_two && c.prefetch == 0) {
    // Every expert stays once loaded: only each layer's first use of an expert misses.
    std::int64_t first_uses = 0;
    for (int l = 0; l < kLayers; ++l) {
      std::set<int> seen;
      for (std::int64_t r = 0; r < trace.records(); ++r)
        seen.insert(trace.choice(r, l), trace.choice(r, l) + kTopK);
      first_uses += static_cast<std::int64_t>(seen.size());
    }
    EXPECT_EQ(s.misses, first_uses);
  }
  if (c.speculative && c.tokens * kTopK <= c.slots) {
    // The guess was the router's own logits: every expert was brought in ahead.
    EXPECT_EQ(s.misses, 0);
    EXPECT_EQ(s.prefetch_hits, s.prefetches);
  }
  if (c_stack) {
    kjit_moe_offload_stats cs{};
    ASSERT_EQ(kjit_moe_offload_stats_get(c_stack, &cs), KJIT_SUCCESS) << kjit_last_error();
    EXPECT_EQ(cs.hits, s.hits);
    EXPECT_EQ(cs.misses, s.misses);
    EXPECT_EQ(cs.prefetches, s.prefetches);
    EXPECT_EQ(cs.bytes_on_demand, s.bytes_on_demand);
    EXPECT_GT(cs.copy_ms, 0.0);
  }
  EXPECT_EQ(stack->cache_bytes(), static_cast<std::size_t>(kLayers) * c.slots * expert_bytes);
}

INSTANTIATE_TEST_SUITE_P(
    All, ExpertOffloadTest,
    ::testing::Values(
        OffloadCase{"bf16_t1_topk_slots_lru", Format::kSameAsX, 1, kTopK, moe::CachePolicy::Lru, 0},
        OffloadCase{"bf16_t16_topk_slots_passes_prefetch", Format::kSameAsX, 16, kTopK,
                    moe::CachePolicy::Lru, 2},
        OffloadCase{"bf16_t16_half_lfu_pinned_prefetch", Format::kSameAsX, 16, 8,
                    moe::CachePolicy::Lfu, 4, true},
        OffloadCase{"bf16_t4_all_resident", Format::kSameAsX, 4, kExperts, moe::CachePolicy::Lru,
                    0},
        // Room beside a step's own experts: the predictor's prefetch runs every step.
        OffloadCase{"bf16_t1_half_prefetch", Format::kSameAsX, 1, 8, moe::CachePolicy::Lru, 4},
        OffloadCase{"bf16_t1_speculative", Format::kSameAsX, 1, kTopK, moe::CachePolicy::Lru, 0,
                    false, true},
        OffloadCase{"nvfp4_t16_topk_slots_prefetch", Format::kNvFp4, 16, kTopK,
                    moe::CachePolicy::Lru, 2},
        OffloadCase{"nvfp4_t1_half_lfu", Format::kNvFp4, 1, 8, moe::CachePolicy::Lfu, 4},
        OffloadCase{"mxfp4_t8_pinned_speculative", Format::kMxFp4, 8, 12, moe::CachePolicy::Lru, 0,
                    true, true}),
    [](const ::testing::TestParamInfo<OffloadCase>& info) { return info.param.name; });

}  // namespace
}  // namespace kjit::test

// The MoE dispatch layout on the GPU against tests/reference/moe_reference's `align`: counts,
// offsets, the sorted pairs (pair order within an expert, padding T k) and every block's expert,
// exactly; out-of-range ids counted and not placed; outputs poisoned first. The op's own config,
// and each cluster size forced (the blocks of a cluster split the pairs).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "kjit/jit.hpp"
#include "kjit/moe.hpp"
#include "ops/moe/align.hpp"
#include "tests/reference/moe_reference.hpp"
#include "tests/support/forced_launch.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/isolated_cache.hpp"
#include "tests/support/moe_layout.hpp"

namespace kjit::test {
namespace {

struct AlignCase {
  const char* name;
  int tokens, top_k, experts, block;
  bool skewed = false;      // most pairs to expert 3: long runs, many empty experts
  int invalid = 0;          // ids set outside [0, E)
  int cluster = 0;          // blocks of the cluster, forced (sm_90); 0: the op's choice
  int extra_blocks = 0;     // sorted this many blocks longer than align_capacity
  bool misaligned = false;  // sorted 4 bytes past a 16-byte boundary: no 16-byte padding stores
};

void PrintTo(const AlignCase& c, std::ostream* os) {
  *os << c.name;
}

class MoeAlignTest : public SharedKernelStore, public ::testing::WithParamInterface<AlignCase> {};

TEST_P(MoeAlignTest, MatchesTheReferenceExactly) {
  KJIT_REQUIRE_GPU();
  const AlignCase& c = GetParam();
  const ops::MoeAlign::Config config{c.cluster};
  if (c.cluster > 1 && arch::current().version() < 90)
    GTEST_SKIP() << "clusters of blocks need sm_90, this GPU is " << arch::current().name();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "input seed " << seed);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> expert(0, c.experts - 1);
  const int pairs = c.tokens * c.top_k;
  std::vector<int> ids(static_cast<std::size_t>(pairs));
  for (int& e : ids)
    e = c.skewed && rng() % 4 != 0 ? std::min(3, c.experts - 1) : expert(rng);
  for (int i = 0; i < c.invalid && i < pairs; ++i)
    ids[(i * 7919) % pairs] = i % 2 ? -1 : c.experts + i;
  // The reference places the valid pairs only: give it the valid ids, remember the pair indices.
  std::vector<int> valid_ids = ids;
  for (int& e : valid_ids)
    e = e >= 0 && e < c.experts ? e : -1;

  DeviceAlignment layout(
      pairs, c.experts, c.block,
      moe::align_capacity(pairs, c.experts, c.block) + std::int64_t{c.extra_blocks} * c.block);
  const std::int64_t capacity = layout.rows;
  // The misaligned case: sorted one row into a longer buffer.
  DeviceBuffer shifted(c.misaligned ? (capacity + 1) * 4 : 0);
  moe::Alignment views = layout.views();
  DeviceBuffer& sorted = c.misaligned ? shifted : layout.sorted;
  if (c.misaligned)
    views.sorted = TensorView(static_cast<int*>(shifted.data()) + 1, DType::Int32, {capacity});
  DeviceBuffer dids(std::max<std::size_t>(ids.size() * 4, 4));
  if (!ids.empty()) dids.upload(ids.data(), ids.size() * 4);
  for (DeviceBuffer* b :
       {&sorted, &layout.block_expert, &layout.counts, &layout.offsets, &layout.invalid})
    b->fill_bytes(0xab);
  Stream stream;
  const TensorView vids(dids.data(), DType::Int32, {c.tokens, c.top_k});
  if (c.cluster) {
    const ops::Call<ops::MoeAlign> call = ops::MoeAlign::validate(vids, c.experts, c.block, views);
    ASSERT_TRUE(ops::MoeAlign::valid(config, call.problem, arch::current()));
    launch_forced(config, call, stream.handle());
  } else {
    moe::align(vids, c.experts, c.block, views, stream.handle());
  }
  stream.synchronize();
  std::vector<int> got_sorted(capacity), got_blocks(capacity / c.block), got_counts(c.experts),
      got_offsets(c.experts + 1), got_invalid(1);
  std::vector<int> got_buffer(sorted.size() / 4);
  sorted.download(got_buffer.data(), sorted.size());
  std::copy_n(got_buffer.begin() + (c.misaligned ? 1 : 0), capacity, got_sorted.begin());
  if (c.misaligned) {
    EXPECT_EQ(got_buffer[0], static_cast<int>(0xabababab)) << "the row before sorted";
  }
  layout.block_expert.download(got_blocks.data(), got_blocks.size() * 4);
  layout.counts.download(got_counts.data(), got_counts.size() * 4);
  layout.offsets.download(got_offsets.data(), got_offsets.size() * 4);
  layout.invalid.download(got_invalid.data(), 4);

  // The reference over the valid pairs (invalid ones mapped to a scratch expert, dropped after).
  std::vector<int> with_scratch = valid_ids;
  for (int& e : with_scratch)
    e = e < 0 ? c.experts : e;
  const reference::Alignment want =
      reference::align(with_scratch, c.tokens, c.top_k, c.experts + 1, c.block);
  EXPECT_EQ(got_invalid[0], c.invalid < pairs ? c.invalid : pairs);
  EXPECT_EQ(got_counts, std::vector<int>(want.counts.begin(), want.counts.end() - 1));
  EXPECT_EQ(got_offsets, std::vector<int>(want.offsets.begin(), want.offsets.end() - 1));
  const int total = want.offsets[c.experts];
  for (int i = 0; i < capacity; ++i) {
    const int expected = i < total ? want.sorted[i] : pairs;
    ASSERT_EQ(got_sorted[i], expected) << "sorted[" << i << "]";
  }
  for (int b = 0; b < capacity / c.block; ++b) {
    int expected = -1;
    for (int e = 0; e < c.experts; ++e) {
      if (want.offsets[e] <= b * c.block && b * c.block < want.offsets[e + 1]) expected = e;
    }
    ASSERT_EQ(got_blocks[b], expected) << "block " << b;
  }
}

std::vector<AlignCase> cases() {
  return {{"glm_decode", 16, 4, 64, 64},
          {"glm_prefill", 4096, 4, 64, 64},
          {"deepseek_v3", 2048, 8, 256, 128},
          {"mixtral", 1000, 2, 8, 16},
          {"skewed", 3000, 4, 64, 64, true},
          {"one_token", 1, 4, 64, 64},
          {"no_tokens", 0, 4, 64, 64},
          {"block_of_1", 500, 2, 16, 1},
          {"thousand_experts", 3000, 8, 1000, 32},
          {"invalid_ids", 700, 4, 64, 64, false, 9},
          {"one_expert_block_100", 300, 1, 1, 100},  // block > E + 1, not a power of two
          {"five_experts_block_48", 777, 3, 5, 48},
          // Clusters: chunks across blocks, experts split unevenly, some blocks with no pairs.
          {"glm_t16384_cluster8", 16384, 4, 64, 128, false, 0, 8},
          {"deepseek_t16384_cluster8", 16384, 8, 256, 64, false, 5, 8},
          {"skewed_cluster4", 20000, 4, 64, 64, true, 0, 4},
          {"thousand_experts_cluster2", 3000, 8, 1000, 32, false, 3, 2},
          {"few_pairs_cluster8", 3, 2, 64, 64, false, 0, 8},
          {"odd_pairs_cluster8", 12345, 1, 7, 100, false, 11, 8},
          {"one_expert_cluster2", 9000, 1, 1, 64, false, 0, 2},
          {"single_block_forced", 30000, 4, 64, 64, false, 0, 1},
          // Longer than the capacity (a graph's buffer): the extra rows padding, blocks -1.
          {"longer_buffer", 300, 4, 64, 64, false, 0, 0, 40},
          {"longer_buffer_cluster8", 5000, 4, 64, 128, false, 2, 8, 17},
          {"no_tokens_longer_buffer", 0, 4, 64, 64, false, 0, 0, 3},
          // Rows one at a time: sorted not 16-byte aligned, blocks not a multiple of 4 rows.
          {"misaligned_sorted", 700, 4, 64, 64, false, 0, 0, 0, true},
          {"misaligned_sorted_cluster8", 5000, 8, 256, 128, false, 3, 8, 2, true},
          {"block_of_6_cluster4", 3000, 4, 64, 6, false, 0, 4},
          // Decode a row at a time (misaligned; blocks of 6); a cluster of 3; blocks of 1024.
          {"misaligned_sorted_decode", 16, 8, 256, 128, false, 0, 0, 0, true},
          {"block_of_6_decode", 4, 4, 64, 6},
          {"misaligned_decode_cluster4", 20, 4, 64, 64, false, 1, 4, 3, true},
          {"cluster_of_3", 5000, 4, 64, 64, false, 2, 3},
          {"block_of_1024_decode", 8, 2, 8, 1024},
          // 300 experts: 23 counting warps a block; 1024 experts: 7.
          {"three_hundred_experts_cluster4", 4000, 8, 300, 64, false, 0, 4},
          {"max_experts_cluster8", 2000, 8, 1024, 16, false, 7, 8}};
}

INSTANTIATE_TEST_SUITE_P(All, MoeAlignTest, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace kjit::test

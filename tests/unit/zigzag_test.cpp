// Zigzag context parallelism without a GPU: the layouts' index math (the header the kernel
// compiles, built for the host) against the plain reference on every layout pair the ops use,
// the grouped attention's plan against its definition, and every bad input refused before any
// device work or collective.
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "kjit/error.hpp"
#include "kjit/zigzag.hpp"
#include "ops/cp/zigzag_layout.hpp"
#include "tests/reference/zigzag_reference.hpp"
#include "tests/support/recording_communicator.hpp"
#include "tests/support/seqlens.hpp"

namespace kjit::cp {
namespace {

using reference::TokenRows;
using test::cumulative_seqlens;

// Sequence sets of the seed's component tests (one, several, with empty sequences), as lengths
// in units of 2W tokens.
const std::vector<std::vector<int>> kChunkCounts = {{8}, {4, 8, 6}, {1}, {0, 3, 0, 1, 5}};

std::vector<int> cu_for(const std::vector<int>& chunks, int world) {
  std::vector<int> lengths;
  for (int c : chunks)
    lengths.push_back(c * 2 * world);
  return cumulative_seqlens(lengths);
}

// A layout of the kernel's params, with rows one offset unit apart (GATHERED slots `local`).
KjitZigzagLayout unit_layout(int kind, long long local) {
  return {kind, 1, 0, local};
}

// The global token at (sequence, chunk, i).
std::int64_t global_token(const std::vector<int>& cu, int world, const Token& t) {
  const int n = (cu[t.seq + 1] - cu[t.seq]) / (2 * world);
  EXPECT_EQ(t.chunk_len, n);
  return cu[t.seq] + static_cast<std::int64_t>(t.chunk) * n + t.i;
}

TokenRows rows_of(int kind, const std::vector<int>& cu, int world, int rank, ChunkRange chunks) {
  switch (kind) {
    case KJIT_ZIGZAG_GATHERED:
      return reference::zigzag_gathered_rows(cu, world);
    case KJIT_ZIGZAG_LOCAL:
      return reference::zigzag_local_rows(cu, world, rank);
    case KJIT_ZIGZAG_CHUNKS:
      return reference::zigzag_chunk_rows(cu, world, chunks.begin, chunks.end);
    default:
      return reference::zigzag_split_rows(cu, world, rank);
  }
}

// Every destination row of `to` must name the reference's token and find it where the
// reference's `from` holds it (or nowhere, exactly when `from` lacks it).
void check_move(int from, int to, const std::vector<int>& cu, int world, int rank,
                ChunkRange chunks) {
  const TokenRows from_rows = rows_of(from, cu, world, rank, chunks);
  const TokenRows to_rows = rows_of(to, cu, world, rank, chunks);
  const long long local = cu.back() / world;
  KjitZigzagCopyParams p{};
  p.cu_seqlens = cu.data();
  p.batch = static_cast<int>(cu.size()) - 1;
  p.world = world;
  p.rank = rank;
  p.chunk_begin = chunks.begin;
  p.chunk_end = chunks.end;
  p.from = unit_layout(from, local);
  p.to = unit_layout(to, local);
  SCOPED_TRACE(::testing::Message()
               << "W " << world << " rank " << rank << " chunks [" << chunks.begin << ", "
               << chunks.end << ") from " << from << " to " << to << " batch " << p.batch);
  for (std::size_t row = 0; row < to_rows.size(); ++row) {
    long long to_offset = -1;
    const Token t = destination_token(p, static_cast<long long>(row), &to_offset);
    ASSERT_EQ(to_offset, static_cast<long long>(row));
    ASSERT_EQ(global_token(cu, world, t), to_rows[row]) << "destination row " << row;
    const long long from_offset = source_offset(p, t);
    long long expected = -1;
    for (std::size_t j = 0; j < from_rows.size(); ++j) {
      if (from_rows[j] == to_rows[row]) expected = static_cast<long long>(j);
    }
    ASSERT_EQ(from_offset, expected) << "destination row " << row;
  }
}

TEST(ZigzagLayout, EveryMoveFindsTheReferenceRows) {
  for (int world : {1, 2, 4, 8}) {
    for (const auto& counts : kChunkCounts) {
      const std::vector<int> cu = cu_for(counts, world);
      for (int rank = 0; rank < world; ++rank) {
        // The component ops: early chunks, late chunks, the full sequence, every causal prefix.
        std::vector<ChunkRange> ranges = {{0, world}, {world, 2 * world}, {0, 2 * world}};
        for (int c = 0; c < 2 * world; ++c)
          ranges.push_back({0, c + 1});
        for (const ChunkRange& chunks : ranges) {
          check_move(KJIT_ZIGZAG_GATHERED, KJIT_ZIGZAG_CHUNKS, cu, world, rank, chunks);
          check_move(KJIT_ZIGZAG_CHUNKS, KJIT_ZIGZAG_GATHERED, cu, world, rank, chunks);
          check_move(KJIT_ZIGZAG_CHUNKS, KJIT_ZIGZAG_LOCAL, cu, world, rank, chunks);
        }
        // The attention's: rows split by chunk kind and back, a rank's rows onto themselves.
        check_move(KJIT_ZIGZAG_LOCAL, KJIT_ZIGZAG_SPLIT, cu, world, rank, {});
        check_move(KJIT_ZIGZAG_SPLIT, KJIT_ZIGZAG_LOCAL, cu, world, rank, {});
        check_move(KJIT_ZIGZAG_LOCAL, KJIT_ZIGZAG_LOCAL, cu, world, rank, {});
      }
    }
  }
}

TEST(ZigzagLayout, GatheredSlotsAreAddressedThroughTheSlotStride) {
  // K and V of a rank side by side in its slot: slots 2 x local rows apart.
  const int world = 4;
  const std::vector<int> cu = cu_for({2, 3}, world);
  const long long local = cu.back() / world;
  KjitZigzagCopyParams p{};
  p.cu_seqlens = cu.data();
  p.batch = 2;
  p.world = world;
  p.chunk_begin = 0;
  p.chunk_end = 2 * world;
  p.from = {KJIT_ZIGZAG_CHUNKS, 1, 0, 0};
  p.to = {KJIT_ZIGZAG_GATHERED, 1, 0, 2 * local};
  const TokenRows gathered = reference::zigzag_gathered_rows(cu, world);
  for (std::size_t row = 0; row < gathered.size(); ++row) {
    long long offset = -1;
    const Token t = destination_token(p, static_cast<long long>(row), &offset);
    const long long slot = static_cast<long long>(row) / local;
    EXPECT_EQ(offset, slot * 2 * local + static_cast<long long>(row) % local);
    EXPECT_EQ(global_token(cu, world, t), gathered[row]);
  }
}

TEST(ZigzagLayout, PlanIsEachChunksPrefix) {
  for (int world : {1, 2, 4, 8}) {
    for (const auto& counts : kChunkCounts) {
      const std::vector<int> cu = cu_for(counts, world);
      const int batch = static_cast<int>(cu.size()) - 1;
      for (int rank = 0; rank < world; ++rank) {
        for (bool causal : {true, false}) {
          const int key_chunks = causal ? 2 * world - rank : 2 * world;
          std::vector<int> plan(static_cast<std::size_t>(6 * batch + 2), -7);
          KjitZigzagCopyParams p{};
          p.cu_seqlens = cu.data();
          p.batch = batch;
          p.world = world;
          p.rank = rank;
          p.chunk_end = key_chunks;
          p.plan = plan.data();
          p.plan_causal = causal;
          for (int b = 0; b <= batch; ++b)
            write_plan_entries(p, b);
          int query_rows = 0, key_rows = 0;
          for (int b = 0; b <= batch; ++b) {
            EXPECT_EQ(plan[b], query_rows);
            EXPECT_EQ(plan[batch + 1 + b], key_rows);
            if (b == batch) break;
            const int n = (cu[b + 1] - cu[b]) / (2 * world);
            query_rows += n;             // one chunk of each kind per sequence
            key_rows += key_chunks * n;  // the late chunk's prefix (causal) or everything
            const int early_end = causal ? (rank + 1) * n : 2 * world * n;
            const int late_end = causal ? (2 * world - rank) * n : 2 * world * n;
            const int* early = &plan[2 * (batch + 1)];
            const int* late = early + 2 * batch;
            EXPECT_EQ(early[2 * b], 0);
            EXPECT_EQ(early[2 * b + 1], early_end);
            EXPECT_EQ(late[2 * b], 0);
            EXPECT_EQ(late[2 * b + 1], late_end);
          }
        }
      }
    }
  }
}

TEST(ZigzagLayout, LocalCuSeqlensAreTheGlobalOnesOverW) {
  const std::vector<int> cu = {0, 512, 1536, 2304};
  EXPECT_EQ(zigzag_local_cu_seqlens(cu.data(), 3, 4),
            (std::vector<std::int32_t>{0, 128, 384, 576}));
  try {
    zigzag_local_cu_seqlens(cu.data(), 3, 3);
    ADD_FAILURE() << "512 tokens are not a multiple of 6";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("sequence 0 has 512 tokens, not a multiple of 2W = 6"),
              std::string::npos)
        << e.what();
  }
}

// ---- Refusals: before any device work (the pointers are never dereferenced) ----

void* fake(std::size_t offset = 0) {
  return reinterpret_cast<char*>(0x10000) + offset;
}

template <class Call>
std::string refusal(Call&& call) {
  try {
    call();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  ADD_FAILURE() << "the call was not refused";
  return "";
}

#define EXPECT_REFUSED(call, text)                                              \
  do {                                                                          \
    const std::string message = refusal([&] { call; });                         \
    EXPECT_NE(message.find(text), std::string::npos) << "message: " << message; \
  } while (0)

struct ComponentInputs {
  std::vector<int> cu = {0, 512, 1536, 2304};  // W = 4: chunks of 64, 128, 96 tokens
  TensorView cu_view{fake(), DType::Int32, {4}};
  ZigzagSequences seqs() const { return {cu_view, cu.data()}; }
  TensorView rows(std::int64_t n, DType dtype = DType::BFloat16, std::int64_t heads = 8,
                  std::int64_t dim = 128) const {
    return {fake(1 << 20), dtype, {n, heads, dim}};
  }
};

TEST(ZigzagRefusals, ComponentOps) {
  const ComponentInputs in;
  const TensorView gathered = in.rows(2304);
  const StreamHandle s = nullptr;
  // Early chunks [0, 4) of 64 + 128 + 96-token chunks: 1152 rows.
  EXPECT_REFUSED(extract_zigzag_kv_slice(gathered, in.seqs(), 4, {0, 4}, in.rows(1151), s),
                 "destination must hold 1152 rows");
  EXPECT_REFUSED(extract_zigzag_kv_slice(in.rows(2300), in.seqs(), 4, {0, 4}, in.rows(1152), s),
                 "source must hold 2304 rows");
  EXPECT_REFUSED(extract_zigzag_kv_slice(gathered, in.seqs(), 3, {0, 4}, in.rows(1152), s),
                 "sequence 0 has 512 tokens, not a multiple of 2W = 6");
  EXPECT_REFUSED(extract_zigzag_kv_slice(gathered, in.seqs(), 4, {4, 4}, in.rows(0), s),
                 "chunks [4, 4) must be a non-empty range inside the 2W = 8 chunks");
  EXPECT_REFUSED(extract_zigzag_kv_slice(gathered, in.seqs(), 4, {0, 9}, in.rows(1152), s),
                 "inside the 2W = 8 chunks");
  EXPECT_REFUSED(
      extract_zigzag_kv_slice(gathered, in.seqs(), 4, {0, 4}, in.rows(1152, DType::Float16), s),
      "must have the dtype of source");
  EXPECT_REFUSED(
      extract_zigzag_kv_slice(gathered, in.seqs(), 4, {0, 4}, in.rows(1152, DType::BFloat16, 4), s),
      "must have source's heads and head dim");
  EXPECT_REFUSED(extract_zigzag_kv_slice(in.rows(2304, DType::Int32), in.seqs(), 4, {0, 4},
                                         in.rows(1152, DType::Int32), s),
                 "must be fp16, bf16 or fp32");
  EXPECT_REFUSED(extract_zigzag_kv_slice(gathered, in.seqs(), 0, {0, 1}, in.rows(1152), s),
                 "world size must be at least 1");

  // The rank's own buffer from the full gradient: 2304 / 4 rows.
  const TensorView grad = in.rows(2304);
  EXPECT_REFUSED(scatter_grad_to_zigzag(grad, in.seqs(), 4, {0, 8}, 4, in.rows(576), s),
                 "rank must be in [0, 4)");
  EXPECT_REFUSED(scatter_grad_to_zigzag(grad, in.seqs(), 4, {0, 8}, -2, in.rows(576), s),
                 "rank must be in [0, 4)");
  EXPECT_REFUSED(scatter_grad_to_zigzag(grad, in.seqs(), 4, {0, 8}, 1, in.rows(2304), s),
                 "destination must hold 576 rows");
  EXPECT_REFUSED(scatter_grad_to_zigzag(grad, in.seqs(), 4, {0, 8}, kEveryRank, in.rows(576), s),
                 "destination must hold 2304 rows");

  // cu_seqlens that do not match: a host copy not from 0, decreasing, or missing.
  ComponentInputs bad = in;
  bad.cu = {16, 512, 1536, 2304};
  EXPECT_REFUSED(extract_zigzag_kv_slice(gathered, bad.seqs(), 4, {0, 4}, in.rows(1152), s),
                 "cu_seqlens must start at 0, got 16");
  bad.cu = {0, 512, 256, 2304};
  EXPECT_REFUSED(extract_zigzag_kv_slice(gathered, bad.seqs(), 4, {0, 4}, in.rows(1152), s),
                 "must not decrease: sequence 1 goes from 512 to 256");
  EXPECT_REFUSED(
      extract_zigzag_kv_slice(gathered, {in.cu_view, nullptr}, 4, {0, 4}, in.rows(1152), s),
      "the host copy of cu_seqlens is a null pointer");
  const TensorView cu_fp32(fake(), DType::Float32, {4});
  EXPECT_REFUSED(
      extract_zigzag_kv_slice(gathered, {cu_fp32, in.cu.data()}, 4, {0, 4}, in.rows(1152), s),
      "cu_seqlens");
}

TEST(ZigzagRefusals, AttentionChecksBeforeAnyCollective) {
  const ComponentInputs in;  // 2304 tokens over W = 4: 576 per rank
  test::Recorder comm(1, 4);
  const TensorView q = in.rows(576, DType::BFloat16, 32), k = in.rows(576),
                   lse(fake(), DType::Float32, {32, 576});
  const StreamHandle s = nullptr;
  ZigzagOptions options;
  options.heads_k_stride = 3;
  EXPECT_REFUSED(zigzag_forward(comm, q, k, k, q, lse, in.seqs(), options, s),
                 "heads_k_stride must divide the 8 K/V heads, got 3");
  EXPECT_REFUSED(zigzag_forward(comm, in.rows(575, DType::BFloat16, 32), k, k,
                                in.rows(575, DType::BFloat16, 32), lse, in.seqs(), {}, s),
                 "q, k and v must hold this rank's 576 tokens (T / W = 2304 / 4)");
  EXPECT_REFUSED(
      zigzag_forward(comm, in.rows(576, DType::BFloat16, 32, 80),
                     in.rows(576, DType::BFloat16, 8, 80), in.rows(576, DType::BFloat16, 8, 80),
                     in.rows(576, DType::BFloat16, 32, 80), lse, in.seqs(), {}, s),
      "head dim 80 is not one of 64, 96, 128, 192, 256");
  EXPECT_REFUSED(zigzag_forward(comm, in.rows(576, DType::BFloat16, 12), k, k,
                                in.rows(576, DType::BFloat16, 12), lse, in.seqs(), {}, s),
                 "must be a positive multiple of key/value heads");
  const TensorView short_lse(fake(), DType::Float32, {32, 575});
  EXPECT_REFUSED(zigzag_forward(comm, q, k, k, q, short_lse, in.seqs(), {}, s), "lse");
  test::Recorder odd(0, 3);
  EXPECT_REFUSED(zigzag_forward(odd, q, k, k, q, lse, in.seqs(), {}, s),
                 "sequence 0 has 512 tokens, not a multiple of 2W = 6");
  EXPECT_REFUSED(zigzag_backward(comm, q, k, k, q, q, TensorView{}, q, k, k, in.seqs(), {}, s),
                 "lse");
  EXPECT_REFUSED(zigzag_backward(comm, q, k, k, q, q, lse, q, in.rows(576, DType::BFloat16, 4), k,
                                 in.seqs(), {}, s),
                 "dk must have k's shape");
  EXPECT_REFUSED(zigzag_forward(comm, q, k, in.rows(575), q, lse, in.seqs(), {}, s),
                 "q, k and v must hold this rank's 576 tokens");
  // Past one grouped launch's query tiles (two chunks of 2M tokens, 2 x 32768 tiles of 64): every
  // rank refuses.
  const std::vector<int> huge = {0, 8 << 21};
  const TensorView cu2(fake(), DType::Int32, {2});
  test::Recorder last(3, 4);
  const std::int64_t tl = (8 << 21) / 4;
  EXPECT_REFUSED(
      zigzag_forward(last, in.rows(tl, DType::BFloat16, 32), in.rows(tl), in.rows(tl),
                     in.rows(tl, DType::BFloat16, 32), TensorView{}, {cu2, huge.data()}, {}, s),
      "2 groups of up to 2097152 query tokens are more query tiles than one launch holds");
  EXPECT_EQ(last.calls, 0);
  EXPECT_EQ(comm.calls, 0) << "a refused call reached the communicator";
  EXPECT_EQ(odd.calls, 0);
}

}  // namespace
}  // namespace kjit::cp

// The zigzag component kernels on the GPU (the seed's component tests): extract_zigzag_kv_slice
// and scatter_grad_to_zigzag against the plain reference (tests/reference/zigzag_reference.hpp),
// bit for bit: random bytes in, outputs poisoned, exact equality out. One sequence and several,
// early chunks, late chunks, the full sequence and every causal prefix, head counts and dims,
// fp16/bf16/fp32, W = 1, 2, 4, 8, strided inputs, every config of the search space on one case;
// and the zigzag attention's own moves (LOCAL <-> SPLIT with K and V in one launch, spaced slots).
#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "kjit/zigzag.hpp"
#include "ops/cp/zigzag_copy.hpp"
#include "ops/dispatch.hpp"
#include "tests/reference/zigzag_reference.hpp"
#include "tests/support/forced_launch.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/isolated_cache.hpp"
#include "tests/support/seqlens.hpp"

namespace kjit::test {
namespace {

using cp::ChunkRange;
using reference::TokenRows;

struct Case {
  std::vector<int> lengths;
  int world = 2;
  DType dtype = DType::BFloat16;
  std::int64_t heads = 8, dim = 128;
  bool strided = false;  // the tensors are head slices of wider ones (every row 3 heads longer)
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << "W=" << c.world << " " << dtype_name(c.dtype) << " H=" << c.heads << " D=" << c.dim
      << (c.strided ? " strided" : "") << " lengths";
  for (int l : c.lengths)
    *os << " " << l;
}

// A device tensor [rows, heads, dim] holding random bytes (or poison, for an output), with its
// dense host copy. Strided: every row 3 heads longer, the gaps poisoned too.
struct Rows {
  static constexpr std::uint8_t kPoison = 0xa5;
  Rows(std::int64_t rows, const Case& c, std::mt19937& rng, bool random)
      : row_bytes(static_cast<std::size_t>(c.heads * c.dim) * dtype_size(c.dtype)),
        pitch(static_cast<std::size_t>((c.heads + (c.strided ? 3 : 0)) * c.dim) *
              dtype_size(c.dtype)),
        host(static_cast<std::size_t>(rows) * row_bytes),
        device(std::max<std::size_t>(1, static_cast<std::size_t>(rows) * pitch)),
        view(device.data(), c.dtype, {rows, c.heads, c.dim},
             {static_cast<std::int64_t>(pitch / dtype_size(c.dtype)), c.dim, 1}) {
    std::vector<std::uint8_t> padded(device.size(), kPoison);
    for (std::size_t r = 0; r < host.size() / row_bytes; ++r) {
      for (std::size_t b = 0; b < row_bytes && random; ++b)
        padded[r * pitch + b] = host[r * row_bytes + b] = static_cast<std::uint8_t>(rng());
    }
    device.upload(padded.data(), padded.size());
  }
  // The dense rows the device holds now; the gaps between them must still be poison.
  std::vector<std::uint8_t> read() const {
    std::vector<std::uint8_t> padded(device.size()), out(host.size());
    device.download(padded.data(), padded.size());
    for (std::size_t r = 0; r < host.size() / row_bytes; ++r) {
      for (std::size_t b = 0; b < pitch; ++b) {
        if (b < row_bytes)
          out[r * row_bytes + b] = padded[r * pitch + b];
        else
          EXPECT_EQ(padded[r * pitch + b], kPoison) << "written between rows, row " << r;
      }
    }
    return out;
  }
  std::size_t row_bytes, pitch;
  std::vector<std::uint8_t> host;
  DeviceBuffer device;
  TensorView view;
};

struct Sequences {
  explicit Sequences(const std::vector<int>& lengths)
      : host(cumulative_seqlens(lengths)), device(host.size() * 4) {
    device.upload(host.data(), device.size());
  }
  cp::ZigzagSequences seqs() const {
    return {TensorView(device.data(), DType::Int32, {static_cast<std::int64_t>(host.size())}),
            host.data()};
  }
  std::vector<int> host;
  DeviceBuffer device;
};

// The chunk ranges the seed names (early, late, full) and every causal prefix.
std::vector<ChunkRange> ranges_of(int world) {
  std::vector<ChunkRange> out = {{0, world}, {world, 2 * world}, {0, 2 * world}};
  for (int c = 0; c + 1 < 2 * world; ++c)
    out.push_back({0, c + 1});
  return out;
}

void expect_bytes(const std::vector<std::uint8_t>& got, const std::vector<std::uint8_t>& want,
                  std::size_t row_bytes, const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i], want[i]) << what << ": first difference in row " << i / row_bytes << ", byte "
                               << i % row_bytes;
  }
}

void run_case(const Case& c) {
  std::mt19937 rng(std::random_device{}());
  const Sequences s(c.lengths);
  const std::int64_t tokens = s.host.back();
  Stream stream;
  // Extract every range from the gathered buffer.
  const Rows gathered(tokens, c, rng, true);
  const TokenRows gathered_rows = reference::zigzag_gathered_rows(s.host, c.world);
  for (const ChunkRange& range : ranges_of(c.world)) {
    SCOPED_TRACE(::testing::Message() << "chunks [" << range.begin << ", " << range.end << ")");
    const TokenRows rows = reference::zigzag_chunk_rows(s.host, c.world, range.begin, range.end);
    Rows out(static_cast<std::int64_t>(rows.size()), c, rng, false);
    cp::extract_zigzag_kv_slice(gathered.view, s.seqs(), c.world, range, out.view, stream.handle());
    stream.synchronize();
    expect_bytes(out.read(),
                 reference::move_rows(gathered.host, gathered_rows, rows, out.row_bytes),
                 out.row_bytes, "extract");

    // Back: into every rank's slots (zeros outside the range) and into each rank's own buffer.
    const Rows grad(static_cast<std::int64_t>(rows.size()), c, rng, true);
    Rows every(tokens, c, rng, false);
    cp::scatter_grad_to_zigzag(grad.view, s.seqs(), c.world, range, cp::kEveryRank, every.view,
                               stream.handle());
    for (int rank = 0; rank < c.world; ++rank) {
      const TokenRows local = reference::zigzag_local_rows(s.host, c.world, rank);
      Rows mine(static_cast<std::int64_t>(local.size()), c, rng, false);
      cp::scatter_grad_to_zigzag(grad.view, s.seqs(), c.world, range, rank, mine.view,
                                 stream.handle());
      stream.synchronize();
      expect_bytes(mine.read(), reference::move_rows(grad.host, rows, local, mine.row_bytes),
                   mine.row_bytes, "scatter to one rank");
    }
    expect_bytes(every.read(),
                 reference::move_rows(grad.host, rows, gathered_rows, every.row_bytes),
                 every.row_bytes, "scatter to every rank");
  }
}

class ZigzagCopyGpu : public SharedKernelStore, public ::testing::WithParamInterface<Case> {};

TEST_P(ZigzagCopyGpu, MatchesPlainIndexingBitForBit) {
  KJIT_REQUIRE_GPU();
  run_case(GetParam());
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (int world : {1, 2, 4, 8}) {
    for (DType dtype : {DType::Float16, DType::BFloat16, DType::Float32}) {
      out.push_back({{1024}, world, dtype});                   // one sequence
      out.push_back({{512, 1024, 768}, world, dtype, 8, 64});  // the seed's several
    }
    // Head counts and dims of other models, odd ones (2-byte accesses), empty and short
    // sequences, strided tensors.
    out.push_back({{256, 0, 2 * world, 4096}, world, DType::BFloat16, 1, 256});
    out.push_back({{64 * world, 32 * world}, world, DType::Float16, 5, 7});
    out.push_back({{512, 1024, 768}, world, DType::BFloat16, 8, 128, true});
    out.push_back({{96 * world}, world, DType::Float32, 32, 1});  // an lse's single value per head
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Seed, ZigzagCopyGpu, ::testing::ValuesIn(cases()));

// Every config of the search space moves the same bytes (the tuner's tolerance is 0).
class ZigzagCopyConfigs : public IsolatedCache {};

TEST_F(ZigzagCopyConfigs, EveryValidConfigIsExact) {
  KJIT_REQUIRE_GPU();
  const Case c{{512, 1024, 768}, 4, DType::BFloat16, 8, 128};
  std::mt19937 rng(std::random_device{}());
  const Sequences s(c.lengths);
  const Rows gathered(s.host.back(), c, rng, true);
  const ChunkRange range{0, 5};
  const TokenRows rows = reference::zigzag_chunk_rows(s.host, c.world, range.begin, range.end);
  const std::vector<std::uint8_t> want = reference::move_rows(
      gathered.host, reference::zigzag_gathered_rows(s.host, c.world), rows, gathered.row_bytes);
  Rows out(static_cast<std::int64_t>(rows.size()), c, rng, false);
  const ops::ZigzagShape shape = ops::check_zigzag_sequences("test", s.seqs(), c.world);
  const ops::Call<ops::ZigzagCopy> call = ops::ZigzagCopy::validate(
      "test", shape, s.seqs().cu_seqlens, {&gathered.view, KJIT_ZIGZAG_GATHERED},
      {&out.view, KJIT_ZIGZAG_CHUNKS}, 0, range);
  Stream stream;
  int tried = 0;
  for (const ops::ZigzagCopy::Config& config :
       ops::ZigzagCopy::space(call.problem, arch::current())) {
    if (!ops::ZigzagCopy::valid(config, call.problem, arch::current())) continue;
    out.device.fill_bytes(Rows::kPoison);
    launch_forced(config, call, stream.handle());
    stream.synchronize();
    SCOPED_TRACE(tuning::config_json(ops::config_map<ops::ZigzagCopy>(config)));
    expect_bytes(out.read(), want, out.row_bytes, "extract");
    ++tried;
  }
  EXPECT_GT(tried, 20);
}

// The attention's own moves: a rank's rows LOCAL <-> SPLIT with K and V in one launch (the pair's
// second tensor), and a gathered buffer whose rank slots sit further apart than its rows (the
// attention's [W][2][Tl] step buffers) read into CHUNKS; bit for bit, every rank.
class ZigzagCopyMoves : public IsolatedCache {};

TEST_F(ZigzagCopyMoves, LocalSplitPairsAndSpacedSlots) {
  KJIT_REQUIRE_GPU();
  const Case c{{512, 1024, 768}, 4, DType::BFloat16, 4, 64, true};
  std::mt19937 rng(std::random_device{}());
  const Sequences s(c.lengths);
  const ops::ZigzagShape shape = ops::check_zigzag_sequences("test", s.seqs(), c.world);
  const std::int64_t local = shape.local_tokens();
  Stream stream;
  for (int rank = 0; rank < c.world; ++rank) {
    SCOPED_TRACE(::testing::Message() << "rank " << rank);
    const TokenRows local_rows = reference::zigzag_local_rows(s.host, c.world, rank),
                    split_rows = reference::zigzag_split_rows(s.host, c.world, rank);
    const Rows k(local, c, rng, true), v(local, c, rng, true);
    Rows k_split(local, c, rng, false), v_split(local, c, rng, false);
    ops::run(ops::ZigzagCopy::validate(
                 "test", shape, s.seqs().cu_seqlens, {&k.view, KJIT_ZIGZAG_LOCAL},
                 {&k_split.view, KJIT_ZIGZAG_SPLIT}, rank, {}, &v.view, &v_split.view),
             stream.handle());
    stream.synchronize();
    expect_bytes(k_split.read(), reference::move_rows(k.host, local_rows, split_rows, k.row_bytes),
                 k.row_bytes, "k local -> split");
    expect_bytes(v_split.read(), reference::move_rows(v.host, local_rows, split_rows, v.row_bytes),
                 v.row_bytes, "v local -> split");
    Rows k_back(local, c, rng, false), v_back(local, c, rng, false);
    ops::run(ops::ZigzagCopy::validate(
                 "test", shape, s.seqs().cu_seqlens, {&k_split.view, KJIT_ZIGZAG_SPLIT},
                 {&k_back.view, KJIT_ZIGZAG_LOCAL}, rank, {}, &v_split.view, &v_back.view),
             stream.handle());
    stream.synchronize();
    expect_bytes(k_back.read(), k.host, k.row_bytes, "k split -> local");
    expect_bytes(v_back.read(), v.host, v.row_bytes, "v split -> local");
  }

  // Rank slots 40 rows apart beyond their own rows: dense rows, then 40 poisoned ones a slot.
  const std::int64_t tokens = s.host.back(), pad = 40, slot_rows = local + pad;
  const Case dense{c.lengths, c.world, c.dtype, c.heads, c.dim};
  const Rows gathered(tokens, dense, rng, true);
  const std::size_t row_bytes = gathered.row_bytes;
  std::vector<std::uint8_t> spaced(static_cast<std::size_t>(c.world * slot_rows) * row_bytes,
                                   Rows::kPoison);
  for (int slot = 0; slot < c.world; ++slot) {
    std::copy_n(gathered.host.begin() + static_cast<std::ptrdiff_t>(slot * local * row_bytes),
                local * row_bytes,
                spaced.begin() + static_cast<std::ptrdiff_t>(slot * slot_rows * row_bytes));
  }
  DeviceBuffer spaced_device(spaced.size());
  spaced_device.upload(spaced.data(), spaced.size());
  const TensorView spaced_view(spaced_device.data(), c.dtype, {tokens, c.heads, c.dim});
  const std::int64_t slot_stride = slot_rows * c.heads * c.dim;  // elements
  for (const ChunkRange& range : ranges_of(c.world)) {
    SCOPED_TRACE(::testing::Message() << "chunks [" << range.begin << ", " << range.end << ")");
    const TokenRows rows = reference::zigzag_chunk_rows(s.host, c.world, range.begin, range.end);
    Rows out(static_cast<std::int64_t>(rows.size()), dense, rng, false);
    ops::run(ops::ZigzagCopy::validate("test", shape, s.seqs().cu_seqlens,
                                       {&spaced_view, KJIT_ZIGZAG_GATHERED, slot_stride},
                                       {&out.view, KJIT_ZIGZAG_CHUNKS}, 0, range),
             stream.handle());
    stream.synchronize();
    expect_bytes(
        out.read(),
        reference::move_rows(gathered.host, reference::zigzag_gathered_rows(s.host, c.world), rows,
                             row_bytes),
        row_bytes, "spaced gathered -> chunks");
  }
}

}  // namespace
}  // namespace kjit::test

// Every collective on device buffers across the ranks of the world communicator: sizes 0, 1, odd
// and large (64 MiB), every dtype, in place and out of place. Inputs are small integers drawn from
// the run's seed (exact in every dtype, and in sums over 8 ranks), so each rank computes the
// exact expected bytes alone; outputs are poisoned first.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "kjit/comm.hpp"
#include "kjit/device.hpp"
#include "tests/dist/dist_world.hpp"
#include "tests/support/splitmix.hpp"
#include "util/half_float.hpp"

namespace kjit::test {
namespace {

using comm::Buffer;
using comm::CommError;
using comm::ConstBuffer;

#define KJIT_DIST_REQUIRE_GPU() \
  if (!has_gpu()) GTEST_SKIP() << "needs a CUDA GPU (device buffers)"

constexpr unsigned char kPoison = 0xfe;  // NaN or far out of range in every dtype

// Element i of the input rank r makes for the test `salt`: -8..8 (uint8: 0..16).
long value(DType dtype, int salt, int r, std::size_t i) {
  const long v = static_cast<long>(
      splitmix64(run_seed() ^ splitmix64(salt * 1000003ull + r) ^ splitmix64(~i)) % 17);
  return dtype == DType::UInt8 ? v : v - 8;
}

void put(DType dtype, unsigned char* at, long v) {
  std::uint16_t h;
  float f;
  std::int32_t i32;
  std::int64_t i64;
  switch (dtype) {
    case DType::Float16:
      h = float_to_fp16(static_cast<float>(v));
      return std::memcpy(at, &h, 2), void();
    case DType::BFloat16:
      h = float_to_bf16(static_cast<float>(v));
      return std::memcpy(at, &h, 2), void();
    case DType::Float32:
      f = static_cast<float>(v);
      return std::memcpy(at, &f, 4), void();
    case DType::Int32:
      i32 = static_cast<std::int32_t>(v);
      return std::memcpy(at, &i32, 4), void();
    case DType::Int64:
      i64 = v;
      return std::memcpy(at, &i64, 8), void();
    case DType::UInt8:
      *at = static_cast<unsigned char>(v);
      return;
  }
}

// Host bytes of `count` elements, poisoned until set.
struct Host {
  Host(DType dtype, std::size_t count) : dtype(dtype), bytes(count * dtype_size(dtype), kPoison) {}
  void set(std::size_t i, long v) { put(dtype, bytes.data() + i * dtype_size(dtype), v); }
  DType dtype;
  std::vector<unsigned char> bytes;
};

DeviceBuffer to_device(const Host& h) {
  DeviceBuffer b(h.bytes.size());
  b.upload(h.bytes.data(), h.bytes.size());
  return b;
}

Host from_device(const DeviceBuffer& b, DType dtype) {
  Host h(dtype, b.size() / dtype_size(dtype));
  b.download(h.bytes.data(), h.bytes.size());
  return h;
}

Buffer whole(const DeviceBuffer& b, DType dtype) {
  return {b.data(), b.size() / dtype_size(dtype), dtype};
}

Buffer slice(const DeviceBuffer& b, DType dtype, std::size_t first, std::size_t count) {
  return {static_cast<char*>(b.data()) + first * dtype_size(dtype), count, dtype};
}

// Elements [first, first + count) of `got` must equal `want`'s, byte for byte.
void expect_elements(const Host& want, const Host& got, std::size_t first, std::size_t count,
                     const std::string& what) {
  const std::size_t e = dtype_size(want.dtype);
  for (std::size_t i = first; i < first + count; ++i) {
    if (std::memcmp(want.bytes.data() + i * e, got.bytes.data() + i * e, e) != 0) {
      ADD_FAILURE() << what << ": rank " << world().rank() << ", first wrong element " << i
                    << " of " << want.bytes.size() / e;
      return;
    }
  }
}

void expect_all(const Host& want, const Host& got, const std::string& what) {
  expect_elements(want, got, 0, want.bytes.size() / dtype_size(want.dtype), what);
}

enum class Size { Empty, One, Odd, Large };

struct Case {
  DType dtype;
  Size size;
};

// Elements per rank's slice; Large makes the biggest buffer 64 MiB.
std::size_t slice_count(const Case& c, int ranks) {
  switch (c.size) {
    case Size::Empty:
      return 0;
    case Size::One:
      return 1;
    case Size::Odd:
      return 1001;
    case Size::Large:
      return (std::size_t{64} << 20) / (ranks * dtype_size(c.dtype));
  }
  return 0;
}

class Collective : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    KJIT_DIST_REQUIRE_GPU();
    n = world().size();
    r = world().rank();
    dtype = GetParam().dtype;
    c = slice_count(GetParam(), n);
  }
  void finish() { world().synchronize(stream.handle()); }

  int n = 1, r = 0;
  DType dtype = DType::Float32;
  std::size_t c = 0;
  Stream stream;
};

TEST_P(Collective, AllGather) {
  Host want(dtype, n * c), mine(dtype, c);
  for (int p = 0; p < n; ++p) {
    for (std::size_t i = 0; i < c; ++i)
      want.set(p * c + i, value(dtype, 1, p, i));
  }
  for (std::size_t i = 0; i < c; ++i)
    mine.set(i, value(dtype, 1, r, i));
  DeviceBuffer send = to_device(mine), recv = to_device(Host(dtype, n * c));
  world().all_gather(whole(send, dtype), whole(recv, dtype), stream.handle());
  finish();
  expect_all(want, from_device(recv, dtype), "all_gather");

  Host staged(dtype, n * c);  // in place: this rank's slice of recv is the input
  for (std::size_t i = 0; i < c; ++i)
    staged.set(r * c + i, value(dtype, 1, r, i));
  DeviceBuffer both = to_device(staged);
  world().all_gather(slice(both, dtype, r * c, c), whole(both, dtype), stream.handle());
  finish();
  expect_all(want, from_device(both, dtype), "all_gather in place");
}

TEST_P(Collective, ReduceScatter) {
  Host input(dtype, n * c), want(dtype, c);
  for (std::size_t i = 0; i < n * c; ++i)
    input.set(i, value(dtype, 2, r, i));
  for (std::size_t i = 0; i < c; ++i) {
    long sum = 0;
    for (int p = 0; p < n; ++p)
      sum += value(dtype, 2, p, r * c + i);
    want.set(i, sum);
  }
  DeviceBuffer send = to_device(input), recv = to_device(Host(dtype, c));
  world().reduce_scatter(whole(send, dtype), whole(recv, dtype), stream.handle());
  finish();
  expect_all(want, from_device(recv, dtype), "reduce_scatter");

  // In place: the result lands in this rank's slice of the input.
  world().reduce_scatter(whole(send, dtype), slice(send, dtype, r * c, c), stream.handle());
  finish();
  Host got = from_device(send, dtype);
  Host want_in_place(dtype, n * c);
  for (std::size_t i = 0; i < c; ++i) {
    std::memcpy(want_in_place.bytes.data() + (r * c + i) * dtype_size(dtype),
                want.bytes.data() + i * dtype_size(dtype), dtype_size(dtype));
  }
  expect_elements(want_in_place, got, r * c, c, "reduce_scatter in place");
}

TEST_P(Collective, AllToAll) {
  Host input(dtype, n * c), want(dtype, n * c);
  for (std::size_t i = 0; i < n * c; ++i)
    input.set(i, value(dtype, 3, r, i));
  for (int p = 0; p < n; ++p) {
    for (std::size_t i = 0; i < c; ++i)
      want.set(p * c + i, value(dtype, 3, p, r * c + i));
  }
  DeviceBuffer send = to_device(input), recv = to_device(Host(dtype, n * c));
  world().all_to_all(whole(send, dtype), whole(recv, dtype), stream.handle());
  finish();
  expect_all(want, from_device(recv, dtype), "all_to_all");

  world().all_to_all(whole(send, dtype), whole(send, dtype), stream.handle());
  finish();
  expect_all(want, from_device(send, dtype), "all_to_all in place");
}

// Rank p sends rank q count(p, q) elements, up to the case's slice size.
std::size_t pair_count(std::size_t c, int p, int q) {
  return c == 0 ? 0 : splitmix64(run_seed() ^ splitmix64(4000 + p * 64 + q)) % (c + 1);
}

TEST_P(Collective, AllToAllV) {
  std::vector<std::size_t> send_counts(n), recv_counts(n), send_offsets(n), recv_offsets(n);
  for (int q = 0; q < n; ++q) {
    send_counts[q] = pair_count(c, r, q);
    recv_counts[q] = pair_count(c, q, r);
  }
  // Packed, and then with gaps: send slices in reverse rank order, recv slices 3 apart.
  for (bool gapped : {false, true}) {
    std::size_t send_total = 0, recv_total = 0;
    for (int k = 0; k < n; ++k) {
      const int q = gapped ? n - 1 - k : k;
      send_offsets[q] = send_total;
      send_total += send_counts[q] + (gapped ? 2 : 0);
    }
    for (int q = 0; q < n; ++q) {
      recv_offsets[q] = recv_total;
      recv_total += recv_counts[q] + (gapped ? 3 : 0);
    }
    Host input(dtype, send_total), want(dtype, recv_total);
    for (int q = 0; q < n; ++q) {
      for (std::size_t i = 0; i < send_counts[q]; ++i) {
        input.set(send_offsets[q] + i, value(dtype, 4, r, q * (c + 1) + i));
      }
      for (std::size_t i = 0; i < recv_counts[q]; ++i) {
        want.set(recv_offsets[q] + i, value(dtype, 4, q, r * (c + 1) + i));
      }
    }
    const std::vector<std::size_t> packed;
    const auto& so = gapped ? send_offsets : packed;
    const auto& ro = gapped ? recv_offsets : packed;
    const std::string what = gapped ? "all_to_all_v with gaps" : "all_to_all_v";
    DeviceBuffer send = to_device(input), recv = to_device(Host(dtype, recv_total));
    world().all_to_all_v(whole(send, dtype), send_counts, so, whole(recv, dtype), recv_counts, ro,
                         stream.handle());
    finish();
    expect_all(want, from_device(recv, dtype), what);  // the gaps keep their poison

    // In place: one buffer large enough for both layouts.
    Host staged(dtype, std::max(send_total, recv_total));
    std::memcpy(staged.bytes.data(), input.bytes.data(), input.bytes.size());
    DeviceBuffer both = to_device(staged);
    world().all_to_all_v(whole(both, dtype), send_counts, so, whole(both, dtype), recv_counts, ro,
                         stream.handle());
    finish();
    const Host got = from_device(both, dtype);
    for (int q = 0; q < n; ++q) {
      expect_elements(want, got, recv_offsets[q], recv_counts[q], what + " in place");
    }
  }
}

TEST_P(Collective, Broadcast) {
  for (int root : {0, n - 1}) {
    Host want(dtype, c);
    for (std::size_t i = 0; i < c; ++i)
      want.set(i, value(dtype, 5, root, i));
    DeviceBuffer send = to_device(r == root ? want : Host(dtype, 0));
    DeviceBuffer recv = to_device(Host(dtype, c));
    const ConstBuffer source = r == root ? ConstBuffer(whole(send, dtype)) : ConstBuffer{};
    world().broadcast(source, whole(recv, dtype), root, stream.handle());
    finish();
    expect_all(want, from_device(recv, dtype), fmt::format("broadcast from {}", root));

    DeviceBuffer both = to_device(r == root ? want : Host(dtype, c));  // in place
    const ConstBuffer in_place = r == root ? ConstBuffer(whole(both, dtype)) : ConstBuffer{};
    world().broadcast(in_place, whole(both, dtype), root, stream.handle());
    finish();
    expect_all(want, from_device(both, dtype), fmt::format("broadcast in place from {}", root));
  }
}

TEST_P(Collective, PointToPoint) {
  if (n < 2) GTEST_SKIP() << "point to point needs 2 ranks";
  // A ring through send_recv.
  const int to = (r + 1) % n, from = (r + n - 1) % n;
  Host mine(dtype, c), want(dtype, c);
  for (std::size_t i = 0; i < c; ++i) {
    mine.set(i, value(dtype, 6, r, i));
    want.set(i, value(dtype, 6, from, i));
  }
  DeviceBuffer send = to_device(mine), recv = to_device(Host(dtype, c));
  world().send_recv(whole(send, dtype), to, whole(recv, dtype), from, stream.handle());
  finish();
  expect_all(want, from_device(recv, dtype), "send_recv ring");

  // Pairs (0,1), (2,3), ... with plain send and recv, ordered so neither waits on the other.
  const int partner = r ^ 1;
  if (partner >= n) return;
  Host from_partner(dtype, c);
  for (std::size_t i = 0; i < c; ++i)
    from_partner.set(i, value(dtype, 6, partner, i));
  DeviceBuffer got = to_device(Host(dtype, c));
  if (r % 2 == 0) {
    world().send(whole(send, dtype), partner, stream.handle());
    world().recv(whole(got, dtype), partner, stream.handle());
  } else {
    world().recv(whole(got, dtype), partner, stream.handle());
    world().send(whole(send, dtype), partner, stream.handle());
  }
  finish();
  expect_all(from_partner, from_device(got, dtype), "send then recv");
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const char* sizes[] = {"empty", "one", "odd", "large64MiB"};
  return fmt::format("{}_{}", dtype_name(info.param.dtype),
                     sizes[static_cast<int>(info.param.size)]);
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (DType d : {DType::Float16, DType::BFloat16, DType::Float32, DType::Int32, DType::UInt8,
                  DType::Int64}) {
    for (Size s : {Size::Empty, Size::One, Size::Odd, Size::Large})
      cases.push_back({d, s});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Comm, Collective, ::testing::ValuesIn(all_cases()), case_name);

TEST(CommBarrier, NoRankLeavesBeforeTheLastArrives) {
  KJIT_DIST_REQUIRE_GPU();
  Stream stream;
  const int r = world().rank();
  using namespace std::chrono;
  std::this_thread::sleep_for(milliseconds(40 * r));  // the last rank arrives last
  const std::int64_t arrived =
      duration_cast<microseconds>(steady_clock::now().time_since_epoch()).count();
  world().barrier(stream.handle());
  world().synchronize(stream.handle());
  const std::int64_t left =
      duration_cast<microseconds>(steady_clock::now().time_since_epoch()).count();
  // The arrival times through the communicator itself (one machine: one monotonic clock).
  DeviceBuffer mine(8), all(8 * world().size());
  mine.upload(&arrived, 8);
  world().all_gather({mine.data(), 1, DType::Int64}, whole(all, DType::Int64), stream.handle());
  world().synchronize(stream.handle());
  std::vector<std::int64_t> arrivals(world().size());
  all.download(arrivals.data(), 8 * arrivals.size());
  for (int p = 0; p < world().size(); ++p) {
    EXPECT_GE(left, arrivals[p]) << "rank " << r << " left the barrier before rank " << p
                                 << " arrived";
  }
}

TEST(CommBadInput, RefusedBeforeAnythingIsSent) {
  KJIT_DIST_REQUIRE_GPU();
  Stream stream;
  const int n = world().size();
  DeviceBuffer recv(4 * 4 * n);
  const Buffer out = whole(recv, DType::Float32);
  std::vector<float> pageable(4, 1.0f);
  HostBuffer pinned(16);
  DeviceBuffer small(16);
  auto refused = [&](ConstBuffer send, const char* expected) {
    try {
      world().all_gather(send, out, stream.handle());
      ADD_FAILURE() << "accepted: " << expected;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  };
  refused({pageable.data(), 4, DType::Float32}, "not in device memory");
  refused({pinned.data(), 4, DType::Float32}, "not in device memory");
  refused({recv.data(), 4, DType::Int32}, "send is int32 but recv is fp32");
  refused({recv.data(), 3, DType::Float32}, "recv holds");
  refused({nullptr, 4, DType::Float32}, "null");
  try {
    const Buffer past{small.data(), 1000, DType::Float32};  // in place on the root
    world().broadcast(past, past, 0, stream.handle());
    ADD_FAILURE() << "a count past the allocation was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("allocation ends"), std::string::npos) << e.what();
  }
  // Nothing went out: the ranks are still in step, and a good call works.
  std::vector<float> one(4, static_cast<float>(world().rank()));
  DeviceBuffer send(16);
  send.upload(one.data(), 16);
  world().all_gather({send.data(), 4, DType::Float32}, out, stream.handle());
  world().synchronize(stream.handle());
  std::vector<float> got(4 * n);
  recv.download(got.data(), got.size() * 4);
  for (int i = 0; i < 4 * n; ++i)
    EXPECT_EQ(got[i], static_cast<float>(i / 4)) << i;
}

// Run by tests/dist/rank_exit.sh (KJIT_DIST_RANK_EXIT=1, a short KJIT_COMM_TIMEOUT_S): the last
// rank leaves without a word; the others must fail with CommError within the timeout.
TEST(CommRankExit, OthersFailWithinTheTimeout) {
  if (!std::getenv("KJIT_DIST_RANK_EXIT")) GTEST_SKIP() << "run by tests/dist/rank_exit.sh";
  KJIT_DIST_REQUIRE_GPU();
  const int n = world().size(), r = world().rank();
  if (n < 2) GTEST_SKIP() << "needs 2 ranks";
  if (r == n - 1) std::_Exit(0);
  Stream stream;
  DeviceBuffer send(4), recv(4 * n);
  const auto start = std::chrono::steady_clock::now();
  std::string error;
  try {
    world().all_gather({send.data(), 1, DType::Float32}, whole(recv, DType::Float32),
                       stream.handle());
    world().synchronize(stream.handle());
  } catch (const CommError& e) {
    error = e.what();
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count();
  std::printf("rank-exit: rank %d: %s after %lld ms (timeout %lld ms): %s\n", r,
              error.empty() ? "NO ERROR" : "CommError", static_cast<long long>(ms),
              static_cast<long long>(world().timeout().count()), error.c_str());
  std::fflush(stdout);
  // MPI_Finalize would wait for the dead rank: leave now, with the verdict as the exit code.
  std::_Exit(!error.empty() && ms <= world().timeout().count() + 5000 ? 0 : 1);
}

TEST(CommNcclInit, MissingPeersTimeOut) {
  KJIT_DIST_REQUIRE_GPU();
  std::string why;
  if (!comm::nccl_available(&why)) GTEST_SKIP() << why;
  if (world().size() != 1) GTEST_SKIP() << "run at world size 1 (each rank would wait alone)";
  const auto start = std::chrono::steady_clock::now();
  try {
    comm::from_unique_id(comm::make_unique_id(), 0, 2, -1,
                         comm::Options{std::chrono::milliseconds(3000)});
    FAIL() << "a 2-rank NCCL communicator formed with one rank";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("not every rank joined"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(15));
}

}  // namespace
}  // namespace kjit::test

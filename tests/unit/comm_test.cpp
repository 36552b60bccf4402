// The communicator's argument checks, failure state and timeout setting, without a GPU or MPI:
// a recording backend stands in for NCCL and MPI. Every rejected call must be refused before it
// reaches the backend (nothing sent).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kjit/comm.hpp"
#include "tests/support/recording_communicator.hpp"
#include "tests/support/scoped_env.hpp"
#include "tests/support/subprocess.hpp"

namespace kjit::comm {
namespace {

using test::Recorder;
using test::ScopedEnv;

// Addresses that are never dereferenced: the checks that need the driver come after these.
void* fake(std::size_t offset = 0) {
  return reinterpret_cast<char*>(0x10000) + offset;
}

template <class Call>
std::string refusal(Recorder& c, Call&& call) {
  const int before = c.calls;
  try {
    call();
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(c.calls, before) << "a refused call reached the backend";
    return e.what();
  }
  ADD_FAILURE() << "the call was not refused";
  return "";
}

TEST(CommChecks, WorldSizeAndRankAreChecked) {
  EXPECT_THROW(Recorder(0, 0), InvalidArgument);
  EXPECT_THROW(Recorder(2, 2), InvalidArgument);
  EXPECT_THROW(Recorder(-1, 2), InvalidArgument);
  // Before NCCL is even loaded.
  try {
    from_unique_id(UniqueId{}, 0, 0);
    FAIL() << "world size 0 was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("at least one rank"), std::string::npos) << e.what();
  }
  EXPECT_THROW(from_unique_id(UniqueId{}, 3, 2), InvalidArgument);
  EXPECT_THROW(from_unique_id(UniqueId{}, -1, 2), InvalidArgument);
  EXPECT_THROW(from_nccl(nullptr), InvalidArgument);
}

TEST(CommChecks, AllGatherShapes) {
  Recorder c(1, 4);
  const auto f32 = DType::Float32;
  EXPECT_NE(refusal(c,
                    [&] {
                      c.all_gather({fake(), 8, f32}, {fake(1024), 31, f32}, nullptr);
                    })
                .find("recv holds 31"),
            std::string::npos);
  EXPECT_NE(refusal(c,
                    [&] {
                      c.all_gather({fake(), 8, DType::BFloat16}, {fake(1024), 32, f32}, nullptr);
                    })
                .find("send is bf16 but recv is fp32"),
            std::string::npos);
  EXPECT_NE(refusal(c,
                    [&] {
                      c.all_gather({nullptr, 8, f32}, {fake(1024), 32, f32}, nullptr);
                    })
                .find("null"),
            std::string::npos);
  // In place only as this rank's slice (rank 1: elements 8..15).
  EXPECT_NE(refusal(c,
                    [&] {
                      c.all_gather({fake(4), 8, f32}, {fake(), 32, f32}, nullptr);
                    })
                .find("in place"),
            std::string::npos);
  c.all_gather({nullptr, 0, f32}, {nullptr, 0, f32}, nullptr);  // empty: no device check
  EXPECT_EQ(c.calls, 1);
}

TEST(CommChecks, ReduceScatterAndAllToAllShapes) {
  Recorder c(0, 4);
  const auto h = DType::Float16;
  refusal(c, [&] { c.reduce_scatter({fake(), 30, h}, {fake(4096), 8, h}, nullptr); });
  refusal(c, [&] { c.reduce_scatter({fake(), 32, h}, {fake(8), 8, h}, nullptr); });  // not slice 0
  refusal(c, [&] { c.all_to_all({fake(), 30, h}, {fake(4096), 30, h}, nullptr); });  // 30 % 4
  refusal(c, [&] { c.all_to_all({fake(), 32, h}, {fake(4096), 28, h}, nullptr); });
  refusal(c, [&] { c.all_to_all({fake(), 32, h}, {fake(2), 32, h}, nullptr); });  // overlap
  c.reduce_scatter({nullptr, 0, h}, {nullptr, 0, h}, nullptr);
  c.all_to_all({nullptr, 0, h}, {nullptr, 0, h}, nullptr);
  EXPECT_EQ(c.calls, 2);
}

TEST(CommChecks, AllToAllVSlices) {
  Recorder c(1, 3);
  const auto i32 = DType::Int32;
  const std::vector<std::size_t> none;
  EXPECT_NE(refusal(c,
                    [&] {
                      c.all_to_all_v({fake(), 9, i32}, {3, 3}, none, {fake(4096), 9, i32},
                                     {3, 3, 3}, none, nullptr);
                    })
                .find("send_counts has 2 entries for 3 ranks"),
            std::string::npos);
  EXPECT_NE(refusal(c,
                    [&] {
                      c.all_to_all_v({fake(), 8, i32}, {3, 3, 3}, none, {fake(4096), 9, i32},
                                     {3, 3, 3}, none, nullptr);
                    })
                .find("ends past the buffer"),
            std::string::npos);
  EXPECT_NE(refusal(c,
                    [&] {
                      c.all_to_all_v({fake(), 9, i32}, {3, 3, 3}, none, {fake(4096), 9, i32},
                                     {3, 3, 3}, {0, 2, 6}, nullptr);
                    })
                .find("overlap"),
            std::string::npos);
  EXPECT_NE(refusal(c,
                    [&] {
                      c.all_to_all_v({fake(), 9, i32}, {3, 2, 3}, none, {fake(4096), 9, i32},
                                     {3, 3, 3}, none, nullptr);
                    })
                .find("sends itself 2 elements but expects 3"),
            std::string::npos);
  // Empty slices, reversed offsets with gaps: accepted, offsets resolved for the backend.
  c.all_to_all_v({nullptr, 0, i32}, {0, 0, 0}, none, {nullptr, 0, i32}, {0, 0, 0}, none, nullptr);
  EXPECT_EQ(c.calls, 1);
  EXPECT_EQ(c.last_send_offsets, (std::vector<std::size_t>{0, 0, 0}));
}

TEST(CommChecks, BroadcastAndPointToPoint) {
  Recorder c(1, 4);
  const auto u8 = DType::UInt8;
  refusal(c, [&] { c.broadcast({}, {fake(), 8, u8}, 4, nullptr); });
  refusal(c, [&] { c.broadcast({}, {fake(), 8, u8}, -1, nullptr); });
  Recorder root(0, 4);
  refusal(root, [&] { root.broadcast({fake(), 7, u8}, {fake(64), 8, u8}, 0, nullptr); });
  refusal(root, [&] { root.broadcast({fake(), 8, u8}, {fake(4), 8, u8}, 0, nullptr); });
  refusal(c, [&] { c.send({fake(), 8, u8}, 1, nullptr); });  // itself
  refusal(c, [&] { c.send({fake(), 8, u8}, 4, nullptr); });
  refusal(c, [&] { c.recv({fake(), 8, u8}, -1, nullptr); });
  refusal(c, [&] { c.send_recv({fake(), 8, u8}, 2, {fake(4), 8, u8}, 0, nullptr); });  // overlap
  refusal(c, [&] { c.send_recv({fake(), 8, u8}, 1, {fake(64), 8, u8}, 0, nullptr); });
  c.send({nullptr, 0, u8}, 2, nullptr);
  c.broadcast({}, {nullptr, 0, u8}, 0, nullptr);  // a non-root's send is not read
  EXPECT_EQ(c.calls, 2);
}

TEST(CommChecks, FailureStopsTheCommunicator) {
  Recorder c(0, 2);
  c.fail_next = true;
  try {
    c.barrier(nullptr);
    FAIL() << "the failure was not raised";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("rank 0 of 2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("the peer went away"), std::string::npos) << e.what();
  }
  EXPECT_EQ(c.aborts, 1);
  c.fail_next = false;
  EXPECT_THROW(c.barrier(nullptr), CommError);  // every later call
  EXPECT_THROW(c.all_gather({nullptr, 0}, {nullptr, 0}, nullptr), CommError);
  EXPECT_EQ(c.calls, 1);
  EXPECT_EQ(c.aborts, 1);
}

TEST(CommChecks, TimeoutSetting) {
  {
    ScopedEnv env("KJIT_COMM_TIMEOUT_S", std::nullopt);
    EXPECT_EQ(resolve_timeout({}), std::chrono::seconds(300));
    EXPECT_EQ(resolve_timeout({std::chrono::milliseconds(1500)}), std::chrono::milliseconds(1500));
    EXPECT_THROW(resolve_timeout({std::chrono::milliseconds(-1)}), InvalidArgument);
  }
  {
    ScopedEnv env("KJIT_COMM_TIMEOUT_S", "2.5");
    EXPECT_EQ(resolve_timeout({}), std::chrono::milliseconds(2500));
  }
  for (const char* bad : {"abc", "0", "-3", "5s", "nan", "1e30"}) {
    ScopedEnv env("KJIT_COMM_TIMEOUT_S", bad);
    try {
      resolve_timeout({});
      ADD_FAILURE() << bad << " was accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("KJIT_COMM_TIMEOUT_S"), std::string::npos);
    }
  }
}

TEST(CommChecks, MissingNcclIsAClearError) {
  // In a child process: this process's NCCL table may already be loaded.
  const test::ProcessResult r = test::run_process({test::test_helper_path(), "no-nccl"},
                                                  {{"KJIT_LIBNCCL", "/nonexistent/libnccl.so.2"}});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("NCCL is not available: dlopen(/nonexistent/libnccl.so.2) failed"),
            std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace kjit::comm

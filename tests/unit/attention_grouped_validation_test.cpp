// Grouped attention input validation runs on the host before any device work: every bad input
// throws InvalidArgument (the C ABI: KJIT_ERROR_INVALID_ARGUMENT and kjit_last_error()) naming the
// group, and for windows the sequence. The tensors' data pointers are fake host addresses, so
// these run without a GPU (and never reach one where there is: each call here fails validation).
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "kjit/attention.hpp"
#include "kjit/c_api.h"
#include "kjit/error.hpp"
#include "ops/attention/flash_grouped_backward.hpp"
#include "ops/attention/flash_grouped_forward.hpp"
#include "tests/support/dl_tensor.hpp"

namespace kjit::test {
namespace {

using attention::AttentionGroup;
using attention::BackwardOptions;
using attention::ForwardOptions;
using attention::SharedKeys;

void* fake(std::uintptr_t offset = 0) {
  return reinterpret_cast<void*>(0x200000 + offset);
}

constexpr DType kBf16 = DType::BFloat16;

// Two sequences of 12 and 20 keys (GQA 8/2, hd 128); group 0 has 4 + 6 query tokens over the
// windows [0, 12) and [0, 16), group 1 has 3 + 5 over [2, 10) and [5, 20).
// The views hold pointers into the host vectors: a moved Groups keeps them valid (a vector's
// move takes its buffer), so tests reset one with `g = Groups{}`.
struct Groups {
  std::vector<std::int32_t> cu_k{0, 12, 32};
  std::vector<std::int32_t> cu_q[2] = {{0, 4, 10}, {0, 3, 8}};
  std::vector<std::int32_t> windows[2] = {{0, 12, 0, 16}, {2, 10, 5, 20}};
  TensorView k{fake(), kBf16, {32, 2, 128}};
  TensorView dk{fake(), kBf16, {32, 2, 128}};
  std::vector<AttentionGroup> groups;

  Groups() {
    for (int g = 0; g < 2; ++g) {
      const std::int64_t t = cu_q[g].back();
      AttentionGroup a;
      a.q = a.out = a.dout = a.dq = TensorView(fake(), kBf16, {t, 8, 128});
      a.lse = TensorView(fake(), DType::Float32, {8, t});
      a.cu_seqlens_q = TensorView(fake(), DType::Int32, {3});
      a.host_cu_seqlens_q = cu_q[g].data();
      a.windows = TensorView(fake(), DType::Int32, {2, 2});
      a.host_windows = windows[g].data();
      groups.push_back(a);
    }
  }
  SharedKeys keys() const { return {k, k, TensorView(fake(), DType::Int32, {3}), cu_k.data()}; }
  int count() const { return static_cast<int>(groups.size()); }
};

std::string forward_error(const Groups& g, const ForwardOptions& o = {}) {
  try {
    attention::forward_grouped(g.groups.data(), g.count(), g.keys(), o, nullptr);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "(accepted)";
}

std::string backward_error(const Groups& g, const BackwardOptions& o = {}) {
  try {
    attention::backward_grouped(g.groups.data(), g.count(), g.keys(), g.dk, g.dk, o, nullptr);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "(accepted)";
}

void expect_names(const std::string& error, std::initializer_list<const char*> needles) {
  for (const char* needle : needles)
    EXPECT_NE(error.find(needle), std::string::npos)
        << "expected \"" << needle << "\" in: " << error;
}

// The forward's and the backward's messages both name `needles`.
void expect_both(const Groups& g, std::initializer_list<const char*> needles) {
  expect_names(forward_error(g), needles);
  expect_names(backward_error(g), needles);
}

TEST(AttentionGroupedValidation, AcceptsGroupsAndSizesTheProblemByTheLongestWindow) {
  Groups g;
  const auto forward = ops::GroupedForward::validate(g.groups.data(), g.count(), g.keys(), {});
  EXPECT_EQ(forward.problem.groups, 2);
  EXPECT_EQ(forward.problem.batch, 2);
  EXPECT_EQ(forward.problem.heads_q, 8);
  EXPECT_EQ(forward.problem.heads_k, 2);
  EXPECT_EQ(forward.problem.head_dim, 128);
  EXPECT_EQ(forward.problem.seqlen_q, 6);   // the longest query segment
  EXPECT_EQ(forward.problem.seqlen_k, 16);  // the longest window, not the longest sequence (20)
  const auto backward =
      ops::GroupedBackward::validate(g.groups.data(), g.count(), g.keys(), g.dk, g.dk, {});
  EXPECT_EQ(backward.problem.groups, 2);
  EXPECT_EQ(backward.problem.batch, 2);
  EXPECT_EQ(backward.problem.seqlen_q, 6);
}

TEST(AttentionGroupedValidation, AcceptsWindowsAtTheEdgesEmptyWindowsAndEmptyGroups) {
  Groups g;
  g.windows[0] = {12, 12, 0, 20};  // an empty window at the end, a whole sequence
  g.windows[1] = {0, 0, 20, 20};   // empty windows only
  // A third group without query tokens: null data, as torch gives for empty tensors.
  std::vector<std::int32_t> cu_empty{0, 0, 0}, windows_empty{0, 12, 3, 9};
  AttentionGroup empty;
  empty.q = empty.out = empty.dout = empty.dq = TensorView(nullptr, kBf16, {0, 8, 128});
  empty.lse = TensorView(nullptr, DType::Float32, {8, 0});
  empty.cu_seqlens_q = TensorView(fake(), DType::Int32, {3});
  empty.host_cu_seqlens_q = cu_empty.data();
  empty.windows = TensorView(fake(), DType::Int32, {2, 2});
  empty.host_windows = windows_empty.data();
  g.groups.push_back(empty);
  const auto forward = ops::GroupedForward::validate(g.groups.data(), g.count(), g.keys(), {});
  EXPECT_EQ(forward.problem.groups, 3);
  EXPECT_EQ(forward.problem.seqlen_k, 20);
  EXPECT_NO_THROW(
      ops::GroupedBackward::validate(g.groups.data(), g.count(), g.keys(), g.dk, g.dk, {}));
  // The forward may skip the lse (null data).
  g.groups[0].lse = TensorView(nullptr, DType::Float32, {8, 10});
  EXPECT_NO_THROW(ops::GroupedForward::validate(g.groups.data(), g.count(), g.keys(), {}));
  // Sixteen groups are the most.
  Groups many;
  const AttentionGroup first = many.groups[0];
  many.groups.resize(attention::kMaxGroups, first);
  EXPECT_NO_THROW(ops::GroupedForward::validate(many.groups.data(), many.count(), many.keys(), {}));
}

TEST(AttentionGroupedValidation, WindowErrorsNameTheGroupAndTheSequence) {
  Groups g;
  g.windows[1] = {2, 10, 5, 21};  // sequence 1 holds 20 keys
  expect_both(g, {"group 1", "sequence 1", "[5, 21)"});
  g = Groups{};
  g.windows[0] = {5, 3, 0, 16};
  expect_both(g, {"group 0", "sequence 0", "[5, 3)"});
  g = Groups{};
  g.windows[1] = {-1, 4, 5, 20};
  expect_both(g, {"group 1", "sequence 0", "[-1, 4)"});
  g = Groups{};
  g.windows[0] = {0, 13, 0, 16};  // sequence 0 holds 12 keys
  expect_both(g, {"group 0", "sequence 0", "[0, 13)"});
}

TEST(AttentionGroupedValidation, WindowTensorsAreChecked) {
  Groups g;
  g.groups[1].host_windows = nullptr;
  expect_both(g, {"group 1", "host copy of windows"});
  g = Groups{};
  g.groups[0].windows = TensorView(fake(), DType::Int64, {2, 2});
  expect_both(g, {"group 0", "windows"});
  g = Groups{};
  g.groups[1].windows = TensorView(fake(), DType::Int32, {2, 3});
  expect_both(g, {"group 1", "windows"});
  g = Groups{};
  g.groups[1].windows = TensorView(fake(), DType::Int32, {3, 2});  // B = 2
  expect_both(g, {"group 1", "windows"});
}

TEST(AttentionGroupedValidation, SequenceErrorsNameTheGroup) {
  Groups g;
  // Group 1 over one sequence while the keys have two.
  g.cu_q[1] = {0, 8};
  g.groups[1].cu_seqlens_q = TensorView(fake(), DType::Int32, {2});
  g.groups[1].host_cu_seqlens_q = g.cu_q[1].data();
  g.groups[1].windows = TensorView(fake(), DType::Int32, {1, 2});
  expect_both(g, {"group 1", "cu_seqlens"});
  g = Groups{};
  g.cu_q[1] = {0, 5, 3};  // decreasing, and not the tensor's 8 tokens
  expect_both(g, {"group 1", "cu_seqlens_q"});
  g = Groups{};
  g.cu_q[0] = {0, 4, 9};  // the tensor holds 10 tokens
  expect_both(g, {"group 0", "cu_seqlens_q"});
  g = Groups{};
  g.groups[0].host_cu_seqlens_q = nullptr;
  expect_both(g, {"group 0", "cu_seqlens_q"});
}

TEST(AttentionGroupedValidation, GroupsMustAgreeOnDtypeHeadsAndHeadDim) {
  Groups g;
  for (TensorView* t : {&g.groups[1].q, &g.groups[1].out, &g.groups[1].dout, &g.groups[1].dq})
    t->dtype = DType::Float16;
  expect_both(g, {"group 1"});
  g = Groups{};
  g.groups[1].q = g.groups[1].out = g.groups[1].dout = g.groups[1].dq =
      TensorView(fake(), kBf16, {8, 4, 128});  // 4 query heads, group 0 has 8
  g.groups[1].lse = TensorView(fake(), DType::Float32, {4, 8});
  expect_both(g, {"group 1"});
  g = Groups{};
  g.groups[1].q = TensorView(fake(), kBf16, {8, 8, 64});
  g.groups[1].out = g.groups[1].q;
  expect_names(forward_error(g), {"group 1"});
  g = Groups{};
  g.groups[0].out = TensorView(fake(), kBf16, {9, 8, 128});
  expect_both(g, {"group 0", "out"});
  g = Groups{};
  g.groups[1].q.data = fake(8);  // not 16-byte aligned
  expect_both(g, {"group 1", "q"});
  g = Groups{};
  g.groups[1].lse = TensorView(fake(), DType::Float32, {8, 9});
  expect_both(g, {"group 1", "lse"});
}

TEST(AttentionGroupedValidation, BackwardTensorsAreChecked) {
  Groups g;
  g.groups[0].lse = TensorView(nullptr, DType::Float32, {8, 10});  // the backward needs it
  expect_names(backward_error(g), {"group 0", "lse"});
  g = Groups{};
  g.groups[1].dq = TensorView(fake(), kBf16, {7, 8, 128});
  expect_names(backward_error(g), {"group 1", "dq"});
  g = Groups{};
  g.groups[1].dout = TensorView(fake(), DType::Float16, {8, 8, 128});
  expect_names(backward_error(g), {"group 1", "dout"});
  g = Groups{};
  g.groups[0].dq = TensorView();
  expect_names(backward_error(g), {"group 0", "dq"});
  g = Groups{};
  g.dk = TensorView(fake(), kBf16, {31, 2, 128});
  expect_names(backward_error(g), {"dk"});
  BackwardOptions deterministic;
  deterministic.deterministic = true;
  expect_names(backward_error(Groups{}, deterministic), {"deterministic"});
  BackwardOptions small;
  small.workspace = fake();
  small.workspace_bytes = 64;
  expect_names(backward_error(Groups{}, small), {"workspace"});
}

TEST(AttentionGroupedValidation, GroupCountIsOneToSixteen) {
  Groups g;
  const SharedKeys keys = g.keys();
  const auto error = [&](const std::function<void()>& call) {
    try {
      call();
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  std::vector<AttentionGroup> many(17, g.groups[0]);
  for (int count : {0, 17, -1}) {
    const std::string n = std::to_string(count);
    expect_names(error([&] { attention::forward_grouped(many.data(), count, keys, {}, nullptr); }),
                 {"16", n.c_str()});
    expect_names(error([&] {
                   attention::backward_grouped(many.data(), count, keys, g.dk, g.dk, {}, nullptr);
                 }),
                 {"16", n.c_str()});
    expect_names(error([&] { attention::backward_grouped_workspace_bytes(many.data(), count); }),
                 {"16", n.c_str()});
  }
  expect_names(error([&] { attention::forward_grouped(nullptr, 2, keys, {}, nullptr); }),
               {"groups"});
  expect_names(
      error([&] { attention::backward_grouped(nullptr, 2, keys, g.dk, g.dk, {}, nullptr); }),
      {"groups"});
  ForwardOptions negative;
  negative.softmax_scale = -1.f;
  expect_names(forward_error(g, negative), {"softmax_scale"});
}

// ---- the C ABI ----

// The groups as DLTensors (pointing into `g`'s views).
struct CGroups {
  struct Tensors {
    DLTensor q, out, lse, cu_q, windows, dout, dq;
  };
  std::vector<Tensors> tensors;
  std::vector<kjit_attention_group> groups;
  DLTensor k, cu_k, dk;

  explicit CGroups(const Groups& g) {
    tensors.reserve(g.groups.size());
    for (const AttentionGroup& a : g.groups) {
      tensors.push_back(
          {dl(a.q), dl(a.out), dl(a.lse), dl(a.cu_seqlens_q), dl(a.windows), dl(a.dout), dl(a.dq)});
      Tensors& t = tensors.back();
      groups.push_back({&t.q, &t.out, &t.lse, &t.cu_q, a.host_cu_seqlens_q, &t.windows,
                        a.host_windows, &t.dout, &t.dq});
    }
  }
  void set_keys(const Groups& g, const SharedKeys& keys) {
    k = dl(keys.k);
    cu_k = dl(keys.cu_seqlens_k);
    dk = dl(g.dk);
  }
  kjit_status forward(const Groups& g) {
    return kjit_attention_forward_grouped(groups.data(), static_cast<int>(groups.size()), &k, &k,
                                          &cu_k, g.cu_k.data(), 0.f, 1, nullptr);
  }
  kjit_status backward(const Groups& g, void* workspace = nullptr, std::size_t bytes = 0) {
    return kjit_attention_backward_grouped(groups.data(), static_cast<int>(groups.size()), &k, &k,
                                           &cu_k, g.cu_k.data(), &dk, &dk, 0.f, 1, workspace, bytes,
                                           nullptr);
  }
};

TEST(AttentionGroupedCApi, ReportsInvalidArgumentsNamingTheGroupAndSequence) {
  Groups g;
  g.windows[1] = {2, 10, 5, 21};
  const SharedKeys keys = g.keys();
  CGroups c(g);
  c.set_keys(g, keys);
  EXPECT_EQ(c.forward(g), KJIT_ERROR_INVALID_ARGUMENT);
  expect_names(kjit_last_error(), {"group 1", "sequence 1", "[5, 21)"});
  EXPECT_EQ(c.backward(g), KJIT_ERROR_INVALID_ARGUMENT);
  expect_names(kjit_last_error(), {"group 1", "sequence 1", "[5, 21)"});

  g = Groups{};
  g.windows[0] = {5, 3, 0, 16};
  CGroups begin_after_end(g);
  begin_after_end.set_keys(g, keys);
  EXPECT_EQ(begin_after_end.forward(g), KJIT_ERROR_INVALID_ARGUMENT);
  expect_names(kjit_last_error(), {"group 0", "sequence 0", "[5, 3)"});
  EXPECT_EQ(begin_after_end.backward(g), KJIT_ERROR_INVALID_ARGUMENT);
  expect_names(kjit_last_error(), {"group 0", "sequence 0", "[5, 3)"});
}

TEST(AttentionGroupedCApi, RefusesNullTensorsCountsAndSmallWorkspaces) {
  Groups g;
  const SharedKeys keys = g.keys();
  CGroups c(g);
  c.set_keys(g, keys);
  c.groups[1].q = nullptr;
  EXPECT_EQ(c.forward(g), KJIT_ERROR_INVALID_ARGUMENT);
  expect_names(kjit_last_error(), {"q", "NULL"});
  c = CGroups(g);
  c.set_keys(g, keys);
  c.groups[0].lse = nullptr;  // optional in the forward, required in the backward
  EXPECT_EQ(c.backward(g), KJIT_ERROR_INVALID_ARGUMENT);
  expect_names(kjit_last_error(), {"lse"});
  c = CGroups(g);
  c.set_keys(g, keys);
  c.groups[1].dq = nullptr;
  EXPECT_EQ(c.backward(g), KJIT_ERROR_INVALID_ARGUMENT);
  expect_names(kjit_last_error(), {"dq"});
  c = CGroups(g);
  c.set_keys(g, keys);
  EXPECT_EQ(c.backward(g, fake(), 64), KJIT_ERROR_INVALID_ARGUMENT);
  expect_names(kjit_last_error(), {"workspace"});
  EXPECT_EQ(kjit_attention_forward_grouped(c.groups.data(), 0, &c.k, &c.k, &c.cu_k, g.cu_k.data(),
                                           0.f, 1, nullptr),
            KJIT_ERROR_INVALID_ARGUMENT);
  expect_names(kjit_last_error(), {"16", "0"});
  EXPECT_EQ(kjit_attention_forward_grouped(nullptr, 2, &c.k, &c.k, &c.cu_k, g.cu_k.data(), 0.f, 1,
                                           nullptr),
            KJIT_ERROR_INVALID_ARGUMENT);
  expect_names(kjit_last_error(), {"groups"});
  EXPECT_EQ(kjit_attention_forward_grouped(c.groups.data(), 2, nullptr, &c.k, &c.cu_k,
                                           g.cu_k.data(), 0.f, 1, nullptr),
            KJIT_ERROR_INVALID_ARGUMENT);
  expect_names(kjit_last_error(), {"k"});
}

TEST(AttentionGroupedCApi, WorkspaceBytes) {
  Groups g;
  CGroups c(g);
  std::size_t bytes = 7;
  ASSERT_EQ(kjit_attention_backward_grouped_workspace_bytes(c.groups.data(), 2, &bytes),
            KJIT_SUCCESS)
      << kjit_last_error();
  EXPECT_EQ(bytes, attention::backward_grouped_workspace_bytes(g.groups.data(), 2));
  EXPECT_GT(bytes, 0u);
  // One group's workspace is smaller than two groups'.
  std::size_t one = 0;
  ASSERT_EQ(kjit_attention_backward_grouped_workspace_bytes(c.groups.data(), 1, &one),
            KJIT_SUCCESS);
  EXPECT_LT(one, bytes);
  EXPECT_EQ(kjit_attention_backward_grouped_workspace_bytes(c.groups.data(), 17, &bytes),
            KJIT_ERROR_INVALID_ARGUMENT);
  expect_names(kjit_last_error(), {"16", "17"});
  EXPECT_EQ(kjit_attention_backward_grouped_workspace_bytes(c.groups.data(), 2, nullptr),
            KJIT_ERROR_INVALID_ARGUMENT);
}

}  // namespace
}  // namespace kjit::test

// Zigzag attention over a communicator (kjit/zigzag.hpp). Per step (a group of heads_k_stride
// K/V heads): this rank's K and V of those heads are packed into its slot of a gathered buffer
// and all-gathered on a side stream, two buffers deep, so that the next step's gather runs while
// the main stream computes this one; the keys [0, key_chunks) of every sequence are extracted
// from the rank-major buffer, and the rank's two chunks run as one grouped attention over them.
// The queries (and in the backward out, dout, lse) are split by chunk kind once per call, the
// results merged back once: each group's rows must be one packed run.
#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "driver/stream_allocation.hpp"
#include "driver/stream_fence.hpp"
#include "kjit/attention.hpp"
#include "kjit/error.hpp"
#include "kjit/zigzag.hpp"
#include "ops/attention/attention_inputs.hpp"
#include "ops/attention/flash_forward.hpp"
#include "ops/attention/flash_grouped_backward.hpp"
#include "ops/cp/zigzag_copy.hpp"
#include "ops/cp/zigzag_layout.hpp"
#include "ops/dispatch.hpp"

namespace kjit::ops {
namespace {

constexpr const char* kForward = "zigzag_forward";
constexpr const char* kBackward = "zigzag_backward";

// What one call derives from its inputs.
struct ZigzagGeometry {
  ZigzagShape shape;
  int rank = 0;
  DType dtype = DType::BFloat16;
  std::int64_t heads_q = 0, heads_k = 0, dim = 0;
  std::int64_t stride = 0;  // K/V heads per step
  int key_chunks = 0;       // keys [0, key_chunks) of each sequence: what the late chunk attends
  bool causal = true;
  float scale = 0;

  std::int64_t local() const { return shape.local_tokens(); }
  std::int64_t half() const { return shape.chunk_tokens(); }  // one chunk kind's rows
  std::int64_t steps() const { return heads_k / stride; }
  std::int64_t query_heads() const { return stride * (heads_q / heads_k); }  // per step
  std::int64_t slot_elements() const { return 2 * local() * stride * dim; }  // K and V of a rank
  std::int64_t key_rows() const { return key_chunks * shape.chunk_tokens(); }
  std::int64_t elem() const { return static_cast<std::int64_t>(dtype_size(dtype)); }
};

ZigzagGeometry check_inputs(const char* op, const comm::Communicator& comm, const TensorView& q,
                            const TensorView& k, const TensorView& v, const TensorView& out,
                            const cp::ZigzagSequences& seqs, const cp::ZigzagOptions& options) {
  const TensorChecks checks(op);
  ZigzagGeometry g;
  g.shape = check_zigzag_sequences(op, seqs, comm.size());
  g.rank = comm.rank();
  check_attention_tensors(q, k, v, out, 3, checks);
  if (q.size(0) != g.local() || k.size(0) != g.local() || v.size(0) != g.local()) {
    checks.fail(fmt::format(
        "q, k and v must hold this rank's {} tokens (T / W = {} / {}), got {}, {} and {}",
        g.local(), g.shape.tokens, comm.size(), q.describe(), k.describe(), v.describe()));
  }
  g.dtype = q.dtype;
  g.heads_q = q.size(1);
  g.heads_k = k.size(1);
  g.dim = q.size(2);
  g.causal = options.causal;
  g.scale = softmax_scale(options.softmax_scale, g.dim);
  FlashForward::check(
      {g.dtype, g.shape.batch, g.heads_q, g.heads_k, g.dim, g.local(), g.shape.tokens, g.causal});
  g.stride = options.heads_k_stride == 0 ? g.heads_k : options.heads_k_stride;
  if (g.stride < 1 || g.heads_k % g.stride != 0) {
    checks.fail(fmt::format("heads_k_stride must divide the {} K/V heads, got {}", g.heads_k,
                            options.heads_k_stride));
  }
  g.key_chunks = g.causal ? 2 * comm.size() - g.rank : 2 * comm.size();
  // The grouped calls' limits, checked for the longest sequence's chunks (the same on every rank):
  // every rank refuses alike, before any collective, or none does.
  std::int64_t longest = 0;
  for (std::int64_t b = 0; b < g.shape.batch; ++b) {
    longest = std::max<std::int64_t>(
        longest, seqs.host_cu_seqlens[b + 1] - std::int64_t{seqs.host_cu_seqlens[b]});
  }
  GroupedBackward::check({g.dtype, 2, g.shape.batch, g.heads_q, g.heads_k, g.dim,
                          longest / (2 * comm.size()), longest, g.causal});
  return g;
}

// The grouped attention's sequence table (zigzag_copy_params.h's plan): the host copy the
// grouped op validates, made by the code that writes the device copy in the first extract.
class Plan {
 public:
  Plan(const std::int32_t* cu, const ZigzagGeometry& g) : batch_(g.shape.batch) {
    host_.resize(static_cast<std::size_t>(6 * batch_ + 2));
    KjitZigzagCopyParams p{};
    p.cu_seqlens = cu;
    p.batch = static_cast<int>(batch_);
    p.world = g.shape.world;
    p.rank = g.rank;
    p.chunk_end = g.key_chunks;
    p.plan = host_.data();
    p.plan_causal = g.causal ? 1 : 0;
    for (int b = 0; b <= p.batch; ++b)
      cp::write_plan_entries(p, b);
  }
  std::size_t bytes() const { return host_.size() * sizeof(std::int32_t); }
  void place(void* device) { device_ = static_cast<std::int32_t*>(device); }
  int* device() const { return device_; }

  TensorView cu_q() const { return {device_, DType::Int32, {batch_ + 1}}; }
  TensorView cu_k() const { return {device_ + batch_ + 1, DType::Int32, {batch_ + 1}}; }
  TensorView windows(int kind) const {
    return {device_ + window_at(kind), DType::Int32, {batch_, 2}};
  }
  const std::int32_t* host_cu_q() const { return host_.data(); }
  const std::int32_t* host_cu_k() const { return host_.data() + batch_ + 1; }
  const std::int32_t* host_windows(int kind) const { return host_.data() + window_at(kind); }

 private:
  std::int64_t window_at(int kind) const { return 2 * (batch_ + 1) + 2 * kind * batch_; }
  std::int64_t batch_;
  std::vector<std::int32_t> host_;
  std::int32_t* device_ = nullptr;
};

// One scratch allocation carved into 256-byte aligned pieces.
class Scratch {
 public:
  // Reserves `bytes`; the pointer is valid after allocate().
  std::size_t reserve(std::int64_t bytes) {
    const std::size_t at = size_;
    size_ += (static_cast<std::size_t>(bytes) + 255) / 256 * 256;
    return at;
  }
  void allocate(StreamHandle stream) { memory_.emplace(size_, stream); }
  char* at(std::size_t offset) const { return static_cast<char*>(memory_->data()) + offset; }

 private:
  std::size_t size_ = 0;
  std::optional<driver::StreamAllocation> memory_;
};

// [rows, H, D] views of packed scratch, and head slices of [T, H, D] tensors.
TensorView rows_view(void* data, DType dtype, std::int64_t rows, std::int64_t heads,
                     std::int64_t dim) {
  return {data, dtype, {rows, heads, dim}, {heads * dim, dim, 1}};
}
TensorView head_slice(const TensorView& t, std::int64_t first, std::int64_t count,
                      std::int64_t row_begin = 0, std::int64_t rows = -1) {
  auto* data = static_cast<char*>(t.data) + (row_begin * t.stride(0) + first * t.stride(1)) *
                                                static_cast<std::int64_t>(dtype_size(t.dtype));
  return {data,
          t.dtype,
          {rows < 0 ? t.size(0) : rows, count, t.size(2)},
          {t.stride(0), t.stride(1), t.stride(2)}};
}
// An lse [H, T] as the [T, H, 1] rows a move walks.
TensorView lse_rows(void* data, std::int64_t heads, std::int64_t tokens, std::int64_t head_stride) {
  return {data, DType::Float32, {tokens, heads, 1}, {1, head_stride, 1}};
}

// A move between layouts through the zigzag_copy family; a second pair (V beside K) moves in the
// same launch when its strides match the first's.
void move(const char* op, const ZigzagGeometry& g, const cp::ZigzagSequences& seqs,
          const ZigzagSide& from, const ZigzagSide& to, StreamHandle stream,
          cp::ChunkRange chunks = {}, const TensorView* from2 = nullptr,
          const TensorView* to2 = nullptr, const Plan* plan = nullptr) {
  if (from2 && (from2->strides != from.tensor->strides || to2->strides != to.tensor->strides)) {
    move(op, g, seqs, from, to, stream, chunks, nullptr, nullptr, plan);
    move(op, g, seqs, {from2, from.kind, from.slot_stride}, {to2, to.kind, to.slot_stride}, stream,
         chunks);
    return;
  }
  Call<ZigzagCopy> call =
      ZigzagCopy::validate(op, g.shape, seqs.cu_seqlens, from, to, g.rank, chunks, from2, to2);
  if (plan) {
    call.args.plan = plan->device();
    call.args.plan_causal = g.causal ? 1 : 0;
  }
  run(call, stream);
}

// The K/V of each step from every rank, through the side stream (the file comment). The
// destructor makes the main stream wait for the side stream, so that scratch freed in stream
// order after it is never in use.
class KeySteps {
 public:
  KeySteps(const char* op, comm::Communicator& comm, const ZigzagGeometry& g,
           const cp::ZigzagSequences& seqs, const TensorView& k, const TensorView& v,
           std::array<char*, 2> buffers, StreamHandle main)
      : op_(op), comm_(comm), g_(g), seqs_(seqs), k_(k), v_(v), buffers_(buffers), main_(main) {}
  ~KeySteps() {
    try {
      idle_.signal(side_.handle());
      idle_.wait(main_);
    } catch (...) {  // a failed driver: nothing more can be ordered
    }
  }
  KeySteps(const KeySteps&) = delete;
  KeySteps& operator=(const KeySteps&) = delete;

  // Queues step s's gather behind the main stream's work so far (which holds the last reader of
  // its buffer, step s - 2).
  void gather(std::int64_t s) {
    if (s >= g_.steps()) return;
    const StreamHandle side = fork();
    char* buffer = buffers_[s % 2];
    char* slot = buffer + g_.rank * g_.slot_elements() * g_.elem();
    const std::int64_t heads = g_.stride, first = s * g_.stride;
    const TensorView k_slot = rows_view(slot, g_.dtype, g_.local(), heads, g_.dim);
    const TensorView v_slot = rows_view(slot + g_.local() * heads * g_.dim * g_.elem(), g_.dtype,
                                        g_.local(), heads, g_.dim);
    const TensorView k_heads = head_slice(k_, first, heads), v_heads = head_slice(v_, first, heads);
    move(op_, g_, seqs_, {&k_heads, KJIT_ZIGZAG_LOCAL}, {&k_slot, KJIT_ZIGZAG_LOCAL}, side, {},
         &v_heads, &v_slot);
    const auto count = static_cast<std::size_t>(g_.slot_elements());
    comm_.all_gather({slot, count, g_.dtype},
                     {buffer, count * static_cast<std::size_t>(g_.shape.world), g_.dtype}, side);
    gathered_[s % 2].signal(side);
  }

  // The main stream waits for step s's gather, then extracts the keys [0, key_chunks) of every
  // sequence into keys_k and keys_v ([key_rows, stride, D]); with `plan`, writes it too.
  void extract(std::int64_t s, const TensorView& keys_k, const TensorView& keys_v,
               const Plan* plan) {
    gathered_[s % 2].wait(main_);
    const auto [k_all, v_all] = gathered_views(s);
    move(op_, g_, seqs_, {&k_all, KJIT_ZIGZAG_GATHERED, g_.slot_elements()},
         {&keys_k, KJIT_ZIGZAG_CHUNKS}, main_, {0, g_.key_chunks}, &v_all, &keys_v, plan);
  }

  // The backward's end of step s: dK/dV of the keys go back to every rank's zigzag slots in
  // step s's buffer (free since its extract), are reduce-scattered on the side stream into
  // `received` ([2, local, stride, D]) and copied into this rank's dk and dv heads.
  void reduce_scatter(std::int64_t s, const TensorView& keys_dk, const TensorView& keys_dv,
                      char* received, const TensorView& dk, const TensorView& dv) {
    const auto [dk_all, dv_all] = gathered_views(s);
    move(op_, g_, seqs_, {&keys_dk, KJIT_ZIGZAG_CHUNKS},
         {&dk_all, KJIT_ZIGZAG_GATHERED, g_.slot_elements()}, main_, {0, g_.key_chunks}, &keys_dv,
         &dv_all);
    const StreamHandle side = fork();
    const auto count = static_cast<std::size_t>(g_.slot_elements());
    comm_.reduce_scatter(
        {buffers_[s % 2], count * static_cast<std::size_t>(g_.shape.world), g_.dtype},
        {received, count, g_.dtype}, side);
    const std::int64_t heads = g_.stride, first = s * g_.stride;
    const TensorView dk_got = rows_view(received, g_.dtype, g_.local(), heads, g_.dim);
    const TensorView dv_got = rows_view(received + g_.local() * heads * g_.dim * g_.elem(),
                                        g_.dtype, g_.local(), heads, g_.dim);
    const TensorView dk_heads = head_slice(dk, first, heads),
                     dv_heads = head_slice(dv, first, heads);
    move(op_, g_, seqs_, {&dk_got, KJIT_ZIGZAG_LOCAL}, {&dk_heads, KJIT_ZIGZAG_LOCAL}, side, {},
         &dv_got, &dv_heads);
  }

 private:
  StreamHandle fork() {
    forked_.signal(main_);
    forked_.wait(side_.handle());
    return side_.handle();
  }
  // Step s's buffer as K and V [T, stride, D] over the rank slots (slot_elements apart).
  std::pair<TensorView, TensorView> gathered_views(std::int64_t s) const {
    char* buffer = buffers_[s % 2];
    const std::int64_t heads = g_.stride, rows = g_.shape.tokens;
    return {
        rows_view(buffer, g_.dtype, rows, heads, g_.dim),
        rows_view(buffer + g_.local() * heads * g_.dim * g_.elem(), g_.dtype, rows, heads, g_.dim)};
  }

  const char* op_;
  comm::Communicator& comm_;
  const ZigzagGeometry& g_;
  const cp::ZigzagSequences& seqs_;
  TensorView k_, v_;
  std::array<char*, 2> buffers_;
  StreamHandle main_;
  Stream side_;
  driver::StreamFence forked_, idle_;
  std::array<driver::StreamFence, 2> gathered_;
};

// Step s's two groups (early chunk, late chunk): their rows of the split tensors and heads.
struct SplitRows {
  TensorView q, out, lse, dout, dq;  // split [local, Hq, D] (lse [Hq, local]); unset: absent
};
std::array<attention::AttentionGroup, 2> step_groups(const ZigzagGeometry& g, const Plan& plan,
                                                     const SplitRows& split, std::int64_t s) {
  std::array<attention::AttentionGroup, 2> groups{};
  const std::int64_t heads = g.query_heads(), first = s * heads;
  for (int kind = 0; kind < 2; ++kind) {
    attention::AttentionGroup& group = groups[static_cast<std::size_t>(kind)];
    const std::int64_t row = kind * g.half();
    const auto rows_of = [&](const TensorView& t) {
      return t.data ? head_slice(t, first, heads, row, g.half()) : TensorView{};
    };
    group.q = rows_of(split.q);
    group.out = rows_of(split.out);
    group.dout = rows_of(split.dout);
    group.dq = rows_of(split.dq);
    if (split.lse.data) {
      group.lse = TensorView(static_cast<float*>(split.lse.data) + first * g.local() + row,
                             DType::Float32, {heads, g.half()}, {g.local(), 1});
    }
    group.cu_seqlens_q = plan.cu_q();
    group.host_cu_seqlens_q = plan.host_cu_q();
    group.windows = plan.windows(kind);
    group.host_windows = plan.host_windows(kind);
  }
  return groups;
}

attention::SharedKeys shared_keys(const Plan& plan, const TensorView& k, const TensorView& v) {
  return {k, v, plan.cu_k(), plan.host_cu_k()};
}

}  // namespace
}  // namespace kjit::ops

namespace kjit::cp {

void zigzag_forward(comm::Communicator& comm, const TensorView& q, const TensorView& k,
                    const TensorView& v, const TensorView& out, const TensorView& lse,
                    const ZigzagSequences& seqs, const ZigzagOptions& options,
                    StreamHandle stream) {
  using namespace ops;
  const ZigzagGeometry g = check_inputs(kForward, comm, q, k, v, out, seqs, options);
  const bool with_lse = lse.data != nullptr;
  if (with_lse) check_lse(lse, 1, g.heads_q, g.local(), false, "", TensorChecks(kForward));
  if (g.local() == 0) return;

  Plan plan(seqs.host_cu_seqlens, g);
  const std::int64_t rows_bytes = g.local() * g.heads_q * g.dim * g.elem();
  const std::int64_t keys_bytes = g.key_rows() * g.stride * g.dim * g.elem();
  const std::int64_t buffer_bytes = g.shape.world * g.slot_elements() * g.elem();
  Scratch scratch;
  const std::size_t q_at = scratch.reserve(rows_bytes), out_at = scratch.reserve(rows_bytes),
                    lse_at = scratch.reserve(with_lse ? g.heads_q * g.local() * 4 : 0),
                    keys_at = scratch.reserve(2 * keys_bytes),
                    buffer_at = scratch.reserve(2 * buffer_bytes),
                    plan_at = scratch.reserve(static_cast<std::int64_t>(plan.bytes()));
  scratch.allocate(stream);
  plan.place(scratch.at(plan_at));

  SplitRows split;
  split.q = rows_view(scratch.at(q_at), g.dtype, g.local(), g.heads_q, g.dim);
  split.out = rows_view(scratch.at(out_at), g.dtype, g.local(), g.heads_q, g.dim);
  if (with_lse) split.lse = TensorView(scratch.at(lse_at), DType::Float32, {g.heads_q, g.local()});
  move(kForward, g, seqs, {&q, KJIT_ZIGZAG_LOCAL}, {&split.q, KJIT_ZIGZAG_SPLIT}, stream);
  const TensorView keys_k = rows_view(scratch.at(keys_at), g.dtype, g.key_rows(), g.stride, g.dim);
  const TensorView keys_v =
      rows_view(scratch.at(keys_at) + keys_bytes, g.dtype, g.key_rows(), g.stride, g.dim);
  {
    KeySteps steps(kForward, comm, g, seqs, k, v,
                   {scratch.at(buffer_at), scratch.at(buffer_at) + buffer_bytes}, stream);
    steps.gather(0);
    for (std::int64_t s = 0; s < g.steps(); ++s) {
      steps.gather(s + 1);
      steps.extract(s, keys_k, keys_v, s == 0 ? &plan : nullptr);
      const auto groups = step_groups(g, plan, split, s);
      attention::forward_grouped(groups.data(), 2, shared_keys(plan, keys_k, keys_v),
                                 {g.scale, g.causal}, stream);
    }
  }
  move(kForward, g, seqs, {&split.out, KJIT_ZIGZAG_SPLIT}, {&out, KJIT_ZIGZAG_LOCAL}, stream);
  if (with_lse) {
    const TensorView from = lse_rows(split.lse.data, g.heads_q, g.local(), g.local());
    const TensorView to = lse_rows(lse.data, g.heads_q, g.local(), lse.stride(0));
    move(kForward, g, seqs, {&from, KJIT_ZIGZAG_SPLIT}, {&to, KJIT_ZIGZAG_LOCAL}, stream);
  }
}

void zigzag_backward(comm::Communicator& comm, const TensorView& q, const TensorView& k,
                     const TensorView& v, const TensorView& out, const TensorView& dout,
                     const TensorView& lse, const TensorView& dq, const TensorView& dk,
                     const TensorView& dv, const ZigzagSequences& seqs,
                     const ZigzagOptions& options, StreamHandle stream) {
  using namespace ops;
  const ZigzagGeometry g = check_inputs(kBackward, comm, q, k, v, out, seqs, options);
  const TensorChecks checks(kBackward);
  check_like(dout, "dout", q, "q", 3, checks);
  check_like(dq, "dq", q, "q", 3, checks);
  check_like(dk, "dk", k, "k", 3, checks);
  check_like(dv, "dv", v, "v", 3, checks);
  check_lse(lse, 1, g.heads_q, g.local(), false, "the forward's ", checks);
  if (g.local() == 0) return;
  checks.data(lse, "lse");

  Plan plan(seqs.host_cu_seqlens, g);
  const std::int64_t rows_bytes = g.local() * g.heads_q * g.dim * g.elem();
  const std::int64_t keys_bytes = g.key_rows() * g.stride * g.dim * g.elem();
  const std::int64_t buffer_bytes = g.shape.world * g.slot_elements() * g.elem();
  Scratch scratch;
  std::array<std::size_t, 4> rows_at{};
  for (std::size_t& at : rows_at)
    at = scratch.reserve(rows_bytes);
  const std::size_t lse_at = scratch.reserve(g.heads_q * g.local() * 4),
                    keys_at = scratch.reserve(4 * keys_bytes),
                    buffer_at = scratch.reserve(2 * buffer_bytes),
                    received_at = scratch.reserve(g.slot_elements() * g.elem()),
                    plan_at = scratch.reserve(static_cast<std::int64_t>(plan.bytes()));
  scratch.allocate(stream);
  plan.place(scratch.at(plan_at));

  SplitRows split;
  TensorView* rows[4] = {&split.q, &split.out, &split.dout, &split.dq};
  for (std::size_t i = 0; i < 4; ++i)
    *rows[i] = rows_view(scratch.at(rows_at[i]), g.dtype, g.local(), g.heads_q, g.dim);
  split.lse = TensorView(scratch.at(lse_at), DType::Float32, {g.heads_q, g.local()});
  for (const auto& [local, into] :
       {std::pair{&q, &split.q}, {&out, &split.out}, {&dout, &split.dout}})
    move(kBackward, g, seqs, {local, KJIT_ZIGZAG_LOCAL}, {into, KJIT_ZIGZAG_SPLIT}, stream);
  {
    const TensorView from = lse_rows(lse.data, g.heads_q, g.local(), lse.stride(0));
    const TensorView to = lse_rows(split.lse.data, g.heads_q, g.local(), g.local());
    move(kBackward, g, seqs, {&from, KJIT_ZIGZAG_LOCAL}, {&to, KJIT_ZIGZAG_SPLIT}, stream);
  }
  std::array<TensorView, 4> keys;  // k, v, dk, dv of the step's keys
  for (std::size_t i = 0; i < 4; ++i) {
    keys[i] =
        rows_view(scratch.at(keys_at) + i * keys_bytes, g.dtype, g.key_rows(), g.stride, g.dim);
  }
  {
    KeySteps steps(kBackward, comm, g, seqs, k, v,
                   {scratch.at(buffer_at), scratch.at(buffer_at) + buffer_bytes}, stream);
    steps.gather(0);
    for (std::int64_t s = 0; s < g.steps(); ++s) {
      steps.gather(s + 1);
      steps.extract(s, keys[0], keys[1], s == 0 ? &plan : nullptr);
      const auto groups = step_groups(g, plan, split, s);
      attention::backward_grouped(groups.data(), 2, shared_keys(plan, keys[0], keys[1]), keys[2],
                                  keys[3], {g.scale, g.causal}, stream);
      steps.reduce_scatter(s, keys[2], keys[3], scratch.at(received_at), dk, dv);
    }
  }
  move(kBackward, g, seqs, {&split.dq, KJIT_ZIGZAG_SPLIT}, {&dq, KJIT_ZIGZAG_LOCAL}, stream);
}

}  // namespace kjit::cp

// What every backend shares: the argument checks (all made before anything is sent), in-place
// calls turned out of place where a backend cannot run them in place, and the failed state.
#include "kjit/comm.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

#include <fmt/format.h>

#include "comm/poll_pause.hpp"
#include "driver/cuda_driver.hpp"
#include "driver/stream_allocation.hpp"
#include "util/environment.hpp"

namespace kjit::comm {
namespace {

const char* byte_at(const void* p, std::size_t elements, DType dtype) {
  return static_cast<const char*>(p) + elements * dtype_size(dtype);
}

bool overlaps(ConstBuffer a, ConstBuffer b) {
  if (a.bytes() == 0 || b.bytes() == 0) return false;
  const char* a0 = static_cast<const char*>(a.data);
  const char* b0 = static_cast<const char*>(b.data);
  return a0 < b0 + b.bytes() && b0 < a0 + a.bytes();
}

void require(bool ok, const std::string& message) {
  if (!ok) throw InvalidArgument(message);
}

void require_null_only_if_empty(const char* what, ConstBuffer b) {
  require(b.count == 0 || b.data, fmt::format("{} is null but holds {} elements", what, b.count));
}

void require_same_dtype(ConstBuffer send, ConstBuffer recv) {
  require(send.dtype == recv.dtype, fmt::format("send is {} but recv is {}: a collective moves one "
                                                "dtype",
                                                dtype_name(send.dtype), dtype_name(recv.dtype)));
}

void require_peer(const char* what, int peer, int rank, int size) {
  require(peer >= 0 && peer < size,
          fmt::format("{} {} is not a rank of this communicator (size {})", what, peer, size));
  require(peer != rank, fmt::format("{} {} is this rank itself", what, peer));
}

// The slices [offset, offset + count) must fit the buffer; receive slices must not overlap, or
// what lands there would depend on arrival order.
std::vector<std::size_t> resolve_slices(const char* what, const std::vector<std::size_t>& counts,
                                        const std::vector<std::size_t>& offsets,
                                        std::size_t buffer_count, int size, bool disjoint) {
  require(counts.size() == static_cast<std::size_t>(size),
          fmt::format("{}_counts has {} entries for {} ranks", what, counts.size(), size));
  require(offsets.empty() || offsets.size() == counts.size(),
          fmt::format("{}_offsets has {} entries for {} ranks (empty: packed)", what,
                      offsets.size(), size));
  std::vector<std::size_t> resolved(counts.size());
  std::size_t packed = 0;
  for (std::size_t p = 0; p < counts.size(); ++p) {
    resolved[p] = offsets.empty() ? packed : offsets[p];
    packed += counts[p];
    require(resolved[p] <= buffer_count && counts[p] <= buffer_count - resolved[p],
            fmt::format("{} slice {} ({} elements at {}) ends past the buffer's {} elements", what,
                        p, counts[p], resolved[p], buffer_count));
  }
  if (disjoint) {
    std::vector<std::size_t> order(counts.size());
    for (std::size_t p = 0; p < order.size(); ++p)
      order[p] = p;
    std::sort(order.begin(), order.end(),
              [&](std::size_t a, std::size_t b) { return resolved[a] < resolved[b]; });
    std::size_t end = 0;
    int previous = -1;
    for (std::size_t p : order) {
      if (counts[p] == 0) continue;
      require(resolved[p] >= end, fmt::format("{} slices {} and {} overlap", what, previous, p));
      end = resolved[p] + counts[p];
      previous = static_cast<int>(p);
    }
  }
  return resolved;
}

// A buffer the driver knows as device (or managed) memory, on `device` when that is not -1,
// holding all `count` elements within one allocation.
void require_on_device(const char* what, ConstBuffer b, int device) {
  if (b.bytes() == 0) return;
  const driver::Api& a = driver::api();
  unsigned int memory_type = 0;
  int ordinal = -1;
  CUdeviceptr start = 0;
  std::size_t range = 0;
  unsigned int managed = 0;
  CUpointer_attribute attributes[] = {
      CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
      CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, CU_POINTER_ATTRIBUTE_RANGE_SIZE,
      CU_POINTER_ATTRIBUTE_IS_MANAGED};
  void* values[] = {&memory_type, &ordinal, &start, &range, &managed};
  const auto address = reinterpret_cast<CUdeviceptr>(b.data);
  driver::check(a.cuPointerGetAttributes(5, attributes, values, address), "cuPointerGetAttributes");
  require(memory_type == CU_MEMORYTYPE_DEVICE || managed,
          fmt::format("{} ({}) is not in device memory: the communicator takes device buffers",
                      what, b.data));
  require(device < 0 || managed || ordinal == device,
          fmt::format("{} is on device {} but the communicator runs on device {}", what, ordinal,
                      device));
  require(range == 0 || address + b.bytes() <= start + range,
          fmt::format("{} holds {} elements ({} bytes) but its allocation ends {} bytes after it",
                      what, b.count, b.bytes(), start + range - address));
}

// The shape all_gather (part in, whole out) and reduce_scatter (whole in, part out) share:
// whole holds size x part elements, and when the two overlap, part is this rank's slice of whole.
// The dtypes are already checked.
void require_whole_and_part(const char* op, ConstBuffer whole, const char* whole_name,
                            ConstBuffer part, const char* part_name, int rank, int size,
                            int device) {
  const std::string w = fmt::format("{} {}", op, whole_name),
                    p = fmt::format("{} {}", op, part_name);
  require_null_only_if_empty(w.c_str(), whole);
  require_null_only_if_empty(p.c_str(), part);
  require(whole.count == part.count * size,
          fmt::format("{}: {} holds {} elements, not size x {} = {} x {}", op, whole_name,
                      whole.count, part_name, size, part.count));
  require(!overlaps(whole, part) || part.data == byte_at(whole.data, rank * part.count, part.dtype),
          fmt::format("{}: {} overlaps {} but is not this rank's slice of it (in place)", op,
                      part_name, whole_name));
  require_on_device(w.c_str(), whole, device);
  require_on_device(p.c_str(), part, device);
}

// `b` copied into `scratch` on the stream, for backends that cannot run a call in place.
ConstBuffer copy_into(const driver::StreamAllocation& scratch, ConstBuffer b, StreamHandle stream) {
  copy_async(scratch.data(), b.data, b.bytes(), stream);
  return {scratch.data(), b.count, b.dtype};
}

}  // namespace

const char* backend_name(Backend backend) {
  return backend == Backend::Nccl ? "nccl" : "mpi";
}

std::chrono::milliseconds resolve_timeout(const Options& options) {
  if (options.timeout.count() < 0) throw InvalidArgument("Options::timeout is negative");
  if (options.timeout.count() > 0) return options.timeout;
  const std::string text = detail::env("KJIT_COMM_TIMEOUT_S");
  if (text.empty()) return std::chrono::seconds(300);
  std::size_t used = 0;
  double seconds = 0;
  try {
    seconds = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || !std::isfinite(seconds) || seconds <= 0 || seconds > 1e9) {
    throw InvalidArgument(
        fmt::format("KJIT_COMM_TIMEOUT_S='{}' is not a positive number of seconds", text));
  }
  return std::chrono::milliseconds(static_cast<long long>(std::ceil(seconds * 1000)));
}

Communicator::Communicator(int rank, int size, Backend backend, std::chrono::milliseconds timeout,
                           int device)
    : rank_(rank), size_(size), backend_(backend), timeout_(timeout), device_(device) {
  require(size >= 1, fmt::format("a communicator needs at least one rank, not {}", size));
  require(rank >= 0 && rank < size, fmt::format("rank {} is outside 0..{}", rank, size - 1));
}

Communicator::~Communicator() = default;

CommError Communicator::fail(const std::string& reason) {
  bool first = false;
  {
    std::lock_guard<std::mutex> lock(failure_mutex_);
    if (failure_.empty()) {
      failure_ = fmt::format("kjit comm ({}, rank {} of {}): {}", backend_name(backend_), rank_,
                             size_, reason);
      first = true;
    }
  }
  if (first) abort();
  std::lock_guard<std::mutex> lock(failure_mutex_);
  return CommError(failure_);
}

bool Communicator::failed() const {
  std::lock_guard<std::mutex> lock(failure_mutex_);
  return !failure_.empty();
}

void Communicator::throw_if_failed() const {
  std::lock_guard<std::mutex> lock(failure_mutex_);
  if (!failure_.empty()) throw CommError(failure_ + " (the communicator was aborted)");
}

void Communicator::wait_for_stream(StreamHandle stream,
                                   std::chrono::steady_clock::time_point deadline,
                                   const char* what) {
  driver::ensure_context();
  const driver::Api& a = driver::api();
  for (int polls = 0;; ++polls) {
    const CUresult r = a.cuStreamQuery(stream);
    if (r == CUDA_SUCCESS) return;
    if (r != CUDA_ERROR_NOT_READY) driver::check(r, "cuStreamQuery");
    throw_if_failed();
    if (std::chrono::steady_clock::now() > deadline) {
      throw fail(
          fmt::format("{} did not complete within {} ms (KJIT_COMM_TIMEOUT_S): a peer "
                      "stopped or never made the matching call",
                      what, timeout_.count()));
    }
    pause_between_polls(polls);
  }
}

void Communicator::all_gather(ConstBuffer send, Buffer recv, StreamHandle stream) {
  throw_if_failed();
  require_same_dtype(send, recv);
  require_whole_and_part("all_gather", recv, "recv", send, "send", rank_, size_, device_);
  do_all_gather(send, recv, stream);
}

void Communicator::reduce_scatter(ConstBuffer send, Buffer recv, StreamHandle stream) {
  throw_if_failed();
  require_same_dtype(send, recv);
  require_whole_and_part("reduce_scatter", send, "send", recv, "recv", rank_, size_, device_);
  do_reduce_scatter(send, recv, stream);
}

void Communicator::all_to_all(ConstBuffer send, Buffer recv, StreamHandle stream) {
  throw_if_failed();
  require_null_only_if_empty("all_to_all send", send);
  require_null_only_if_empty("all_to_all recv", recv);
  require_same_dtype(send, recv);
  require(send.count == recv.count,
          fmt::format("all_to_all: send holds {} elements but recv {}", send.count, recv.count));
  require(
      send.count % size_ == 0,
      fmt::format("all_to_all: {} elements do not split into {} equal slices", send.count, size_));
  const bool in_place = overlaps(send, recv);
  require(!in_place || send.data == recv.data,
          "all_to_all: send and recv overlap without being the same buffer");
  require_on_device("all_to_all send", send, device_);
  require_on_device("all_to_all recv", recv, device_);
  if (!in_place) return do_all_to_all(send, recv, stream);
  const driver::StreamAllocation scratch(send.bytes(), stream);
  do_all_to_all(copy_into(scratch, send, stream), recv, stream);
}

void Communicator::all_to_all_v(ConstBuffer send, const std::vector<std::size_t>& send_counts,
                                const std::vector<std::size_t>& send_offsets, Buffer recv,
                                const std::vector<std::size_t>& recv_counts,
                                const std::vector<std::size_t>& recv_offsets, StreamHandle stream) {
  throw_if_failed();
  require_null_only_if_empty("all_to_all_v send", send);
  require_null_only_if_empty("all_to_all_v recv", recv);
  require_same_dtype(send, recv);
  const auto sends = resolve_slices("send", send_counts, send_offsets, send.count, size_, false);
  const auto recvs = resolve_slices("recv", recv_counts, recv_offsets, recv.count, size_, true);
  require(send_counts[rank_] == recv_counts[rank_],
          fmt::format("all_to_all_v: this rank sends itself {} elements but expects {}",
                      send_counts[rank_], recv_counts[rank_]));
  const bool in_place = overlaps(send, recv);
  require(!in_place || send.data == recv.data,
          "all_to_all_v: send and recv overlap without being the same buffer");
  require_on_device("all_to_all_v send", send, device_);
  require_on_device("all_to_all_v recv", recv, device_);
  if (!in_place) {
    return do_all_to_all_v(send, send_counts, sends, recv, recv_counts, recvs, stream);
  }
  const driver::StreamAllocation scratch(send.bytes(), stream);
  do_all_to_all_v(copy_into(scratch, send, stream), send_counts, sends, recv, recv_counts, recvs,
                  stream);
}

void Communicator::broadcast(ConstBuffer send, Buffer recv, int root, StreamHandle stream) {
  throw_if_failed();
  require(
      root >= 0 && root < size_,
      fmt::format("broadcast root {} is not a rank of this communicator (size {})", root, size_));
  require_null_only_if_empty("broadcast recv", recv);
  if (rank_ == root) {
    require_null_only_if_empty("broadcast send", send);
    require_same_dtype(send, recv);
    require(send.count == recv.count,
            fmt::format("broadcast: the root sends {} elements into a recv of {}", send.count,
                        recv.count));
    require(!overlaps(send, recv) || send.data == recv.data,
            "broadcast: send and recv overlap without being the same buffer");
    require_on_device("broadcast send", send, device_);
  } else {
    send = {};
  }
  require_on_device("broadcast recv", recv, device_);
  do_broadcast(send, recv, root, stream);
}

void Communicator::send(ConstBuffer buffer, int peer, StreamHandle stream) {
  throw_if_failed();
  require_peer("send peer", peer, rank_, size_);
  require_null_only_if_empty("send buffer", buffer);
  require_on_device("send buffer", buffer, device_);
  do_send_recv(buffer, peer, {}, -1, stream);
}

void Communicator::recv(Buffer buffer, int peer, StreamHandle stream) {
  throw_if_failed();
  require_peer("recv peer", peer, rank_, size_);
  require_null_only_if_empty("recv buffer", buffer);
  require_on_device("recv buffer", buffer, device_);
  do_send_recv({}, -1, buffer, peer, stream);
}

void Communicator::send_recv(ConstBuffer send, int to, Buffer recv, int from, StreamHandle stream) {
  throw_if_failed();
  require_peer("send_recv destination", to, rank_, size_);
  require_peer("send_recv source", from, rank_, size_);
  require_null_only_if_empty("send_recv send", send);
  require_null_only_if_empty("send_recv recv", recv);
  require(!overlaps(send, recv), "send_recv: send and recv overlap");
  require_on_device("send_recv send", send, device_);
  require_on_device("send_recv recv", recv, device_);
  do_send_recv(send, to, recv, from, stream);
}

void Communicator::barrier(StreamHandle stream) {
  throw_if_failed();
  do_barrier(stream);
}

void Communicator::synchronize(StreamHandle stream) {
  throw_if_failed();
  wait_for_stream(stream, std::chrono::steady_clock::now() + timeout_, "synchronize");
}

}  // namespace kjit::comm

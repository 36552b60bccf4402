// The NCCL backend: non-blocking NCCL communicators, so that no call can block past the timeout
// (a call returns ncclInProgress and is polled), and a watchdog that aborts the communicator when
// queued work does not complete in time or NCCL reports an asynchronous error.
#include <cstring>
#include <mutex>

#include <fmt/format.h>

#include "comm/nccl_library.hpp"
#include "comm/poll_pause.hpp"
#include "comm/watchdog.hpp"
#include "kjit/comm.hpp"

namespace kjit::comm {
namespace {

static_assert(sizeof(ncclUniqueId) == sizeof(UniqueId::bytes), "NCCL's unique id changed size");

using Clock = std::chrono::steady_clock;

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::Float16:
      return ncclFloat16;
    case DType::BFloat16:
      return ncclBfloat16;
    case DType::Float32:
      return ncclFloat32;
    case DType::Int32:
      return ncclInt32;
    case DType::Int64:
      return ncclInt64;
    case DType::UInt8:
      return ncclUint8;
  }
  throw InvalidArgument("the communicator does not take this dtype");
}

const char* char_or_empty(const char* s) {
  return s ? s : "";
}

std::string nccl_error(ncclComm_t comm, ncclResult_t r) {
  const NcclApi& n = nccl();
  return fmt::format("{} ({})", char_or_empty(n.ncclGetErrorString(r)),
                     char_or_empty(n.ncclGetLastError(comm)));
}

// Polls a non-blocking call until NCCL settles it. Returns the final result, or ncclInProgress
// when the deadline passed first.
ncclResult_t settle(ncclComm_t comm, ncclResult_t r, Clock::time_point deadline) {
  for (int polls = 0; r == ncclInProgress; ++polls) {
    if (Clock::now() > deadline) return ncclInProgress;
    pause_between_polls(polls);
    if (nccl().ncclCommGetAsyncError(comm, &r) != ncclSuccess) return ncclSystemError;
  }
  return r;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, bool owned, int rank, int size, int device,
                   std::chrono::milliseconds timeout)
      : Communicator(rank, size, Backend::Nccl, timeout, device),
        comm_(comm),
        owned_(owned),
        barrier_word_(sizeof(int)),
        watchdog_(
            device, [this] { return async_error(); },
            [this](const std::string& why) { fail(why); }) {}

  ~NcclCommunicator() override {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    if (!comm_ || !owned_) return;
    const NcclApi& n = nccl();
    // Finalize flushes the queued work; a peer that is gone would keep it waiting: abort then.
    if (settle(comm_, n.ncclCommFinalize(comm_), Clock::now() + timeout()) == ncclSuccess) {
      n.ncclCommDestroy(comm_);
    } else {
      n.ncclCommAbort(comm_);
    }
    comm_ = nullptr;
  }

 private:
  // Issues one NCCL call (or group), waits until NCCL has queued it, and watches its completion.
  template <class Call>
  void issue(const std::string& what, StreamHandle stream, Call&& call) {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    throw_if_failed();
    const auto deadline = Clock::now() + timeout();
    const ncclResult_t r = settle(comm_, call(), deadline);
    if (r == ncclInProgress) {
      throw fail(fmt::format("{} was not queued within {} ms (KJIT_COMM_TIMEOUT_S)", what,
                             timeout().count()));
    }
    if (r != ncclSuccess) throw fail(fmt::format("{} failed: {}", what, nccl_error(comm_, r)));
    watchdog_.track(what, stream, deadline);
  }

  std::string async_error() {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    if (!comm_) return "";
    ncclResult_t r = ncclSuccess;
    if (nccl().ncclCommGetAsyncError(comm_, &r) != ncclSuccess) r = ncclSystemError;
    if (r == ncclSuccess || r == ncclInProgress) return "";
    return fmt::format("NCCL reported an asynchronous error: {}", nccl_error(comm_, r));
  }

  void abort() noexcept override {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    if (comm_) nccl().ncclCommAbort(comm_);
    comm_ = nullptr;
  }

  void do_all_gather(ConstBuffer send, Buffer recv, StreamHandle stream) override {
    issue(fmt::format("all_gather of {} x {} {}", size(), send.count, dtype_name(send.dtype)),
          stream, [&] {
            return nccl().ncclAllGather(send.data, recv.data, send.count, nccl_type(send.dtype),
                                        comm_, stream);
          });
  }

  void do_reduce_scatter(ConstBuffer send, Buffer recv, StreamHandle stream) override {
    issue(fmt::format("reduce_scatter of {} x {} {}", size(), recv.count, dtype_name(recv.dtype)),
          stream, [&] {
            return nccl().ncclReduceScatter(send.data, recv.data, recv.count, nccl_type(recv.dtype),
                                            ncclSum, comm_, stream);
          });
  }

  // All-to-all as grouped send/recv pairs: every NCCL since 2.7 has them, unlike ncclAlltoAll.
  void do_all_to_all(ConstBuffer send, Buffer recv, StreamHandle stream) override {
    const std::size_t slice = send.count / size();
    const std::vector<std::size_t> counts(size(), slice);
    std::vector<std::size_t> offsets(size());
    for (int p = 0; p < size(); ++p)
      offsets[p] = p * slice;
    exchange_all("all_to_all", send, counts, offsets, recv, counts, offsets, stream);
  }

  void do_all_to_all_v(ConstBuffer send, const std::vector<std::size_t>& send_counts,
                       const std::vector<std::size_t>& send_offsets, Buffer recv,
                       const std::vector<std::size_t>& recv_counts,
                       const std::vector<std::size_t>& recv_offsets, StreamHandle stream) override {
    exchange_all("all_to_all_v", send, send_counts, send_offsets, recv, recv_counts, recv_offsets,
                 stream);
  }

  void exchange_all(const char* name, ConstBuffer send, const std::vector<std::size_t>& send_counts,
                    const std::vector<std::size_t>& send_offsets, Buffer recv,
                    const std::vector<std::size_t>& recv_counts,
                    const std::vector<std::size_t>& recv_offsets, StreamHandle stream) {
    const std::size_t element = dtype_size(send.dtype);
    const ncclDataType_t type = nccl_type(send.dtype);
    // This rank's own slice needs no NCCL: a device copy on the stream.
    copy_async(static_cast<char*>(recv.data) + recv_offsets[rank()] * element,
               static_cast<const char*>(send.data) + send_offsets[rank()] * element,
               send_counts[rank()] * element, stream);
    issue(fmt::format("{} of {} {}", name, send.count, dtype_name(send.dtype)), stream, [&] {
      const NcclApi& n = nccl();
      ncclResult_t first = n.ncclGroupStart();
      auto keep = [&first](ncclResult_t r) {
        if (first == ncclSuccess) first = r;
      };
      for (int p = 0; p < size() && first == ncclSuccess; ++p) {
        if (p == rank()) continue;
        if (send_counts[p] > 0) {
          keep(n.ncclSend(static_cast<const char*>(send.data) + send_offsets[p] * element,
                          send_counts[p], type, p, comm_, stream));
        }
        if (recv_counts[p] > 0) {
          keep(n.ncclRecv(static_cast<char*>(recv.data) + recv_offsets[p] * element, recv_counts[p],
                          type, p, comm_, stream));
        }
      }
      const ncclResult_t end = n.ncclGroupEnd();
      return first == ncclSuccess ? end : first;
    });
  }

  void do_broadcast(ConstBuffer send, Buffer recv, int root, StreamHandle stream) override {
    issue(fmt::format("broadcast of {} {} from rank {}", recv.count, dtype_name(recv.dtype), root),
          stream, [&] {
            return nccl().ncclBroadcast(send.data, recv.data, recv.count, nccl_type(recv.dtype),
                                        root, comm_, stream);
          });
  }

  void do_send_recv(ConstBuffer send, int to, Buffer recv, int from, StreamHandle stream) override {
    const std::string what =
        to >= 0 && from >= 0 ? fmt::format("send_recv of {} {} to rank {} and {} from rank {}",
                                           send.count, dtype_name(send.dtype), to, recv.count, from)
        : to >= 0
            ? fmt::format("send of {} {} to rank {}", send.count, dtype_name(send.dtype), to)
            : fmt::format("recv of {} {} from rank {}", recv.count, dtype_name(recv.dtype), from);
    issue(what, stream, [&] {
      const NcclApi& n = nccl();
      ncclResult_t first = n.ncclGroupStart();
      if (to >= 0 && first == ncclSuccess) {
        first = n.ncclSend(send.data, send.count, nccl_type(send.dtype), to, comm_, stream);
      }
      if (from >= 0 && first == ncclSuccess) {
        first = n.ncclRecv(recv.data, recv.count, nccl_type(recv.dtype), from, comm_, stream);
      }
      const ncclResult_t end = n.ncclGroupEnd();
      return first == ncclSuccess ? end : first;
    });
  }

  // NCCL has no barrier: a one-word all-reduce orders the stream the same way.
  void do_barrier(StreamHandle stream) override {
    issue("barrier", stream, [&] {
      return nccl().ncclAllReduce(barrier_word_.data(), barrier_word_.data(), 1, ncclInt32, ncclSum,
                                  comm_, stream);
    });
  }

  std::recursive_mutex mutex_;  // one NCCL call at a time, and never during an abort
  ncclComm_t comm_;             // null once aborted
  bool owned_;
  DeviceBuffer barrier_word_;
  Watchdog watchdog_;  // last: its thread stops before the members it uses go
};

}  // namespace

bool nccl_available(std::string* reason) {
  try {
    nccl();
    return true;
  } catch (const Error& e) {
    if (reason) *reason = e.what();
    return false;
  }
}

UniqueId make_unique_id() {
  ncclUniqueId nccl_id;
  const ncclResult_t r = nccl().ncclGetUniqueId(&nccl_id);
  if (r != ncclSuccess) {
    throw CommError(fmt::format("ncclGetUniqueId failed: {}", nccl_error(nullptr, r)));
  }
  UniqueId id;
  std::memcpy(id.bytes.data(), &nccl_id, sizeof(nccl_id));
  return id;
}

std::unique_ptr<Communicator> from_unique_id(const UniqueId& id, int rank, int size, int device,
                                             const Options& options) {
  if (size < 1) {
    throw InvalidArgument(fmt::format("a communicator needs at least one rank, not {}", size));
  }
  if (rank < 0 || rank >= size) {
    throw InvalidArgument(fmt::format("rank {} is outside 0..{}", rank, size - 1));
  }
  const auto timeout = resolve_timeout(options);
  const NcclApi& n = nccl();
  if (device < 0) device = current_device();
  set_device(device);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  // The loaded library may be older than the header: describe the config at its version.
  config.version = std::min<unsigned>(config.version, static_cast<unsigned>(n.version));
  config.blocking = 0;
  ncclUniqueId nccl_id;
  std::memcpy(&nccl_id, id.bytes.data(), sizeof(nccl_id));
  ncclComm_t comm = nullptr;
  ncclResult_t r = n.ncclCommInitRankConfig(&comm, size, nccl_id, rank, &config);
  if (comm) r = settle(comm, r, Clock::now() + timeout);
  if (r != ncclSuccess) {
    const std::string why = r == ncclInProgress ? fmt::format(
                                                      "not every rank joined within {} ms "
                                                      "(KJIT_COMM_TIMEOUT_S)",
                                                      timeout.count())
                                                : nccl_error(comm, r);
    if (comm) n.ncclCommAbort(comm);
    throw CommError(
        fmt::format("kjit comm (nccl, rank {} of {}): ncclCommInitRankConfig on "
                    "device {} failed: {}",
                    rank, size, device, why));
  }
  return std::make_unique<NcclCommunicator>(comm, true, rank, size, device, timeout);
}

std::unique_ptr<Communicator> from_nccl(ncclComm_t comm, const Options& options) {
  if (!comm) throw InvalidArgument("from_nccl: the NCCL communicator is null");
  const auto timeout = resolve_timeout(options);
  const NcclApi& n = nccl();
  int rank = 0, size = 0, device = 0;
  if (n.ncclCommUserRank(comm, &rank) != ncclSuccess ||
      n.ncclCommCount(comm, &size) != ncclSuccess ||
      n.ncclCommCuDevice(comm, &device) != ncclSuccess) {
    throw CommError("from_nccl: NCCL cannot describe this communicator (rank, size, device)");
  }
  set_device(device);
  return std::make_unique<NcclCommunicator>(comm, false, rank, size, device, timeout);
}

}  // namespace kjit::comm

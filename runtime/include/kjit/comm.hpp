// Collectives across ranks (one process each), stream-ordered on device buffers. Two backends
// behind one interface: NCCL (production; loaded at run time) and MPI with host staging (any
// number of ranks on one GPU: the test and fallback path, kjit/comm_mpi.hpp). The algorithms
// built on a Communicator (zigzag context parallelism, helix decode) never see which one runs.
//
// Every call checks its arguments on the calling rank before anything is sent, and throws
// InvalidArgument naming the argument. What a rank cannot see alone (the peers passing the same
// count) is the caller's contract, as in NCCL and MPI. A call that does not complete within the
// timeout aborts the communicator and throws CommError; so does every later call.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kjit/device.hpp"
#include "kjit/error.hpp"
#include "kjit/tensor.hpp"

typedef struct ncclComm* ncclComm_t;  // as nccl.h declares it: no NCCL header needed here

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit::comm {

enum class Backend { Nccl, Mpi };
const char* backend_name(Backend backend);  // "nccl", "mpi"

// A collective failed, timed out, or its communicator was aborted. what() names the call.
class CommError : public Error {
 public:
  using Error::Error;
};

// `count` elements of `dtype` at `data`, contiguous, in device memory (or managed memory).
struct ConstBuffer {
  const void* data = nullptr;
  std::size_t count = 0;
  DType dtype = DType::Float32;
  std::size_t bytes() const { return count * dtype_size(dtype); }
};
struct Buffer {
  void* data = nullptr;
  std::size_t count = 0;
  DType dtype = DType::Float32;
  std::size_t bytes() const { return count * dtype_size(dtype); }
  operator ConstBuffer() const { return {data, count, dtype}; }
};

struct Options {
  // How long one call may wait for its peers before the communicator is aborted. Zero: the
  // environment's KJIT_COMM_TIMEOUT_S (seconds, default 300).
  std::chrono::milliseconds timeout{0};
};

// The timeout `options` ask for, or the environment's; throws InvalidArgument for a bad value.
std::chrono::milliseconds resolve_timeout(const Options& options);

class Communicator {
 public:
  virtual ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  Backend backend() const { return backend_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  // recv (size x send.count) = every rank's send, in rank order. In place when send is this
  // rank's slice of recv.
  void all_gather(ConstBuffer send, Buffer recv, StreamHandle stream);
  // recv (send.count / size) = sum over ranks of this rank's slice of send. In place when recv
  // is this rank's slice of send. 16-bit types: NCCL adds in fp32 and rounds to the dtype after
  // each step of its ring, the MPI backend rounds once at the end; callers that need one
  // rounding everywhere reduce in fp32 (the caller's choice). Integers wrap.
  void reduce_scatter(ConstBuffer send, Buffer recv, StreamHandle stream);
  // Slice p (send.count / size elements) of send goes to rank p and lands in slice `rank` of
  // its recv. In place when send and recv are the same buffer.
  void all_to_all(ConstBuffer send, Buffer recv, StreamHandle stream);
  // Per-peer counts and offsets, in elements: send_counts[p] elements from send_offsets[p] go
  // to rank p, which receives them at its recv_offsets[rank] (recv_counts[rank] must equal
  // them). Empty offsets: the slices are packed in rank order. In place when send and recv are
  // the same buffer.
  void all_to_all_v(ConstBuffer send, const std::vector<std::size_t>& send_counts,
                    const std::vector<std::size_t>& send_offsets, Buffer recv,
                    const std::vector<std::size_t>& recv_counts,
                    const std::vector<std::size_t>& recv_offsets, StreamHandle stream);
  // recv = root's send on every rank. Only the root reads send (others may pass {}); in place
  // when the root's send and recv are the same buffer.
  void broadcast(ConstBuffer send, Buffer recv, int root, StreamHandle stream);
  // Point to point. As in NCCL, a send completes only once the peer receives: two ranks that
  // both send first wait for each other; exchange with send_recv.
  void send(ConstBuffer buffer, int peer, StreamHandle stream);
  void recv(Buffer buffer, int peer, StreamHandle stream);
  void send_recv(ConstBuffer send, int to, Buffer recv, int from, StreamHandle stream);
  // Work queued on `stream` after the barrier starts only once every rank has reached it.
  void barrier(StreamHandle stream);
  // Waits for `stream`, at most the timeout; throws CommError if the communicator failed.
  void synchronize(StreamHandle stream);

 protected:
  // `device`: the ordinal every buffer must live on, or -1 for any device.
  Communicator(int rank, int size, Backend backend, std::chrono::milliseconds timeout, int device);

  virtual void do_all_gather(ConstBuffer send, Buffer recv, StreamHandle stream) = 0;
  virtual void do_reduce_scatter(ConstBuffer send, Buffer recv, StreamHandle stream) = 0;
  // Offsets are resolved (never empty) and in-place calls are already out of place.
  virtual void do_all_to_all_v(ConstBuffer send, const std::vector<std::size_t>& send_counts,
                               const std::vector<std::size_t>& send_offsets, Buffer recv,
                               const std::vector<std::size_t>& recv_counts,
                               const std::vector<std::size_t>& recv_offsets,
                               StreamHandle stream) = 0;
  virtual void do_all_to_all(ConstBuffer send, Buffer recv, StreamHandle stream) = 0;
  virtual void do_broadcast(ConstBuffer send, Buffer recv, int root, StreamHandle stream) = 0;
  // Either side may be absent (peer < 0).
  virtual void do_send_recv(ConstBuffer send, int to, Buffer recv, int from,
                            StreamHandle stream) = 0;
  virtual void do_barrier(StreamHandle stream) = 0;
  // Called once when the communicator fails (timeout, peer error): unblocks pending work.
  virtual void abort() noexcept {}

  // Marks the communicator failed (the first reason stays), aborts it, and returns the error
  // to throw. Safe from any thread.
  CommError fail(const std::string& reason);
  void throw_if_failed() const;
  bool failed() const;
  // Waits for `stream` until the deadline; on timeout fails the communicator naming `what`.
  void wait_for_stream(StreamHandle stream, std::chrono::steady_clock::time_point deadline,
                       const char* what);

 private:
  int rank_ = 0;
  int size_ = 1;
  Backend backend_;
  std::chrono::milliseconds timeout_;
  int device_ = -1;
  mutable std::mutex failure_mutex_;
  std::string failure_;  // empty while usable
};

// NCCL's unique id: rank 0 makes it, every rank of the new communicator passes the same bytes.
struct UniqueId {
  std::array<char, 128> bytes{};
};
UniqueId make_unique_id();

// A NCCL communicator of `size` ranks on device `device` (-1: the current device), for
// launchers that share the id themselves (torchrun's store, a file). Throws InvalidArgument for
// a size below 1 or a rank out of range, and CommError when the peers do not all join within
// the timeout.
std::unique_ptr<Communicator> from_unique_id(const UniqueId& id, int rank, int size,
                                             int device = -1, const Options& options = {});
// Over a NCCL communicator the caller owns (a framework's), which stays the caller's to
// destroy. It must come from the libnccl.so.2 this process has loaded. On a timeout kjit
// aborts it: a hung collective never returns otherwise.
std::unique_ptr<Communicator> from_nccl(ncclComm_t comm, const Options& options = {});

// True when libnccl.so.2 (or $KJIT_LIBNCCL) loads; `reason` says why not otherwise.
bool nccl_available(std::string* reason = nullptr);

}  // namespace kjit::comm
#pragma GCC visibility pop

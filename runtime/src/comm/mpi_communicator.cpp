#include "comm/mpi_communicator.hpp"

#include <climits>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "comm/poll_pause.hpp"
#include "util/half_float.hpp"

namespace kjit::comm {
namespace {

using Clock = std::chrono::steady_clock;

std::string mpi_error(int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(code, text, &length);
  return std::string(text, length);
}

// MPI counts are ints: one call moves at most INT_MAX bytes per peer and addresses at most
// INT_MAX bytes of a buffer (checked before anything is sent).
int mpi_bytes(std::size_t bytes, const char* what) {
  if (bytes > static_cast<std::size_t>(INT_MAX)) {
    throw InvalidArgument(
        fmt::format("{}: {} bytes; the MPI backend moves at most {} bytes per peer and call", what,
                    bytes, INT_MAX));
  }
  return static_cast<int>(bytes);
}

// out[i] = sum over the `parts` slices of `count` elements at `in`, in rank order; 16-bit
// floats add in fp32 and round once, integers wrap.
template <class T, class Acc, class Load, class Store>
void sum_slices(const void* in, std::size_t count, int parts, void* out, Load load, Store store) {
  const T* slices = static_cast<const T*>(in);
  T* result = static_cast<T*>(out);
  for (std::size_t i = 0; i < count; ++i) {
    Acc acc = 0;
    for (int p = 0; p < parts; ++p)
      acc += load(slices[p * count + i]);
    result[i] = store(acc);
  }
}

void sum_slices(DType dtype, const void* in, std::size_t count, int parts, void* out) {
  auto same = [](auto v) { return v; };
  switch (dtype) {
    case DType::Float16:
      return sum_slices<std::uint16_t, float>(in, count, parts, out, fp16_to_float, float_to_fp16);
    case DType::BFloat16:
      return sum_slices<std::uint16_t, float>(in, count, parts, out, bf16_to_float, float_to_bf16);
    case DType::Float32:
      return sum_slices<float, float>(in, count, parts, out, same, same);
    case DType::Int32:
      return sum_slices<std::uint32_t, std::uint32_t>(in, count, parts, out, same, same);
    case DType::Int64:
      return sum_slices<std::uint64_t, std::uint64_t>(in, count, parts, out, same, same);
    case DType::UInt8:
      return sum_slices<std::uint8_t, std::uint8_t>(in, count, parts, out, same, same);
  }
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, int rank, int size, std::chrono::milliseconds timeout)
      : Communicator(rank, size, Backend::Mpi, timeout, -1), comm_(comm) {
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  }

  ~MpiCommunicator() override {
    // A failed communicator may have requests in flight that never finish: leave it.
    if (!failed()) MPI_Comm_free(&comm_);
  }

 private:
  // Page-locked staging, grown on demand and kept.
  static void* ensure(HostBuffer& b, std::size_t bytes) {
    if (b.size() < bytes) b = HostBuffer(bytes);
    return b.data();
  }

  // Waits for the stream's earlier work too, so the input is final. An empty input orders
  // nothing (and needs no driver).
  void to_host(const void* device, void* host, std::size_t bytes, StreamHandle stream,
               const std::string& what) {
    if (!bytes) return;
    copy_async(host, device, bytes, stream);
    wait_for_stream(stream, Clock::now() + timeout(), what.c_str());
  }

  void to_device(const void* host, void* device, std::size_t bytes, StreamHandle stream,
                 const std::string& what) {
    if (!bytes) return;
    copy_async(device, host, bytes, stream);
    // The staging buffer is reused by the next call: the copy must be done.
    wait_for_stream(stream, Clock::now() + timeout(), what.c_str());
  }

  void check(int code, const std::string& what) {
    if (code != MPI_SUCCESS) throw fail(fmt::format("{} failed: {}", what, mpi_error(code)));
  }

  // Polls the requests until they finish, at most the timeout.
  void wait(std::vector<MPI_Request>& requests, const std::string& what) {
    const auto deadline = Clock::now() + timeout();
    for (int polls = 0;; ++polls) {
      int done = 0;
      check(MPI_Testall(static_cast<int>(requests.size()), requests.data(), &done,
                        MPI_STATUSES_IGNORE),
            what);
      if (done) return;
      if (Clock::now() > deadline) {
        throw fail(
            fmt::format("{} did not complete within {} ms (KJIT_COMM_TIMEOUT_S): a peer "
                        "stopped or never made the matching call",
                        what, timeout().count()));
      }
      pause_between_polls(polls);  // MPI progresses inside MPI_Testall
    }
  }

  void wait(MPI_Request request, const std::string& what) {
    std::vector<MPI_Request> one{request};
    wait(one, what);
  }

  // Stages `send` in, runs `start` (a non-blocking MPI call from the staged input to the
  // `out_bytes` of output staging), waits for it and returns the output staging.
  template <class Start>
  void* exchange(const std::string& what, ConstBuffer send, std::size_t out_bytes,
                 StreamHandle stream, Start&& start) {
    void* in = ensure(send_stage_, send.bytes());
    void* out = ensure(recv_stage_, out_bytes);
    to_host(send.data, in, send.bytes(), stream, what);
    MPI_Request request;
    check(start(in, out, &request), what);
    wait(request, what);
    return out;
  }

  void do_all_gather(ConstBuffer send, Buffer recv, StreamHandle stream) override {
    const std::string what =
        fmt::format("all_gather of {} x {} {}", size(), send.count, dtype_name(send.dtype));
    const int bytes = mpi_bytes(send.bytes(), what.c_str());
    mpi_bytes(recv.bytes(), what.c_str());
    void* out = exchange(what, send, recv.bytes(), stream, [&](void* in, void* o, MPI_Request* r) {
      return MPI_Iallgather(in, bytes, MPI_BYTE, o, bytes, MPI_BYTE, comm_, r);
    });
    to_device(out, recv.data, recv.bytes(), stream, what);
  }

  // An all-to-all of the slices, then the sum on the host (into the input staging, free then).
  void do_reduce_scatter(ConstBuffer send, Buffer recv, StreamHandle stream) override {
    const std::string what =
        fmt::format("reduce_scatter of {} x {} {}", size(), recv.count, dtype_name(recv.dtype));
    const int slice = mpi_bytes(recv.bytes(), what.c_str());
    mpi_bytes(send.bytes(), what.c_str());
    void* gathered =
        exchange(what, send, send.bytes(), stream, [&](void* in, void* o, MPI_Request* r) {
          return MPI_Ialltoall(in, slice, MPI_BYTE, o, slice, MPI_BYTE, comm_, r);
        });
    sum_slices(recv.dtype, gathered, recv.count, size(), send_stage_.data());
    to_device(send_stage_.data(), recv.data, recv.bytes(), stream, what);
  }

  void do_all_to_all(ConstBuffer send, Buffer recv, StreamHandle stream) override {
    const std::string what = fmt::format("all_to_all of {} {}", send.count, dtype_name(send.dtype));
    const int slice = mpi_bytes(send.bytes() / size(), what.c_str());
    mpi_bytes(send.bytes(), what.c_str());
    void* out = exchange(what, send, recv.bytes(), stream, [&](void* in, void* o, MPI_Request* r) {
      return MPI_Ialltoall(in, slice, MPI_BYTE, o, slice, MPI_BYTE, comm_, r);
    });
    to_device(out, recv.data, recv.bytes(), stream, what);
  }

  void do_all_to_all_v(ConstBuffer send, const std::vector<std::size_t>& send_counts,
                       const std::vector<std::size_t>& send_offsets, Buffer recv,
                       const std::vector<std::size_t>& recv_counts,
                       const std::vector<std::size_t>& recv_offsets, StreamHandle stream) override {
    const std::string what =
        fmt::format("all_to_all_v of {} {}", send.count, dtype_name(send.dtype));
    const std::size_t element = dtype_size(send.dtype);
    std::vector<int> sc(size()), sd(size()), rc(size()), rd(size());
    for (int p = 0; p < size(); ++p) {
      sc[p] = mpi_bytes(send_counts[p] * element, what.c_str());
      sd[p] = mpi_bytes(send_offsets[p] * element, what.c_str());
      rc[p] = mpi_bytes(recv_counts[p] * element, what.c_str());
      rd[p] = mpi_bytes(recv_offsets[p] * element, what.c_str());
    }
    // Elements of recv that no slice covers keep their value: stage them in too.
    to_host(recv.data, ensure(recv_stage_, recv.bytes()), recv.bytes(), stream, what);
    void* out = exchange(what, send, recv.bytes(), stream, [&](void* in, void* o, MPI_Request* r) {
      return MPI_Ialltoallv(in, sc.data(), sd.data(), MPI_BYTE, o, rc.data(), rd.data(), MPI_BYTE,
                            comm_, r);
    });
    to_device(out, recv.data, recv.bytes(), stream, what);
  }

  void do_broadcast(ConstBuffer send, Buffer recv, int root, StreamHandle stream) override {
    const std::string what =
        fmt::format("broadcast of {} {} from rank {}", recv.count, dtype_name(recv.dtype), root);
    const int bytes = mpi_bytes(recv.bytes(), what.c_str());
    void* staged = ensure(recv_stage_, recv.bytes());
    if (rank() == root) to_host(send.data, staged, recv.bytes(), stream, what);
    MPI_Request request;
    check(MPI_Ibcast(staged, bytes, MPI_BYTE, root, comm_, &request), what);
    wait(request, what);
    to_device(staged, recv.data, recv.bytes(), stream, what);
  }

  void do_send_recv(ConstBuffer send, int to, Buffer recv, int from, StreamHandle stream) override {
    const std::string what = fmt::format("send_recv (to rank {}, from rank {})", to, from);
    std::vector<MPI_Request> requests;
    void* out = nullptr;
    if (from >= 0) {
      const int bytes = mpi_bytes(recv.bytes(), what.c_str());
      out = ensure(recv_stage_, recv.bytes());
      requests.emplace_back();
      check(MPI_Irecv(out, bytes, MPI_BYTE, from, kTag, comm_, &requests.back()), what);
    }
    if (to >= 0) {
      const int bytes = mpi_bytes(send.bytes(), what.c_str());
      void* in = ensure(send_stage_, send.bytes());
      to_host(send.data, in, send.bytes(), stream, what);
      requests.emplace_back();
      check(MPI_Isend(in, bytes, MPI_BYTE, to, kTag, comm_, &requests.back()), what);
    }
    wait(requests, what);
    if (from >= 0) to_device(out, recv.data, recv.bytes(), stream, what);
  }

  void do_barrier(StreamHandle stream) override {
    wait_for_stream(stream, Clock::now() + timeout(), "barrier");
    MPI_Request request;
    check(MPI_Ibarrier(comm_, &request), "barrier");
    wait(request, "barrier");
  }

  static constexpr int kTag = 0x6b6a;  // kjit's own communicator: one tag is enough
  MPI_Comm comm_;
  HostBuffer send_stage_, recv_stage_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm,
                                                    std::chrono::milliseconds timeout) {
  int rank = 0, size = 0;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  return std::make_unique<MpiCommunicator>(comm, rank, size, timeout);
}

}  // namespace kjit::comm

// A communicator backend that only counts what reaches it (and can be told to fail a call): for
// argument checks without a GPU or MPI.
#pragma once

#include <chrono>
#include <vector>

#include "kjit/comm.hpp"

namespace kjit::test {

class Recorder final : public comm::Communicator {
 public:
  Recorder(int rank, int size)
      : Communicator(rank, size, comm::Backend::Mpi, std::chrono::seconds(5), -1) {}
  int calls = 0;
  int aborts = 0;
  bool fail_next = false;

 private:
  void reached() {
    ++calls;
    if (fail_next) throw fail("the peer went away");
  }
  void do_all_gather(comm::ConstBuffer, comm::Buffer, StreamHandle) override { reached(); }
  void do_reduce_scatter(comm::ConstBuffer, comm::Buffer, StreamHandle) override { reached(); }
  void do_all_to_all(comm::ConstBuffer, comm::Buffer, StreamHandle) override { reached(); }
  void do_all_to_all_v(comm::ConstBuffer, const std::vector<std::size_t>&,
                       const std::vector<std::size_t>& send_offsets, comm::Buffer,
                       const std::vector<std::size_t>&,
                       const std::vector<std::size_t>& recv_offsets, StreamHandle) override {
    last_send_offsets = send_offsets;
    last_recv_offsets = recv_offsets;
    reached();
  }
  void do_broadcast(comm::ConstBuffer, comm::Buffer, int, StreamHandle) override { reached(); }
  void do_send_recv(comm::ConstBuffer, int, comm::Buffer, int, StreamHandle) override { reached(); }
  void do_barrier(StreamHandle) override { reached(); }
  void abort() noexcept override { ++aborts; }

 public:
  std::vector<std::size_t> last_send_offsets, last_recv_offsets;
};

}  // namespace kjit::test

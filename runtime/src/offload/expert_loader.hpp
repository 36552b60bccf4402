// Host -> device expert loads for the offloaded MoE stack (kjit/expert_offload.hpp): each layer's
// experts as tiles (the tensors of one expert that move together: 16-bit gate_up and down, or FP4
// codes, scales and tensor scales), the slots' device memory per tile, and the copies on a stream
// of their own. Each slot has two fences: `ready` after its last load, which the compute stream
// waits for before a GEMM reads the slot, and `released` after the last GEMM that read it, which
// the loader waits for before overwriting it. No host synchronisation. The GEMMs run on one
// compute stream at a time (or on streams the caller orders): `released` keeps the last reader.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "driver/stream_fence.hpp"
#include "kjit/device.hpp"
#include "kjit/tensor.hpp"

namespace kjit::offload {

class ExpertLoader {
 public:
  ExpertLoader(int layers, int slots);

  // A tile of `layer`: host [E, ...] in page-locked memory, each expert's part contiguous; returns
  // the slots' device tensor [slots, ...] the GEMMs read.
  TensorView add_tile(int layer, const TensorView& host);

  // Queues the copy of every tile of `expert` into `slot`; returns the bytes.
  std::size_t load(int layer, int expert, int slot);
  // Makes `compute` wait for the slot's last load; true when a load was queued since the last
  // wait (the wait may then stall).
  bool wait_ready(int layer, int slot, StreamHandle compute);
  // The slot's readers are queued on `compute`: later loads into it wait for them.
  void release(int layer, int slot, StreamHandle compute);

  // Throws InvalidArgument unless `t` (named `what`) is in device memory (a tensor the GEMMs read
  // as given, such as a tensor scale shared by every expert).
  static void require_device(const TensorView& t, const char* what);

  std::size_t device_bytes() const { return device_bytes_; }
  void synchronize() const { stream_.synchronize(); }  // every load queued has run

 private:
  struct Tile {
    const char* host = nullptr;
    std::size_t expert_bytes = 0;
    DeviceBuffer slots;
  };
  struct SlotFences {
    driver::StreamFence ready, released;
    bool loading = false;
  };
  SlotFences& fences(int layer, int slot) { return *fences_[layer * slots_ + slot]; }
  int slots_;
  Stream stream_;
  std::vector<std::vector<Tile>> tiles_;  // [layer][tile]
  std::vector<std::unique_ptr<SlotFences>> fences_;
  std::size_t device_bytes_ = 0;
};

}  // namespace kjit::offload

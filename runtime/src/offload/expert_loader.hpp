// Host -> device expert loads for the offloaded MoE stack (kjit/expert_offload.hpp): each layer's
// experts as tiles (the tensors of one expert that move together: 16-bit gate_up and down, or FP4
// codes, scales and tensor scales), the slots' device memory per tile, and the copies on a stream
// of their own. Each slot has two fences: `ready` after its last load, which the compute stream
// waits for before a GEMM reads the slot, and `released` after the last GEMM that read it, which
// the loader waits for before overwriting it. No host synchronisation. The GEMMs run on one
// compute stream at a time (or on streams the caller orders): `released` keeps the last reader.
// Each batch of loads is timed on the loader's stream from its first copy to its last (the
// waits for released slots come before), so bytes / copy_ms is the loader's own rate.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "driver/stream_fence.hpp"
#include "driver/stream_spans.hpp"
#include "kjit/device.hpp"
#include "kjit/routing_analysis.hpp"
#include "kjit/tensor.hpp"

namespace kjit::offload {

class ExpertLoader {
 public:
  using Load = moe::ExpertSlots::Load;

  ExpertLoader(int layers, int slots);

  // A tile of `layer`: host [E, ...] in page-locked memory, each expert's part contiguous; returns
  // the slots' device tensor [slots, ...] the GEMMs read.
  TensorView add_tile(int layer, const TensorView& host);

  // Queues the copies of every tile of each load's expert into its slot, after the slots' last
  // readers; returns the bytes.
  std::size_t load(int layer, const std::vector<Load>& loads);
  // Makes `compute` wait for the last loads of the slots `pass` reads; the wait is timed (a
  // stall) when one of them was queued since the slot's last wait.
  void wait_ready(int layer, const std::vector<Load>& pass, StreamHandle compute);
  // The readers of the pass's slots are queued on `compute`: later loads into them wait for them.
  void release(int layer, const std::vector<Load>& pass, StreamHandle compute);

  // Throws InvalidArgument unless `t` (named `what`) is in device memory (a tensor the GEMMs read
  // as given, such as a tensor scale shared by every expert).
  static void require_device(const TensorView& t, const char* what);

  std::size_t device_bytes() const { return device_bytes_; }
  // The copies' GPU time and the compute streams' stalls so far: the spans that have run, or
  // with `wait` every one.
  double copy_ms(bool wait) { return copy_spans_.total_ms(wait); }
  double stall_ms(bool wait) { return stall_spans_.total_ms(wait); }
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
  driver::StreamSpans copy_spans_, stall_spans_;
  std::size_t device_bytes_ = 0;
};

}  // namespace kjit::offload

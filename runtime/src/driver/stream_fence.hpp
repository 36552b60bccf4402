// An ordering point between two streams: work queued on `waiter` after wait() starts only once
// the work queued on the signalling stream before signal() is done. No host synchronisation;
// recordable again (a wait takes the latest signal), and capturable in a CUDA graph.
#pragma once

#include "driver/cuda_driver.hpp"
#include "kjit/device.hpp"

namespace kjit::driver {

class StreamFence {
 public:
  StreamFence();
  ~StreamFence();
  StreamFence(const StreamFence&) = delete;
  StreamFence& operator=(const StreamFence&) = delete;

  void signal(StreamHandle stream);
  void wait(StreamHandle waiter) const;

 private:
  CUevent event_ = nullptr;
};

}  // namespace kjit::driver

// Device memory allocated and freed in stream order (cuMemAllocFromPoolAsync / cuMemFreeAsync):
// scratch for one call, back in the pool for later work on the stream as soon as the call's
// kernels ran. The pool is kjit's own, one per device, keeping up to KJIT_SCRATCH_KEEP_BYTES
// (default 1 GiB) of freed memory mapped across synchronisations: the driver's default pool
// (release threshold 0) unmaps it at each one, and the next call re-maps its scratch (tens of
// us: the tuner, which synchronises after every sample, timed MLA decode's split partials
// 20-25 us slower than back-to-back calls did). Not the default pool: other users of it keep
// its behaviour.
#pragma once

#include <cstddef>

#include "driver/cuda_driver.hpp"
#include "kjit/device.hpp"

namespace kjit::driver {

// The current device's scratch pool, created on first use and kept for the process.
CUmemoryPool scratch_pool();

class StreamAllocation {
 public:
  StreamAllocation(std::size_t bytes, StreamHandle stream) : stream_(stream) {
    if (bytes == 0) return;
    check(api().cuMemAllocFromPoolAsync(&ptr_, bytes, scratch_pool(), stream),
          "cuMemAllocFromPoolAsync");
  }
  ~StreamAllocation() {
    if (ptr_) api().cuMemFreeAsync(ptr_, stream_);
  }
  StreamAllocation(const StreamAllocation&) = delete;
  StreamAllocation& operator=(const StreamAllocation&) = delete;

  void* data() const { return reinterpret_cast<void*>(ptr_); }

 private:
  StreamHandle stream_;
  CUdeviceptr ptr_ = 0;
};

}  // namespace kjit::driver

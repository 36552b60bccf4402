// Device memory allocated and freed in stream order (cuMemAllocAsync / cuMemFreeAsync): scratch
// for one call, back in the pool for later work on the stream as soon as the call's kernels ran.
#pragma once

#include <cstddef>

#include "driver/cuda_driver.hpp"
#include "kjit/device.hpp"

namespace kjit::driver {

class StreamAllocation {
 public:
  StreamAllocation(std::size_t bytes, StreamHandle stream) : stream_(stream) {
    if (bytes == 0) return;
    ensure_context();
    check(api().cuMemAllocAsync(&ptr_, bytes, stream), "cuMemAllocAsync");
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

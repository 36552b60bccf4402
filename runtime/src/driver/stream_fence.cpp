#include "driver/stream_fence.hpp"

namespace kjit::driver {

StreamFence::StreamFence() {
  ensure_context();
  check(api().cuEventCreate(&event_, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
}

StreamFence::~StreamFence() {
  if (event_) api().cuEventDestroy(event_);
}

void StreamFence::signal(StreamHandle stream) {
  check(api().cuEventRecord(event_, stream), "cuEventRecord");
}

void StreamFence::wait(StreamHandle waiter) const {
  check(api().cuStreamWaitEvent(waiter, event_, 0), "cuStreamWaitEvent");
}

}  // namespace kjit::driver

// The pause between two polls of work that usually finishes within microseconds (a queued NCCL
// call, a stream, an MPI request): yield at first, since even a 10 us sleep costs ~60 us of timer
// slack on Linux, then sleep so that a long wait stops burning a core.
#pragma once

#include <chrono>
#include <thread>

namespace kjit::comm {

inline void pause_between_polls(int polls) {
  if (polls < 2000) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

}  // namespace kjit::comm

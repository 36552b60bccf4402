// Watches stream-ordered work a communicator has queued: a collective whose completion event has
// not fired by its deadline, or a failure `poll` reports, calls `on_failure` once, from the
// watchdog's own thread. Without it a collective whose peer died would hang the stream forever.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kjit/device.hpp"

struct CUevent_st;

namespace kjit::comm {

class Watchdog {
 public:
  // `poll` returns a failure to report ("" when none); `device` is the ordinal whose context
  // the events belong to.
  Watchdog(int device, std::function<std::string()> poll,
           std::function<void(const std::string&)> on_failure);
  ~Watchdog();  // stops the thread; pending work is no longer watched
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Watches the work queued on `stream` so far, named `what`, until `deadline`.
  void track(const std::string& what, StreamHandle stream,
             std::chrono::steady_clock::time_point deadline);

 private:
  struct Pending {
    CUevent_st* event;
    std::string what;
    std::chrono::steady_clock::time_point deadline;
  };
  void run();
  std::string check_pending();  // the first failure among the pending work, "" if none

  int device_;
  std::function<std::string()> poll_;
  std::function<void(const std::string&)> on_failure_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Pending> pending_;
  std::vector<CUevent_st*> free_events_;
  bool stopping_ = false;
  bool reported_ = false;
  std::thread thread_;  // started at the first track()
};

}  // namespace kjit::comm

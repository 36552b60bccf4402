#include "comm/watchdog.hpp"

#include <fmt/format.h>

#include "driver/cuda_driver.hpp"

namespace kjit::comm {

Watchdog::Watchdog(int device, std::function<std::string()> poll,
                   std::function<void(const std::string&)> on_failure)
    : device_(device), poll_(std::move(poll)), on_failure_(std::move(on_failure)) {}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  const driver::Api& a = driver::api();
  for (const Pending& p : pending_)
    a.cuEventDestroy(p.event);
  for (CUevent_st* e : free_events_)
    a.cuEventDestroy(e);
}

void Watchdog::track(const std::string& what, StreamHandle stream,
                     std::chrono::steady_clock::time_point deadline) {
  const driver::Api& a = driver::api();
  std::unique_lock<std::mutex> lock(mutex_);
  CUevent_st* event = nullptr;
  if (!free_events_.empty()) {
    event = free_events_.back();
    free_events_.pop_back();
  } else {
    driver::check(a.cuEventCreate(&event, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  }
  driver::check(a.cuEventRecord(event, stream), "cuEventRecord");
  pending_.push_back({event, what, deadline});
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
  lock.unlock();
  wake_.notify_all();
}

std::string Watchdog::check_pending() {
  const driver::Api& a = driver::api();
  const auto now = std::chrono::steady_clock::now();
  std::vector<Pending> still;
  std::string failure;
  for (Pending& p : pending_) {
    const CUresult r = a.cuEventQuery(p.event);
    if (r == CUDA_SUCCESS) {
      free_events_.push_back(p.event);
    } else if (r == CUDA_ERROR_NOT_READY && now <= p.deadline) {
      still.push_back(std::move(p));
    } else {
      if (failure.empty()) {
        failure =
            r == CUDA_ERROR_NOT_READY
                ? fmt::format(
                      "{} did not complete within its timeout "
                      "(KJIT_COMM_TIMEOUT_S): a peer stopped or never made the "
                      "matching call",
                      p.what)
                : fmt::format("{} failed on the device (CUresult {})", p.what, static_cast<int>(r));
      }
      still.push_back(std::move(p));
    }
  }
  pending_ = std::move(still);
  return failure;
}

void Watchdog::run() {
  // Event queries need the device's context on this thread too.
  try {
    driver::check(driver::api().cuCtxSetCurrent(driver::primary_context(device_)),
                  "cuCtxSetCurrent");
  } catch (const std::exception& e) {
    on_failure_(fmt::format("the watchdog cannot watch device {}: {}", device_, e.what()));
    return;
  }
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    if (pending_.empty() || reported_) {
      wake_.wait(lock, [this] { return stopping_ || (!pending_.empty() && !reported_); });
      continue;
    }
    std::string failure = check_pending();
    if (failure.empty()) {
      lock.unlock();
      failure = poll_();
      lock.lock();
    }
    if (!failure.empty()) {
      reported_ = true;
      lock.unlock();
      on_failure_(failure);
      lock.lock();
      continue;
    }
    wake_.wait_for(lock, std::chrono::milliseconds(20), [this] { return stopping_; });
  }
}

}  // namespace kjit::comm

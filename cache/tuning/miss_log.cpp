#include "cache/tuning/miss_log.hpp"

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "cache/tuning/tuning_table.hpp"
#include "kjit/error.hpp"

namespace kjit::tuning {
namespace {

constexpr auto kWriteInterval = std::chrono::seconds(5);
constexpr std::size_t kMaxQueued = 4096;  // distinct keys; more are counted, not kept
constexpr int kWriteBusyMs = 200;

class MissLog {
 public:
  ~MissLog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    if (writer_.joinable()) writer_.join();
    write(take());
  }

  void record(const Miss& m) {
    std::lock_guard<std::mutex> lock(mutex_);
    const std::string id = fmt::format("{}|{}|{}|{}|{}|{}", m.key.op, m.key.template_hash,
                                       m.key.problem_key, m.key.dtype, m.key.sm_arch, m.key.nvrtc);
    auto it = queued_.find(id);
    if (it != queued_.end()) {
      it->second.hits += m.hits;
    } else if (queued_.size() < kMaxQueued) {
      queued_.emplace(id, m);
    }
    if (!writer_.joinable()) writer_ = std::thread([this] { loop(); });
  }

  void flush() { write(take()); }

 private:
  std::vector<Miss> take() {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<Miss> batch;
    for (auto& [id, m] : queued_)
      batch.push_back(std::move(m));
    queued_.clear();
    return batch;
  }

  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stop_) {
      wake_.wait_for(lock, kWriteInterval, [this] { return stop_; });
      if (stop_) break;
      lock.unlock();
      write(take());
      lock.lock();
    }
  }

  static void write(const std::vector<Miss>& batch) {
    if (batch.empty()) return;
    const std::string path = default_database_path();
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return;
    try {
      // Misses change the file but no result: tables that had read it need not read it again.
      const FileStamp before = FileStamp::of(path);
      TuningDb(path, TuningDb::Mode::ReadWrite, kWriteBusyMs).record_misses(batch);
      adopt_own_write(path, before, FileStamp::of(path));
    } catch (const Error& e) {
      warn_unusable(path, e.what());
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::map<std::string, Miss> queued_;
  std::thread writer_;
};

MissLog& miss_log() {
  static MissLog log;
  return log;
}

}  // namespace

void record_miss(const Miss& miss) {
  miss_log().record(miss);
}

void flush_misses() {
  miss_log().flush();
}

}  // namespace kjit::tuning

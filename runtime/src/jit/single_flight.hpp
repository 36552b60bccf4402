// Single-flight map: concurrent callers asking for one key run `make` once and share its result
// (or its exception). With `keep`, results stay as a cache; without, the entry is dropped once
// the flight lands (deduplication only). A failed flight is never kept, so a later call retries.
#pragma once

#include <future>
#include <memory>
#include <mutex>
#include <unordered_map>

namespace kjit::detail {

template <class Key, class Value, class Hash>
class SingleFlight {
 public:
  using Ptr = std::shared_ptr<const Value>;

  explicit SingleFlight(bool keep) : keep_(keep) {}

  // `*joined` tells whether the result came from another caller's flight or the cache.
  template <class Make>
  Ptr get(const Key& key, Make&& make, bool* joined) {
    std::promise<Ptr> promise;
    std::shared_future<Ptr> in_flight;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = map_.find(key);
      if (it != map_.end()) {
        *joined = true;
        if (it->second.ready) return it->second.ready;  // the hot path: a kept result
        in_flight = it->second.flight;
      } else {
        map_.emplace(key, Entry{promise.get_future().share(), nullptr});
      }
    }
    if (in_flight.valid()) return in_flight.get();
    *joined = false;
    try {
      Ptr value = make();
      promise.set_value(value);
      std::lock_guard<std::mutex> lock(mutex_);
      if (keep_) {
        if (auto it = map_.find(key); it != map_.end()) it->second.ready = value;
      } else {
        map_.erase(key);
      }
      return value;
    } catch (...) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        map_.erase(key);
      }
      promise.set_exception(std::current_exception());
      throw;
    }
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    map_.clear();
  }

 private:
  struct Entry {
    std::shared_future<Ptr> flight;
    Ptr ready;  // set once the flight landed (kept maps only)
  };

  const bool keep_;
  std::mutex mutex_;
  std::unordered_map<Key, Entry, Hash> map_;
};

}  // namespace kjit::detail

// What an op launches for a problem key (shape, dtype, alignment, arch): its config and kernel,
// chosen once (tuning database or default, then load) and kept, so that a repeated call costs a
// map lookup and a launch. Thread-safe; two threads racing on a new key both choose, one keeps.
#pragma once

#include <mutex>
#include <string>
#include <unordered_map>

#include "cache/tuning_key.hpp"
#include "kjit/kernel.hpp"

namespace kjit::ops {

struct Choice {
  tuning::Config config;
  Kernel kernel;
};

class ChoiceMemo {
 public:
  // `choose()` returns the Choice for a key seen for the first time (a template, so that a hit
  // costs no std::function).
  template <class Choose>
  const Choice& get(const std::string& key, Choose&& choose) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (auto it = memo_.find(key); it != memo_.end()) return it->second;
    }
    Choice choice = choose();  // may compile: outside the lock
    std::lock_guard<std::mutex> lock(mutex_);
    return memo_.emplace(key, std::move(choice)).first->second;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, Choice> memo_;
};

}  // namespace kjit::ops

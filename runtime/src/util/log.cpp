#include "util/log.hpp"

#include <cstdio>
#include <mutex>
#include <set>

namespace kjit::detail {

void warn(const std::string& message) {
  // One line at a time from concurrent threads; never destroyed, so that a static destructor
  // (the miss log's last write) can still warn.
  static std::mutex& mutex = *new std::mutex;
  std::lock_guard<std::mutex> lock(mutex);
  std::fprintf(stderr, "kjit: warning: %s\n", message.c_str());
}

void warn_once(const std::string& key, const std::string& message) {
  static std::mutex& mutex = *new std::mutex;  // never destroyed, like warn's
  static std::set<std::string>& seen = *new std::set<std::string>;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (!seen.insert(key).second) return;
  }
  warn(message);
}

}  // namespace kjit::detail

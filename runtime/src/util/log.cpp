#include "util/log.hpp"

#include <cstdio>
#include <mutex>

namespace kjit::detail {

void warn(const std::string& message) {
  // One line at a time from concurrent threads; never destroyed, so that a static destructor
  // (the miss log's last write) can still warn.
  static std::mutex& mutex = *new std::mutex;
  std::lock_guard<std::mutex> lock(mutex);
  std::fprintf(stderr, "kjit: warning: %s\n", message.c_str());
}

}  // namespace kjit::detail

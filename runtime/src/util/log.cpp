#include "util/log.hpp"

#include <cstdio>
#include <mutex>

namespace kjit::detail {

void warn(const std::string& message) {
  static std::mutex mutex;  // one line at a time from concurrent threads
  std::lock_guard<std::mutex> lock(mutex);
  std::fprintf(stderr, "kjit: warning: %s\n", message.c_str());
}

}  // namespace kjit::detail

#include "ops/dispatch.hpp"

#include "cache/tuning/miss_log.hpp"
#include "util/environment.hpp"

namespace kjit {

void reload_tuning() {
  tuning::reload_tables();
  tuning::flush_misses();
}

namespace ops {

bool print_config() {
  const std::string v = detail::env("KJIT_PRINT_CONFIG");  // per new choice: tests toggle it
  return !v.empty() && v != "0";
}

}  // namespace ops
}  // namespace kjit

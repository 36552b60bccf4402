#include "ops/dispatch.hpp"

#include "cache/tuning/miss_log.hpp"

namespace kjit {

void reload_tuning() {
  tuning::reload_tables();
  tuning::flush_misses();
}

namespace ops {

bool print_config() {
  const char* v = std::getenv("KJIT_PRINT_CONFIG");  // read per new choice: tests toggle it
  return v && *v && std::string(v) != "0";
}

}  // namespace ops
}  // namespace kjit

#include "jit/settings.hpp"

#include <cstdlib>
#include <string_view>

#include <fmt/format.h>

#include "cache/store/store_entry.hpp"
#include "kjit/error.hpp"
#include "util/environment.hpp"

namespace kjit::detail {

std::string default_cache_dir() {
  if (std::string d = env("KJIT_CACHE_DIR"); !d.empty()) return d;
  const std::string dir = user_dir("XDG_CACHE_HOME", ".cache");
  return dir.empty() ? dir : dir + "/kjit";
}

Settings current_settings() {
  Settings s;
  const std::string mode = env("KJIT_CACHE");
  if (mode == "off" || mode == "0") {
    s.cache_mode = CacheMode::Off;
  } else if (mode == "read") {
    s.cache_mode = CacheMode::Read;
  } else if (mode.empty() || mode == "readwrite" || mode == "1") {
    s.cache_mode = CacheMode::ReadWrite;
  } else {
    throw Error(fmt::format("KJIT_CACHE=\"{}\" is not one of off, read, readwrite", mode));
  }
  s.cache_dir = default_cache_dir();
  if (s.cache_dir.empty() && s.cache_mode != CacheMode::Off) {
    throw Error(
        "no home folder for the kernel store ($HOME unset, no password entry): set "
        "KJIT_CACHE_DIR, or KJIT_CACHE=off");
  }
  const std::string max_bytes = env("KJIT_CACHE_MAX_BYTES");
  s.cache_max_bytes =
      max_bytes.empty() ? kDefaultCacheMaxBytes : parse_bytes("KJIT_CACHE_MAX_BYTES", max_bytes);
  s.no_jit = env_flag("KJIT_NO_JIT", false);
  s.dump_dir = env("KJIT_DUMP_DIR");
  debug_options();  // validated here too: a bad KJIT_DEBUG is one error, before any compile
  pch_enabled();
  return s;
}

store::KernelStore kernel_store(const Settings& settings) {
  return store::KernelStore(settings.cache_dir, settings.cache_max_bytes, store::kFormatVersion,
                            settings.cache_mode == CacheMode::Read);
}

bool pch_enabled() {
  return env_flag("KJIT_PCH", true);
}

std::vector<std::string> debug_options() {
  const std::string d = env("KJIT_DEBUG");
  if (d.empty()) return {};
  if (d == "lineinfo") return {"-lineinfo"};
  if (d == "G") return {"-G"};
  throw Error(fmt::format("KJIT_DEBUG=\"{}\" is not one of lineinfo, G", d));
}

}  // namespace kjit::detail

#include "jit/settings.hpp"

#include <pwd.h>
#include <unistd.h>

#include <cstdlib>
#include <string_view>

#include <fmt/format.h>

#include "cache/store/store_entry.hpp"
#include "kjit/error.hpp"

namespace kjit::detail {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::uint64_t parse_bytes(const std::string& text) {
  std::size_t used = 0;
  unsigned long long value = 0;
  try {
    value = std::stoull(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string_view suffix = std::string_view(text).substr(used);
  std::uint64_t scale = 0;
  if (suffix.empty() || suffix == "B") scale = 1;
  if (suffix == "K" || suffix == "KiB") scale = 1ull << 10;
  if (suffix == "M" || suffix == "MiB") scale = 1ull << 20;
  if (suffix == "G" || suffix == "GiB") scale = 1ull << 30;
  if (used == 0 || scale == 0) {
    throw Error(
        fmt::format("KJIT_CACHE_MAX_BYTES=\"{}\" is not a size (examples: 1048576, 512M, "
                    "4G)",
                    text));
  }
  return value * scale;
}

}  // namespace

std::string default_cache_dir() {
  if (std::string d = env("KJIT_CACHE_DIR"); !d.empty()) return d;
  if (std::string x = env("XDG_CACHE_HOME"); !x.empty()) return x + "/kjit";
  std::string home = env("HOME");
  if (home.empty()) {
    if (const passwd* pw = getpwuid(getuid()); pw && pw->pw_dir) home = pw->pw_dir;
  }
  if (home.empty()) home = "/tmp";
  return home + "/.cache/kjit";
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
  const std::string max_bytes = env("KJIT_CACHE_MAX_BYTES");
  s.cache_max_bytes = max_bytes.empty() ? kDefaultCacheMaxBytes : parse_bytes(max_bytes);
  const std::string no_jit = env("KJIT_NO_JIT");
  s.no_jit = !no_jit.empty() && no_jit != "0";
  s.dump_dir = env("KJIT_DUMP_DIR");
  return s;
}

store::KernelStore kernel_store(const Settings& settings) {
  return store::KernelStore(settings.cache_dir, settings.cache_max_bytes, store::kFormatVersion);
}

bool pch_enabled() {
  return env("KJIT_PCH") != "0";
}

std::vector<std::string> debug_options() {
  const std::string d = env("KJIT_DEBUG");
  if (d.empty()) return {};
  if (d == "lineinfo") return {"-lineinfo"};
  if (d == "G") return {"-G"};
  throw Error(fmt::format("KJIT_DEBUG=\"{}\" is not one of lineinfo, G", d));
}

}  // namespace kjit::detail

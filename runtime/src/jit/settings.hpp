// The environment variables that steer the JIT, read at each lookup that misses memory (so a
// test or a long-lived process can change them) and validated with clear errors.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cache/store/kernel_store.hpp"

namespace kjit::detail {

enum class CacheMode { Off, Read, ReadWrite };

struct Settings {
  CacheMode cache_mode = CacheMode::ReadWrite;  // KJIT_CACHE=off|read|readwrite
  std::string cache_dir;                        // KJIT_CACHE_DIR, else XDG default
  std::uint64_t cache_max_bytes = 0;            // KJIT_CACHE_MAX_BYTES (K/M/G/T suffixes)
  bool no_jit = false;                          // KJIT_NO_JIT=1 (or true/yes/on)
  std::string dump_dir;                         // KJIT_DUMP_DIR
};

Settings current_settings();

// The kernel store the settings name (KJIT_CACHE_DIR, KJIT_CACHE_MAX_BYTES), current format.
store::KernelStore kernel_store(const Settings& settings);

// NVRTC options for KJIT_DEBUG=lineinfo|G (empty when unset). Part of the cache key.
std::vector<std::string> debug_options();

// NVRTC's automatic precompiled headers, on unless KJIT_PCH=0 (or false/no/off). Measured on
// mma_gemm: ~1.0 s per cold compile without, ~0.2 s with once the PCH exists (docs/perf.md). Not
// part of the key: it does not change the compiled bytes.
bool pch_enabled();

// $KJIT_CACHE_DIR, else $XDG_CACHE_HOME/kjit (when absolute), else ~/.cache/kjit; "" without a
// home folder.
std::string default_cache_dir();

inline constexpr std::uint64_t kDefaultCacheMaxBytes = 4ull << 30;

}  // namespace kjit::detail

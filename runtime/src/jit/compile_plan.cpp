#include "jit/compile_plan.hpp"

#include <nvrtc.h>

#include <algorithm>
#include <cstdlib>
#include <regex>
#include <vector>

#include <fmt/format.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "cache/store/store_entry.hpp"
#include "driver/arch.hpp"
#include "jit/pch_folder.hpp"
#include "jit/settings.hpp"
#include "jit/template_tree.hpp"
#include "kjit/device.hpp"
#include "kjit/error.hpp"
#include "kjit/jit.hpp"
#include "nvrtc/include_paths.hpp"

namespace kjit {

namespace detail {
namespace {

// Inputs fixed for the life of the process (format, versions, toolkit), hashed once into the
// seed of every key.
std::uint64_t process_seed() {
  static const std::uint64_t seed = [] {
    const std::pair<int, int> nvrtc = nvrtc::version();
    const std::string fp =
        fmt::format("format={} kjit={} nvrtc={}.{} {}", store::kFormatVersion, version(),
                    nvrtc.first, nvrtc.second, nvrtc::toolkit_fingerprint());
    return XXH3_64bits(fp.data(), fp.size());
  }();
  return seed;
}

// Length-prefixed fields, so no two different field lists give the same bytes, gathered in a
// per-thread buffer (no allocation once warm) and hashed in one XXH3-128 call: a memory-hit
// lookup pays for this on every call.
class KeyWriter {
 public:
  KeyWriter() : buffer_(thread_buffer()) { buffer_.clear(); }
  void field(std::string_view tag, std::string_view value) {
    add(tag);
    add(value);
  }
  CacheKey finish() const {
    const XXH128_hash_t h = XXH3_128bits_withSeed(buffer_.data(), buffer_.size(), process_seed());
    return CacheKey{h.high64, h.low64};
  }

 private:
  static std::string& thread_buffer() {
    thread_local std::string buffer;
    return buffer;
  }
  void add(std::string_view s) {
    const std::uint64_t n = s.size();
    buffer_.append(reinterpret_cast<const char*>(&n), sizeof(n));
    buffer_.append(s);
  }
  std::string& buffer_;
};

void validate(const KernelSpec& spec) {
  if (spec.name_expressions.empty()) {
    throw Error(fmt::format("KernelSpec for {} names no kernel: name_expressions is empty",
                            spec.source.name()));
  }
  static const std::regex identifier("[A-Za-z_][A-Za-z0-9_]*");
  for (const auto& [name, value] : spec.defines) {
    if (!std::regex_match(name, identifier)) {
      throw Error(fmt::format("KernelSpec define name \"{}\" is not an identifier", name));
    }
  }
}

}  // namespace

PlannedKey plan_key(const KernelSpec& spec) {
  PlannedKey out;
  if (spec.arch.empty()) {
    out.arch = arch::current().name();
  } else {
    out.arch = spec.arch;
    if (!arch::is_real(out.arch)) {
      throw Error(
          fmt::format("KernelSpec arch \"{}\" is not a real architecture such as sm_90a "
                      "or sm_80",
                      spec.arch));
    }
  }
  KeyWriter key;
  key.field("source-kind", std::string_view(spec.source.kind() == Source::Kind::Embedded ? "e"
                                            : spec.source.kind() == Source::Kind::File   ? "f"
                                                                                         : "s"));
  key.field("source-name", spec.source.name());
  const CacheKey closure = source_closure(spec.source, include_dirs_of(spec.options));
  key.field("closure", std::string_view(reinterpret_cast<const char*>(&closure), sizeof(closure)));
  for (const std::string& e : spec.name_expressions)
    key.field("name", e);
  // Defines are a set: hash them in sorted order (copying only when the caller did not sort).
  if (std::is_sorted(spec.defines.begin(), spec.defines.end())) {
    for (const auto& [k, v] : spec.defines)
      key.field(k, v);
  } else {
    auto sorted = spec.defines;
    std::sort(sorted.begin(), sorted.end());
    for (const auto& [k, v] : sorted)
      key.field(k, v);
  }
  for (const std::string& o : spec.options)
    key.field("option", o);
  // The raw value: make_plan() validates it on a miss (debug_options() would allocate here).
  const char* debug = std::getenv("KJIT_DEBUG");
  key.field("debug", debug ? debug : "");
  key.field("arch", out.arch);
  out.key = key.finish();
  return out;
}

CompilePlan make_plan(const KernelSpec& spec, const PlannedKey& planned,
                      const std::string& cache_dir) {
  validate(spec);
  Arch(planned.arch).check_supported();  // one clear line instead of NVRTC's option errors
  ResolvedSource src = resolve_source(spec.source, include_dirs_of(spec.options));
  CompilePlan plan;
  plan.description = spec.describe();
  if (spec.arch.empty()) plan.description += " -> " + planned.arch;

  nvrtc::Request& req = plan.request;
  req.program_name = src.program_name;
  req.source = std::move(src.text);
  req.headers = std::move(src.headers);
  req.name_expressions = spec.name_expressions;
  // -std is fixed so templates can rely on it; -default-device keeps host-only declarations in
  // toolkit headers from breaking device code; -v gives the resource report; -no-cache stops
  // NVRTC (>= 12.9) from serving a result from the driver's compute cache, which skips ptxas
  // and so the resource report (kjit's own store is the cache).
  req.options = {"-default-device", "-std=c++17", "--gpu-architecture=" + planned.arch,
                 "--ptxas-options=-v", "-no-cache"};
  for (const std::string& dir : nvrtc::cuda_include_dirs())
    req.options.push_back("-I" + dir);
  std::vector<std::pair<std::string, std::string>> defines = spec.defines;
  std::sort(defines.begin(), defines.end());
  for (const auto& [k, v] : defines)
    req.options.push_back(fmt::format("-D{}={}", k, v));
  for (const std::string& o : debug_options())
    req.options.push_back(o);
  if (pch_enabled()) {
    if (const std::string dir = pch_folder(cache_dir, src.closure); !dir.empty()) {
      req.options.push_back("-pch");
      req.options.push_back("-pch-dir=" + dir);
    }
  }
  req.options.insert(req.options.end(), spec.options.begin(), spec.options.end());
  return plan;
}

}  // namespace detail
}  // namespace kjit

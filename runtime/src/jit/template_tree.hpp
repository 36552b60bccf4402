// Turns a kjit::Source into what NVRTC gets: the main text, every header of its quoted-include
// closure (as in-memory headers, so no include search happens at run time for kjit's own tree)
// and the closure's content hash for the cache key.
#pragma once

#include <string>
#include <vector>

#include "kjit/cache_key.hpp"
#include "kjit/kernel_spec.hpp"
#include "nvrtc/compiler.hpp"

namespace kjit::detail {

struct ResolvedSource {
  std::string program_name;
  std::string text;
  std::vector<nvrtc::Header> headers;
  CacheKey closure;         // over the main text and every header, by name
  std::string include_dir;  // the folder of a Source::file, passed to NVRTC with -I
};

// Embedded templates are looked up in KJIT_TEMPLATE_DIR first (when set), then in the library.
ResolvedSource resolve_source(const Source& source);

// resolve_source(source).closure, without copying texts for embedded templates (the hash was
// computed at build time), so that a memory-cache hit stays cheap.
CacheKey source_closure(const Source& source);

// Paths of every embedded template, sorted.
std::vector<std::string> embedded_template_paths();

}  // namespace kjit::detail

// The templates/ tree compiled into the library (generated at build time by embed_templates).
#pragma once

#include <cstddef>
#include <cstdint>

namespace kjit::detail {

struct EmbeddedTemplate {
  const char* path;  // relative to templates/, e.g. "samples/saxpy.cuh"
  const char* text;
  std::size_t size;
  std::uint64_t hash_high, hash_low;        // XXH3-128 of the text
  std::uint64_t closure_high, closure_low;  // closure_hash() of it and everything it includes
  const char* const* closure;               // the included files (not itself), nullptr-ended
};

extern const EmbeddedTemplate kEmbeddedTemplates[];
extern const std::size_t kEmbeddedTemplateCount;

}  // namespace kjit::detail

// Turns a kjit::Source into what NVRTC gets: the main text, every header of its include closure
// that kjit resolves (as in-memory headers, so NVRTC reads exactly the bytes that were hashed)
// and the closure's content hash for the cache key.
//
// A quoted include is looked up, in order: as an absolute path; next to the including file (for
// files read from disk); in the caller's -I folders; in the templates tree (KJIT_TEMPLATE_DIR,
// then the embedded copy; relative names without ".." only). An angle include is looked up in the
// caller's -I folders only. What none of these holds is the toolkit's (covered by the toolkit
// fingerprint in the key) when a toolkit folder has it; otherwise NVRTC gets a header of that
// name holding an #error that says where kjit looked, so that NVRTC never picks a file from the
// working directory (and an include in a branch the preprocessor skips costs nothing). Two
// different files included under one name are refused.
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
  CacheKey closure;  // over the main text and every header, by include name
};

// `include_dirs` are the caller's -I folders (KernelSpec::options), in order. Embedded templates
// are looked up in KJIT_TEMPLATE_DIR first (when set), then in the library.
ResolvedSource resolve_source(const Source& source,
                              const std::vector<std::string>& include_dirs = {});

// resolve_source(...).closure, without copying texts for embedded templates (the hash was
// computed at build time), so that a memory-cache hit stays cheap.
CacheKey source_closure(const Source& source, const std::vector<std::string>& include_dirs = {});

// The -I folders among NVRTC options ("-Idir", "-I dir", "--include-path=dir",
// "--include-path dir").
std::vector<std::string> include_dirs_of(const std::vector<std::string>& options);

// Paths of every embedded template, sorted.
std::vector<std::string> embedded_template_paths();

}  // namespace kjit::detail

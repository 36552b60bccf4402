// One NVRTC compile: source + in-memory headers + name expressions + options -> cubin, PTX,
// lowered names and the ptxas resource report. Knows nothing of caching or keys.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "kjit/resource_usage.hpp"

namespace kjit::nvrtc {

struct Header {
  std::string include_name;  // as written in #include "..."
  std::string text;
};

struct Request {
  std::string program_name;  // shown in diagnostics
  std::string source;
  std::vector<Header> headers;
  std::vector<std::string> name_expressions;
  std::vector<std::string> options;  // complete: arch, -std, -I, defines, ...
};

struct Result {
  std::string cubin;
  std::string ptx;  // empty when NVRTC kept none
  std::string log;
  std::vector<std::string> lowered_names;          // one per name expression, in order
  std::map<std::string, ResourceUsage> resources;  // by lowered name
  double seconds = 0;
};

// Throws CompileError (log, options, numbered excerpt around the first error) when NVRTC rejects
// the program, and kjit::Error for any other NVRTC failure.
Result compile(const Request& request);

// NVRTC's version (major, minor) and the real architectures it compiles for (80, 90, ...).
std::pair<int, int> version();
std::string version_text();  // "13.0": the NVRTC field of a tuning key
const std::vector<int>& supported_archs();

// Numbered lines [line - context, line + context] of `text`, the given line marked with '>'.
std::string numbered_excerpt(const std::string& text, int line, int context = 3);

}  // namespace kjit::nvrtc

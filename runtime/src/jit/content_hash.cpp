#include "jit/content_hash.hpp"

#include <algorithm>
#include <regex>
#include <sstream>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace kjit::detail {

CacheKey hash128(std::string_view bytes) {
  const XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  return CacheKey{h.high64, h.low64};
}

namespace {

std::vector<std::string> includes(std::string_view text, const std::regex& include_re) {
  std::vector<std::string> out;
  std::istringstream in{std::string(text)};
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, include_re)) out.push_back(m[1].str());
  }
  return out;
}

}  // namespace

std::vector<std::string> quoted_includes(std::string_view text) {
  static const std::regex include_re(R"(^\s*#\s*include\s*"([^"]+)\")");
  return includes(text, include_re);
}

std::vector<std::string> angle_includes(std::string_view text) {
  static const std::regex include_re(R"(^\s*#\s*include\s*<([^>]+)>)");
  return includes(text, include_re);
}

CacheKey closure_hash(std::vector<std::pair<std::string, CacheKey>> files) {
  std::sort(files.begin(), files.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string buffer;
  for (const auto& [name, h] : files) {
    buffer += name;
    buffer.push_back('\0');
    buffer.append(reinterpret_cast<const char*>(&h.high), sizeof(h.high));
    buffer.append(reinterpret_cast<const char*>(&h.low), sizeof(h.low));
  }
  return hash128(buffer);
}

}  // namespace kjit::detail

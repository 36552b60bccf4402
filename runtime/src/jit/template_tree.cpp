#include "jit/template_tree.hpp"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <unordered_map>

#include <fmt/format.h>

#include "jit/content_hash.hpp"
#include "jit/embedded_templates.hpp"
#include "kjit/error.hpp"

namespace kjit::detail {
namespace fs = std::filesystem;
namespace {

const std::unordered_map<std::string_view, const EmbeddedTemplate*>& embedded_index() {
  static const auto index = [] {
    std::unordered_map<std::string_view, const EmbeddedTemplate*> m;
    for (std::size_t i = 0; i < kEmbeddedTemplateCount; ++i) {
      m.emplace(kEmbeddedTemplates[i].path, &kEmbeddedTemplates[i]);
    }
    return m;
  }();
  return index;
}

std::optional<std::string> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string template_dir_override() {
  const char* v = std::getenv("KJIT_TEMPLATE_DIR");
  return v ? v : "";
}

// A file of the templates tree: the override folder wins over the embedded copy.
std::optional<std::string> find_in_tree(const std::string& path, const std::string& override_dir) {
  if (!override_dir.empty()) {
    if (auto text = read_file(fs::path(override_dir) / path)) return text;
  }
  auto it = embedded_index().find(path);
  if (it == embedded_index().end()) return std::nullopt;
  return std::string(it->second->text, it->second->size);
}

std::string missing_template_message(const std::string& path, const std::string& override_dir) {
  std::string known;
  for (const std::string& p : embedded_template_paths())
    known += "\n  " + p;
  return fmt::format("no template named \"{}\"{}; embedded templates:{}", path,
                     override_dir.empty() ? "" : " in KJIT_TEMPLATE_DIR=" + override_dir + " or",
                     known);
}

}  // namespace

std::vector<std::string> embedded_template_paths() {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < kEmbeddedTemplateCount; ++i)
    out.push_back(kEmbeddedTemplates[i].path);
  std::sort(out.begin(), out.end());
  return out;
}

CacheKey source_closure(const Source& source) {
  if (source.kind() == Source::Kind::Embedded && template_dir_override().empty()) {
    auto it = embedded_index().find(source.name());
    if (it == embedded_index().end()) throw Error(missing_template_message(source.name(), ""));
    return CacheKey{it->second->closure_high, it->second->closure_low};
  }
  return resolve_source(source).closure;
}

ResolvedSource resolve_source(const Source& source) {
  const std::string override_dir = template_dir_override();
  ResolvedSource out;
  out.program_name = source.name();

  if (source.kind() == Source::Kind::Embedded && override_dir.empty()) {
    // Fast path: texts and hashes were computed at build time.
    auto it = embedded_index().find(source.name());
    if (it == embedded_index().end()) throw Error(missing_template_message(source.name(), ""));
    const EmbeddedTemplate& t = *it->second;
    out.text.assign(t.text, t.size);
    for (const char* const* inc = t.closure; *inc; ++inc) {
      const EmbeddedTemplate& h = *embedded_index().at(*inc);
      out.headers.push_back({h.path, std::string(h.text, h.size)});
    }
    out.closure = CacheKey{t.closure_high, t.closure_low};
    return out;
  }

  fs::path local_dir;  // where a Source::file's own quoted includes are looked for first
  switch (source.kind()) {
    case Source::Kind::Embedded: {
      auto text = find_in_tree(source.name(), override_dir);
      if (!text) throw Error(missing_template_message(source.name(), override_dir));
      out.text = std::move(*text);
      break;
    }
    case Source::Kind::File: {
      auto text = read_file(source.name());
      if (!text) throw Error(fmt::format("cannot read kernel source file \"{}\"", source.name()));
      out.text = std::move(*text);
      local_dir = fs::absolute(source.name()).parent_path();
      out.include_dir = local_dir.string();
      break;
    }
    case Source::Kind::String:
      out.text = source.text();
      break;
  }

  std::vector<std::pair<std::string, CacheKey>> hashed{{out.program_name, hash128(out.text)}};
  std::set<std::string> seen;
  std::vector<std::string> pending = quoted_includes(out.text);
  while (!pending.empty()) {
    const std::string name = pending.back();
    pending.pop_back();
    if (!seen.insert(name).second) continue;
    std::optional<std::string> text;
    if (!local_dir.empty()) text = read_file(local_dir / name);
    if (!text) text = find_in_tree(name, override_dir);
    if (!text) continue;  // left to NVRTC, which reports it with the including line
    for (std::string& inc : quoted_includes(*text))
      pending.push_back(std::move(inc));
    hashed.emplace_back(name, hash128(*text));
    out.headers.push_back({name, std::move(*text)});
  }
  out.closure = closure_hash(std::move(hashed));
  return out;
}

}  // namespace kjit::detail

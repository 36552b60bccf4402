#include "jit/template_tree.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string_view>
#include <unordered_map>

#include <fmt/format.h>

#include "jit/content_hash.hpp"
#include "jit/embedded_templates.hpp"
#include "kjit/error.hpp"
#include "nvrtc/include_paths.hpp"
#include "util/environment.hpp"
#include "util/log.hpp"

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
  std::string dir = env("KJIT_TEMPLATE_DIR");
  std::error_code ec;
  if (!dir.empty() && !fs::is_directory(dir, ec)) {
    warn_once("template-dir|" + dir, "KJIT_TEMPLATE_DIR=" + dir +
                                         " is not a folder: every template comes from the library");
  }
  return dir;
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

std::vector<std::string> include_dirs_of(const std::vector<std::string>& options) {
  std::vector<std::string> dirs;
  for (std::size_t i = 0; i < options.size(); ++i) {
    const std::string& o = options[i];
    if (o == "-I" || o == "--include-path") {
      if (i + 1 < options.size()) dirs.push_back(options[++i]);
    } else if (o.rfind("-I", 0) == 0) {
      dirs.push_back(o.substr(2));
    } else if (o.rfind("--include-path=", 0) == 0) {
      dirs.push_back(o.substr(std::strlen("--include-path=")));
    }
  }
  return dirs;
}

CacheKey source_closure(const Source& source, const std::vector<std::string>& include_dirs) {
  if (source.kind() == Source::Kind::Embedded && template_dir_override().empty() &&
      include_dirs.empty()) {
    auto it = embedded_index().find(source.name());
    if (it == embedded_index().end()) throw Error(missing_template_message(source.name(), ""));
    return CacheKey{it->second->closure_high, it->second->closure_low};
  }
  return resolve_source(source, include_dirs).closure;
}

namespace {

// A header as found: its text, and the folder its own quoted includes are looked up in first
// (empty for the templates tree and for in-memory sources).
struct Found {
  std::string text;
  fs::path folder;
  std::string where;  // for the duplicate-name message
};

bool inside_tree(const std::string& name) {
  const fs::path p(name);
  if (p.is_absolute()) return false;
  for (const fs::path& part : p) {
    if (part == "..") return false;
  }
  return true;
}

std::optional<Found> read_found(const fs::path& path) {
  if (auto text = read_file(path)) {
    return Found{std::move(*text), path.parent_path(), path.lexically_normal().string()};
  }
  return std::nullopt;
}

// The first of the caller's -I folders that holds `name` (both include forms search them).
std::optional<Found> find_in_dirs(const std::string& name,
                                  const std::vector<std::string>& include_dirs) {
  for (const std::string& dir : include_dirs) {
    if (auto f = read_found(fs::path(dir) / name)) return f;
  }
  return std::nullopt;
}

std::optional<Found> find_quoted(const std::string& name, const fs::path& including_folder,
                                 const std::vector<std::string>& include_dirs,
                                 const std::string& override_dir) {
  if (fs::path(name).is_absolute()) return read_found(name);
  if (!including_folder.empty()) {
    if (auto f = read_found(including_folder / name)) return f;
  }
  if (auto f = find_in_dirs(name, include_dirs)) return f;
  if (!inside_tree(name)) return std::nullopt;
  if (auto text = find_in_tree(name, override_dir))
    return Found{std::move(*text), {}, "templates/" + name};
  return std::nullopt;
}

bool in_toolkit(const std::string& name) {
  if (!inside_tree(name)) return false;  // "../" would climb out of the toolkit too
  std::error_code ec;
  for (const std::string& dir : nvrtc::cuda_include_dirs()) {
    if (fs::exists(fs::path(dir) / name, ec)) return true;
  }
  return false;
}

// What NVRTC gets for a quoted include kjit cannot resolve: an error where it is used.
Found unresolved(const std::string& name, const fs::path& including_folder) {
  std::string looked = "the caller's -I folders and the templates tree";
  if (!including_folder.empty()) looked = including_folder.string() + ", " + looked;
  return Found{fmt::format("#error \"kjit: cannot resolve #include \\\"{}\\\" (looked in {})\"\n",
                           name, looked),
               {},
               "(unresolved)"};
}

}  // namespace

ResolvedSource resolve_source(const Source& source, const std::vector<std::string>& include_dirs) {
  const std::string override_dir = template_dir_override();
  ResolvedSource out;
  out.program_name = source.name();

  if (source.kind() == Source::Kind::Embedded && override_dir.empty() && include_dirs.empty()) {
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

  fs::path main_folder;  // where a Source::file's own quoted includes are looked for first
  switch (source.kind()) {
    case Source::Kind::Embedded: {
      if (!inside_tree(source.name()))
        throw Error(missing_template_message(source.name(), override_dir));
      auto text = find_in_tree(source.name(), override_dir);
      if (!text) throw Error(missing_template_message(source.name(), override_dir));
      out.text = std::move(*text);
      break;
    }
    case Source::Kind::File: {
      auto text = read_file(source.name());
      if (!text) throw Error(fmt::format("cannot read kernel source file \"{}\"", source.name()));
      out.text = std::move(*text);
      main_folder = fs::absolute(source.name()).parent_path();
      break;
    }
    case Source::Kind::String:
      out.text = source.text();
      break;
  }

  std::vector<std::pair<std::string, CacheKey>> hashed{{out.program_name, hash128(out.text)}};
  std::map<std::string, std::string> resolved;  // include name -> where it was found
  struct Pending {
    std::string name;
    bool angle;
    fs::path including_folder;
  };
  std::vector<Pending> pending;
  auto queue_includes_of = [&](const std::string& text, const fs::path& folder) {
    for (std::string& inc : quoted_includes(text))
      pending.push_back({std::move(inc), false, folder});
    if (include_dirs.empty()) return;
    for (std::string& inc : angle_includes(text))
      pending.push_back({std::move(inc), true, folder});
  };
  queue_includes_of(out.text, main_folder);
  while (!pending.empty()) {
    const Pending p = std::move(pending.back());
    pending.pop_back();
    std::optional<Found> found =
        p.angle ? find_in_dirs(p.name, include_dirs)
                : find_quoted(p.name, p.including_folder, include_dirs, override_dir);
    if (!found) {
      if (p.angle || in_toolkit(p.name)) continue;  // the toolkit's: NVRTC finds it
      found = unresolved(p.name, p.including_folder);
    }
    if (auto it = resolved.find(p.name); it != resolved.end()) {
      if (it->second != found->where) {
        throw Error(
            fmt::format("two different headers are included as \"{}\" ({} and {}); "
                        "kjit gives NVRTC one header per name: rename one",
                        p.name, it->second, found->where));
      }
      continue;
    }
    resolved.emplace(p.name, found->where);
    queue_includes_of(found->text, found->folder);
    hashed.emplace_back(p.name, hash128(found->text));
    out.headers.push_back({p.name, std::move(found->text)});
  }
  out.closure = closure_hash(std::move(hashed));
  return out;
}

}  // namespace kjit::detail

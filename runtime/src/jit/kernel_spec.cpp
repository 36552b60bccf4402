#include "kjit/kernel_spec.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace kjit {

Source Source::embedded(std::string template_path) {
  return Source(Kind::Embedded, std::move(template_path), {});
}

Source Source::file(std::string path) {
  return Source(Kind::File, std::move(path), {});
}

Source Source::string(std::string name, std::string text) {
  return Source(Kind::String, std::move(name), std::move(text));
}

std::string KernelSpec::describe() const {
  std::string out = source.name() + ":";
  for (const std::string& e : name_expressions)
    out += " " + e;
  std::vector<std::pair<std::string, std::string>> sorted = defines;
  std::sort(sorted.begin(), sorted.end());
  for (const auto& [k, v] : sorted)
    out += fmt::format(" -D{}={}", k, v);
  for (const std::string& o : options)
    out += " " + o;
  out += " [" + (arch.empty() ? std::string("device arch") : arch) + "]";
  return out;
}

}  // namespace kjit

#include "util/environment.hpp"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <limits>

#include <fmt/format.h>

#include "kjit/error.hpp"

namespace kjit::detail {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

}  // namespace

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

bool env_flag(const char* name, bool fallback) {
  const std::string v = lower(env(name));
  if (v.empty()) return fallback;
  if (v == "1" || v == "true" || v == "yes" || v == "on") return true;
  if (v == "0" || v == "false" || v == "no" || v == "off") return false;
  throw Error(fmt::format("{}=\"{}\" is not one of 0, 1, true, false", name, env(name)));
}

std::uint64_t parse_bytes(const char* name, const std::string& text) {
  auto bad = [&] {
    return Error(
        fmt::format("{}=\"{}\" is not a size in bytes (examples: 1048576, 512M, 4G)", name, text));
  };
  std::size_t i = 0;
  std::uint64_t value = 0;
  constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();
  for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); ++i) {
    const std::uint64_t digit = static_cast<std::uint64_t>(text[i] - '0');
    if (value > (kMax - digit) / 10) throw bad();
    value = value * 10 + digit;
  }
  if (i == 0) throw bad();
  const std::string suffix = lower(text.substr(i));
  int shift = -1;
  if (suffix.empty() || suffix == "b") shift = 0;
  if (suffix == "k" || suffix == "kib") shift = 10;
  if (suffix == "m" || suffix == "mib") shift = 20;
  if (suffix == "g" || suffix == "gib") shift = 30;
  if (suffix == "t" || suffix == "tib") shift = 40;
  if (shift < 0 || value > (kMax >> shift)) throw bad();
  return value << shift;
}

std::string user_dir(const char* xdg_var, const char* home_relative) {
  const std::string xdg = env(xdg_var);
  if (!xdg.empty() && xdg.front() == '/') return xdg;
  std::string home = env("HOME");
  if (home.empty() || home.front() != '/') {
    home.clear();
    if (const passwd* pw = ::getpwuid(::geteuid()); pw && pw->pw_dir) home = pw->pw_dir;
  }
  return home.empty() ? std::string() : home + "/" + home_relative;
}

}  // namespace kjit::detail

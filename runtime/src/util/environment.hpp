// Reading kjit's environment variables: one parser per kind of value, each failing with one
// line that names the variable and what it accepts.
#pragma once

#include <cstdint>
#include <string>

namespace kjit::detail {

std::string env(const char* name);  // "" when unset

// 0/1, true/false, yes/no, on/off (any case); unset or empty: `fallback`. Throws Error otherwise.
bool env_flag(const char* name, bool fallback);

// A byte count: digits with an optional K, M, G or T suffix (also KiB...TiB, any case; powers
// of 1024). Throws Error for a sign, an overflow or anything else.
std::uint64_t parse_bytes(const char* name, const std::string& text);

// A per-user folder in the XDG way: $<xdg_var> when it is an absolute path (the XDG spec
// ignores relative ones), else <home>/<home_relative> with the home from $HOME or the password
// database. "" when there is no home at all: callers say so rather than fall back to /tmp.
std::string user_dir(const char* xdg_var, const char* home_relative);

}  // namespace kjit::detail

#include "tools/tuning_export.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "kjit/error.hpp"
#include "kjit/jit.hpp"
#include "ops/registry.hpp"

namespace kjit::tools {
namespace {

// Length of the valid UTF-8 sequence at `s[i]`, or 0.
std::size_t utf8_length(const std::string& s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const std::size_t n = c < 0x80         ? 1
                        : (c >> 5) == 6  ? 2
                        : (c >> 4) == 14 ? 3
                        : (c >> 3) == 30 ? 4
                                         : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 0;
  }
  return n;
}

bool clean_text(const std::string& s) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_length(s, i);
    const auto c = static_cast<unsigned char>(s[i]);
    if (n == 0 || c < 0x20 || c == 0x7f) return false;
    i += n;
  }
  return true;
}

std::optional<double> optional_time(const nlohmann::json& row, const char* name) {
  const nlohmann::json v = row.value(name, nlohmann::json());
  if (v.is_null()) return std::nullopt;
  return v.get<double>();
}

tuning::Best parse_row(const nlohmann::json& j, const std::string& origin) {
  tuning::Best b;
  b.key = {j.at("op"),    j.at("template_hash"), j.at("problem_key"),
           j.at("dtype"), j.at("sm_arch"),       j.at("nvrtc")};
  b.config = j.at("config").is_string() ? j.at("config").get<std::string>()
                                        : tuning::config_json(j.at("config").get<tuning::Config>());
  b.median_us = j.at("median_us");
  b.runner_up_us = optional_time(j, "runner_up_us");
  b.default_us = optional_time(j, "default_us");
  b.verified = j.value("verified", false);
  b.provenance = {j.value("gpu_name", ""), j.value("driver", ""), j.value("kjit_version", ""),
                  j.value("timing_policy", ""), origin};
  b.updated_at = j.value("updated_at", 0);
  return b;
}

// Why a parsed row cannot be imported ("" if it can).
std::string row_problem(const tuning::Best& b) {
  for (const std::string* text :
       {&b.key.op, &b.key.template_hash, &b.key.problem_key, &b.key.dtype, &b.key.sm_arch,
        &b.key.nvrtc, &b.provenance.gpu_name, &b.provenance.driver, &b.provenance.kjit_version,
        &b.provenance.timing_policy}) {
    if (!clean_text(*text)) return "a text field holds control characters or invalid UTF-8";
  }
  for (const std::optional<double>& t :
       {std::optional<double>(b.median_us), b.runner_up_us, b.default_us}) {
    if (t && !(std::isfinite(*t) && *t > 0)) return fmt::format("a time of {} us", *t);
  }
  try {
    ops::stored_result(b);
  } catch (const InvalidArgument& e) {
    return printable(e.what());
  }
  return {};
}

}  // namespace

std::string printable(const std::string& text) {
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = utf8_length(text, i);
    const auto c = static_cast<unsigned char>(text[i]);
    if (n == 0 || c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
      ++i;
    } else {
      out.append(text, i, n);
      i += n;
    }
  }
  return out;
}

nlohmann::json export_row(const tuning::Best& b) {
  const nlohmann::json config = nlohmann::json::parse(b.config, nullptr, false);
  auto time = [](const std::optional<double>& t) {
    return t ? nlohmann::json(*t) : nlohmann::json();
  };
  return {{"id", b.id},
          {"op", b.key.op},
          {"template_hash", b.key.template_hash},
          {"problem_key", b.key.problem_key},
          {"dtype", b.key.dtype},
          {"sm_arch", b.key.sm_arch},
          {"nvrtc", b.key.nvrtc},
          {"config", config.is_discarded() ? nlohmann::json(b.config) : config},
          {"median_us", b.median_us},
          {"runner_up_us", time(b.runner_up_us)},
          {"default_us", time(b.default_us)},
          {"verified", b.verified},
          {"state", b.state},
          {"pinned", b.pinned},
          {"gpu_name", b.provenance.gpu_name},
          {"driver", b.provenance.driver},
          {"kjit_version", b.provenance.kjit_version},
          {"timing_policy", b.provenance.timing_policy},
          {"origin", b.provenance.origin},
          {"updated_at", b.updated_at}};
}

nlohmann::json export_document(const std::vector<tuning::Best>& rows) {
  nlohmann::json j = nlohmann::json::array();
  for (const tuning::Best& b : rows)
    j.push_back(export_row(b));
  return {{"format", "kjit-tuning-results"},
          {"version", kExportVersion},
          {"kjit", version()},
          {"rows", std::move(j)}};
}

std::vector<tuning::Best> import_document(const std::string& file) {
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec))
    throw InvalidArgument(fmt::format("cannot import {}: it is a folder", file));
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InvalidArgument("cannot read " + file);
  std::ostringstream text;
  text << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument(fmt::format("{}: {}", file, e.what()));
  }
  if (!j.is_object() || j.value("format", "") != "kjit-tuning-results")
    throw InvalidArgument(file + " is not a kjit tuning export");
  if (!j.contains("version") || !j["version"].is_number_integer() ||
      j["version"].get<int>() != kExportVersion) {
    throw InvalidArgument(
        fmt::format("{}: export format version {} is not {} (written by "
                    "another kjit version)",
                    file, j.value("version", nlohmann::json()).dump(), kExportVersion));
  }
  if (!j.contains("rows") || !j["rows"].is_array())
    throw InvalidArgument(file + ": \"rows\" must be an array of results");
  const std::string origin = "import:" + printable(std::filesystem::path(file).filename().string());
  std::vector<tuning::Best> rows;
  for (std::size_t i = 0; i < j["rows"].size(); ++i) {
    tuning::Best b;
    try {
      b = parse_row(j["rows"][i], origin);
    } catch (const nlohmann::json::exception& e) {
      throw InvalidArgument(fmt::format("{}: row {} is malformed: {}", file, i + 1, e.what()));
    }
    if (std::string problem = row_problem(b); !problem.empty())
      throw InvalidArgument(fmt::format("{}: row {} refused: {}", file, i + 1, problem));
    rows.push_back(std::move(b));
  }
  return rows;
}

}  // namespace kjit::tools

// What identifies a tuning result. Shapes and configs are maps of named integers with one
// canonical text form each ("D=512;N=4;rows=65536", {"rows_per_block":4,"vec":8}), so that the
// same shape or config is always the same string in the database.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace kjit::tuning {

using Shape = std::map<std::string, std::int64_t>;
using Config = std::map<std::string, std::int64_t>;

std::string problem_key(const Shape& shape);                     // "D=512;N=4;rows=65536"
std::optional<Shape> parse_problem_key(const std::string& key);  // nullopt if malformed
// The value of `name` in `config`, or -1 where it has none (validity rules reject both).
std::int64_t config_value(const Config& config, const std::string& name);
std::string config_json(const Config& config);  // canonical JSON, sorted keys
std::optional<Config> parse_config_json(const std::string& json);

// Hard fields: a stored result is used only when all of them match.
struct TuningKey {
  std::string op;             // "merge_states"
  std::string template_hash;  // closure hash of the op's template(s): a kernel edit re-tunes
  std::string problem_key;
  std::string dtype;    // "bf16"
  std::string sm_arch;  // "sm_90a"
  std::string nvrtc;    // "13.0"
};

// Soft fields: where and how a result was measured.
struct Provenance {
  std::string gpu_name;
  std::string driver;
  std::string kjit_version;
  std::string timing_policy;
  std::string origin;  // "tune", "import:<file>"
};

}  // namespace kjit::tuning

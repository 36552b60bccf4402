#include "cache/tuning/tuning_key.hpp"

#include <nlohmann/json.hpp>

namespace kjit::tuning {

std::string problem_key(const Shape& shape) {
  std::string out;
  for (const auto& [name, value] : shape) {
    if (!out.empty()) out += ';';
    out += name + "=" + std::to_string(value);
  }
  return out;
}

std::optional<Shape> parse_problem_key(const std::string& key) {
  Shape shape;
  std::size_t start = 0;
  while (start < key.size()) {
    std::size_t end = key.find(';', start);
    if (end == std::string::npos) end = key.size();
    const std::string part = key.substr(start, end - start);
    const std::size_t eq = part.find('=');
    if (eq == std::string::npos || eq == 0) return std::nullopt;
    try {
      std::size_t used = 0;
      const std::string number = part.substr(eq + 1);
      shape[part.substr(0, eq)] = std::stoll(number, &used);
      if (used != number.size()) return std::nullopt;
    } catch (const std::exception&) {
      return std::nullopt;
    }
    start = end + 1;
  }
  return shape;
}

std::int64_t config_value(const Config& config, const std::string& name) {
  auto it = config.find(name);
  return it == config.end() ? -1 : it->second;
}

std::string config_json(const Config& config) {
  return nlohmann::json(config).dump();
}

std::optional<Config> parse_config_json(const std::string& json) {
  try {
    return nlohmann::json::parse(json).get<Config>();
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace kjit::tuning

// Every specialisation kjit ships, by op family: what `kjit precompile` compiles, what the CPU
// tests check for resource rules, what the main job reports. Each op family adds itself here.
#pragma once

#include <string>
#include <vector>

#include "kjit/kernel_spec.hpp"

namespace kjit::catalog {

struct Family {
  std::string name;
  std::vector<KernelSpec> specs;
};

std::vector<Family> shipped(const std::string& arch);

// Ops whose configs are tuned, and the current hash of each one's template (results measured on
// another template version never apply). Empty for an unknown op.
std::vector<std::string> tuned_ops();
std::string template_hash(const std::string& op);

}  // namespace kjit::catalog

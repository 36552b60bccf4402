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

}  // namespace kjit::catalog

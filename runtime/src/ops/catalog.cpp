#include "ops/catalog.hpp"

#include "ops/merge_states/merge_states_plan.hpp"
#include "ops/samples/samples.hpp"

namespace kjit::catalog {

std::vector<Family> shipped(const std::string& arch) {
  return {Family{"samples", samples::shipped(arch)},
          Family{"merge_states", attention::merge_states_plan::shipped(arch)}};
}

}  // namespace kjit::catalog

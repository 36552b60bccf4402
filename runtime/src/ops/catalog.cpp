#include "ops/catalog.hpp"

#include "jit/template_tree.hpp"
#include "ops/attention/flash_forward_plan.hpp"
#include "ops/merge_states/merge_states_plan.hpp"
#include "ops/samples/samples.hpp"

namespace kjit::catalog {

std::vector<Family> shipped(const std::string& arch) {
  return {Family{"samples", samples::shipped(arch)},
          Family{"merge_states", attention::merge_states_plan::shipped(arch)},
          Family{"attention", attention::flash_plan::shipped(arch)}};
}

std::vector<std::string> tuned_ops() {
  return {"merge_states", "attention"};
}

std::string template_hash(const std::string& op) {
  auto closure = [](const char* path) {
    return detail::source_closure(Source::embedded(path)).hex();
  };
  if (op == "merge_states") return closure(attention::merge_states_plan::kTemplate);
  if (op == "attention") {
    // Either main loop's template may win a tuning run: a change to one retires the results.
    return closure(attention::flash_plan::kTemplate) + "+" +
           closure(attention::flash_plan::kTemplateWgmma);
  }
  return {};
}

}  // namespace kjit::catalog

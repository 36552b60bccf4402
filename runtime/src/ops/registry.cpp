#include "ops/registry.hpp"

#include "ops/attention/flash_forward.hpp"
#include "ops/family_model.hpp"
#include "ops/merge_states/merge_states.hpp"
#include "samples/samples.hpp"

namespace kjit::ops {

const std::vector<const KernelFamily*>& families() {
  static const std::vector<const KernelFamily*> all{&family_of<MergeStates>(),
                                                    &family_of<FlashForward>()};
  return all;
}

const KernelFamily* find_family(const std::string& name) {
  for (const KernelFamily* f : families()) {
    if (f->name() == name) return f;
  }
  return nullptr;
}

std::vector<ShippedSpecs> shipped(const Arch& arch) {
  std::vector<ShippedSpecs> out{{"samples", samples::shipped(arch.name())}};
  for (const KernelFamily* f : families())
    out.push_back({f->name(), f->shipped(arch)});
  return out;
}

}  // namespace kjit::ops

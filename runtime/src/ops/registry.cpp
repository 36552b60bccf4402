#include "ops/registry.hpp"

#include <fmt/format.h>

#include "kjit/error.hpp"
#include "ops/attention/flash_backward.hpp"
#include "ops/attention/flash_forward.hpp"
#include "ops/attention/flash_grouped_backward.hpp"
#include "ops/attention/flash_grouped_forward.hpp"
#include "ops/cp/zigzag_copy.hpp"
#include "ops/family_model.hpp"
#include "ops/merge_states/merge_states.hpp"
#include "ops/mla/mla_decode.hpp"
#include "ops/moe/align.hpp"
#include "ops/moe/balance.hpp"
#include "ops/moe/block_slots.hpp"
#include "ops/moe/grouped_gemm.hpp"
#include "ops/moe/permute.hpp"
#include "ops/moe/quantize_fp4.hpp"
#include "ops/moe/router.hpp"
#include "samples/samples.hpp"

namespace kjit::ops {

const std::vector<const KernelFamily*>& families() {
  static const std::vector<const KernelFamily*> all{
      &family_of<MergeStates>(),    &family_of<FlashForward>(),    &family_of<FlashBackward>(),
      &family_of<GroupedForward>(), &family_of<GroupedBackward>(), &family_of<MlaDecode>(),
      &family_of<MoeRouter>(),      &family_of<MoeAlign>(),        &family_of<MoePermute>(),
      &family_of<MoeUnpermute>(),   &family_of<MoeGemm>(),         &family_of<MoeBalance>(),
      &family_of<MoeQuantizeFp4>(), &family_of<MoeBlockSlots>(),   &family_of<ZigzagCopy>()};
  return all;
}

const KernelFamily* find_family(const std::string& name) {
  for (const KernelFamily* f : families()) {
    if (f->name() == name) return f;
  }
  return nullptr;
}

StoredProblem stored_problem(const tuning::TuningKey& key) {
  const KernelFamily* family = find_family(key.op);
  if (!family) throw InvalidArgument(fmt::format("unknown op \"{}\"", key.op));
  const std::optional<tuning::Shape> shape = tuning::parse_problem_key(key.problem_key);
  const std::optional<DType> dtype = dtype_from_name(key.dtype);
  if (!shape || !dtype)
    throw InvalidArgument(fmt::format("shape \"{}\" {}", key.problem_key, key.dtype));
  return {family, {*shape, *dtype}};
}

StoredResult stored_result(const tuning::Best& b) {
  const auto [family, problem] = stored_problem(b.key);
  const std::optional<tuning::Config> config = tuning::parse_config_json(b.config);
  if (!config || !family->well_formed(*config))
    throw InvalidArgument(fmt::format("config {} is not a config of {}", b.config, b.key.op));
  const Arch arch(b.key.sm_arch);
  family->check(problem);
  if (!family->valid(*config, problem, arch)) {
    throw InvalidArgument(fmt::format("config {} cannot run {} {} on {}", b.config,
                                      b.key.problem_key, b.key.dtype, arch.name()));
  }
  return {family, problem, *config};
}

std::vector<ShippedSpecs> shipped(const Arch& arch) {
  std::vector<ShippedSpecs> out{{"samples", samples::shipped(arch.name())}};
  for (const KernelFamily* f : families())
    out.push_back({f->name(), f->shipped(arch)});
  return out;
}

}  // namespace kjit::ops

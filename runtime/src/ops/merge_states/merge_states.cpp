// kjit::attention::merge_states: validate -> config (tuning database or default) -> kernel ->
// launch. The (shape, dtype, alignment, arch) -> (config, kernel) choice is memoised, so a
// repeated call costs a map lookup and a launch.
#include "kjit/merge_states.hpp"

#include <fmt/format.h>

#include "cache/config_lookup.hpp"
#include "jit/compile_plan.hpp"
#include "kjit/jit.hpp"
#include "ops/catalog.hpp"
#include "ops/choice_memo.hpp"
#include "ops/merge_states/merge_states_plan.hpp"

namespace kjit::attention {
namespace {

namespace plan = merge_states_plan;

tuning::ConfigLookup& config_lookup() {
  static tuning::ConfigLookup lookup(
      "merge_states", catalog::template_hash("merge_states"),
      {{"D", tuning::Bucket::Exact}, {"N", tuning::Bucket::Exact}, {"rows", tuning::Bucket::Pow2}});
  return lookup;
}

const ops::Choice& choose(const plan::Problem& p) {
  static ops::ChoiceMemo memo;
  const std::string& arch = detail::current_device_arch();
  // The fields of p.shape(), formatted directly: a hit builds no map.
  const std::string key = fmt::format("{}|{}|{}|{}|{}|{}", p.dim, p.parts, p.rows(),
                                      dtype_name(p.dtype), p.alignment, arch);
  return memo.get(key, [&] {
    const tuning::Choice tuned = config_lookup().choose(
        p.shape(), dtype_name(p.dtype), arch,
        [&](const tuning::Config& c) { return plan::valid(c, p); },
        [&] { return plan::default_config(p.dtype, p.dim, p.alignment); });
    return ops::Choice{tuned.config,
                       load(plan::spec(tuned.config, p.dtype, p.dim, p.parts)).kernel()};
  });
}

}  // namespace

void merge_states(const TensorView& parts, const TensorView& parts_lse, const TensorView& out,
                  const TensorView& out_lse, StreamHandle stream) {
  const plan::Problem p = plan::validate(parts, parts_lse, out, out_lse);
  if (p.rows() == 0) return;
  const ops::Choice& c = choose(p);
  plan::launch(c.kernel, c.config, p, stream);
}

}  // namespace kjit::attention

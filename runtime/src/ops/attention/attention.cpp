// kjit::attention::forward / forward_varlen: validate -> config (tuning database or default) ->
// kernel -> launch. The (shape, dtype, arch) -> (config, kernel) choice is memoised, so a
// repeated call costs a map lookup and a launch.
#include "kjit/attention.hpp"

#include <fmt/format.h>

#include "cache/config_lookup.hpp"
#include "jit/compile_plan.hpp"
#include "kjit/jit.hpp"
#include "ops/attention/flash_forward_plan.hpp"
#include "ops/catalog.hpp"
#include "ops/choice_memo.hpp"

namespace kjit::attention {
namespace {

namespace plan = flash_plan;

tuning::ConfigLookup& config_lookup() {
  static tuning::ConfigLookup lookup("attention", catalog::template_hash("attention"),
                                     plan::tuning_dimensions());
  return lookup;
}

const ops::Choice& choose(const plan::Problem& p) {
  static ops::ChoiceMemo memo;
  const std::string& arch = detail::current_device_arch();
  // The fields of p.shape(), formatted directly: a hit builds no map.
  const std::string key =
      fmt::format("{}|{}|{}|{}|{}|{}|{}|{}|{}", p.batch, p.heads_q, p.heads_k, p.head_dim,
                  p.max_seqlen_q, p.max_seqlen_k, p.causal, dtype_name(p.dtype), arch);
  return memo.get(key, [&] {
    const tuning::Choice tuned = config_lookup().choose(
        p.shape(), dtype_name(p.dtype), arch,
        [&](const tuning::Config& c) { return plan::valid(c, p.dtype, p.head_dim, arch); },
        [&] { return plan::default_config(p.head_dim, p.causal, arch); });
    return ops::Choice{
        tuned.config, load(plan::spec(tuned.config, p.dtype, p.head_dim, p.causal, arch)).kernel()};
  });
}

void run(const plan::Problem& p, StreamHandle stream) {
  if (p.empty()) return;  // before choosing: an empty call compiles nothing
  const ops::Choice& c = choose(p);
  plan::launch(c.kernel, c.config, p, stream);
}

}  // namespace

void forward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& out,
             const TensorView& lse, const ForwardOptions& options, StreamHandle stream) {
  run(plan::validate(q, k, v, out, lse, options), stream);
}

void forward_varlen(const TensorView& q, const TensorView& k, const TensorView& v,
                    const TensorView& out, const TensorView& lse, const Varlen& seqlens,
                    const ForwardOptions& options, StreamHandle stream) {
  run(plan::validate_varlen(q, k, v, out, lse, seqlens, options), stream);
}

}  // namespace kjit::attention

// kjit::attention::forward / forward_varlen: validate -> config (tuning database or default) ->
// kernel -> launch. The (shape, dtype, arch) -> (config, kernel) choice is memoised, so a
// repeated call costs a map lookup and a launch.
#include "kjit/attention.hpp"

#include <mutex>
#include <unordered_map>

#include <fmt/format.h>

#include "cache/config_lookup.hpp"
#include "jit/compile_plan.hpp"
#include "kjit/jit.hpp"
#include "ops/attention/flash_forward_plan.hpp"
#include "ops/catalog.hpp"

namespace kjit::attention {
namespace {

namespace plan = flash_plan;

struct Choice {
  tuning::Config config;
  Kernel kernel;
};

tuning::ConfigLookup& config_lookup() {
  static tuning::ConfigLookup lookup("attention", catalog::template_hash("attention"),
                                     plan::tuning_dimensions());
  return lookup;
}

const Choice& choose(const plan::Problem& p) {
  static std::mutex mutex;
  static std::unordered_map<std::string, Choice> memo;
  const std::string& arch = detail::current_device_arch();
  const tuning::Shape shape = p.shape();
  const std::string key =
      fmt::format("{}|{}|{}", tuning::problem_key(shape), dtype_name(p.dtype), arch);
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (auto it = memo.find(key); it != memo.end()) return it->second;
  }
  const tuning::Choice tuned = config_lookup().choose(
      shape, dtype_name(p.dtype), arch,
      [&](const tuning::Config& c) { return plan::valid(c, p.dtype, p.head_dim, arch); },
      [&] { return plan::default_config(p.head_dim, p.causal, arch); });
  Choice choice{tuned.config,
                load(plan::spec(tuned.config, p.dtype, p.head_dim, p.causal, arch)).kernel()};
  std::lock_guard<std::mutex> lock(mutex);
  return memo.emplace(key, std::move(choice)).first->second;
}

void run(const plan::Problem& p, StreamHandle stream) {
  if (p.max_seqlen_q == 0 || p.batch == 0) return;
  const Choice& c = choose(p);
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

// kjit::attention::forward / forward_varlen: validate -> config -> kernel (memoised per
// specialisation) -> launch.
#include "kjit/attention.hpp"

#include <mutex>
#include <unordered_map>

#include <fmt/format.h>

#include "kjit/jit.hpp"
#include "ops/attention/flash_forward_plan.hpp"

namespace kjit::attention {
namespace {

namespace plan = flash_plan;

void run(const plan::Problem& p, StreamHandle stream) {
  static std::mutex mutex;
  static std::unordered_map<std::string, Kernel> kernels;
  const tuning::Config config = plan::default_config(p.head_dim, p.causal);
  const std::string key =
      fmt::format("{}|{}|{}|{}", dtype_name(p.dtype), p.head_dim, p.causal, current_device());
  const Kernel* kernel = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = kernels.find(key);
    if (it == kernels.end()) {
      it = kernels.emplace(key, load(plan::spec(config, p.dtype, p.head_dim, p.causal)).kernel())
               .first;
    }
    kernel = &it->second;
  }
  plan::launch(*kernel, config, p, stream);
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

// A KernelSpec made concrete in two steps. plan_key() is the cheap part every lookup pays: the
// target arch and the cache key over every input that changes the compiled bytes. make_plan()
// runs only on a miss: it validates the spec, resolves the source and builds the NVRTC options.
#pragma once

#include <string>

#include "kjit/cache_key.hpp"
#include "kjit/kernel_spec.hpp"
#include "nvrtc/compiler.hpp"

namespace kjit::detail {

// Bumped whenever the layout of a stored entry or the meaning of a key changes.
inline constexpr int kStoreFormatVersion = 1;

struct PlannedKey {
  CacheKey key;
  std::string arch;  // the spec's when set, else the current device's
};

PlannedKey plan_key(const KernelSpec& spec);

// The NVRTC target of the calling thread's current device ("sm_90a"), cached per thread and
// context: device_info() costs several driver calls.
const std::string& current_device_arch();

// `requested` when set (a CLI's --arch), else the current device's arch; throws Error saying
// to pass --arch where there is no GPU to ask.
std::string requested_or_device_arch(const std::string& requested);

// The number of a real arch: "sm_90a" -> 90, "sm_100a" -> 100, "sm_80" -> 80.
int arch_version(const std::string& arch);

struct CompilePlan {
  std::string description;
  nvrtc::Request request;
};

CompilePlan make_plan(const KernelSpec& spec, const PlannedKey& planned);

}  // namespace kjit::detail

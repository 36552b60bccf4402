// A KernelSpec made concrete in two steps. plan_key() is the cheap part every lookup pays: the
// target arch and the cache key over every input that changes the compiled bytes. make_plan()
// runs only on a miss: it validates the spec, resolves the source and builds the NVRTC options.
#pragma once

#include <string>

#include "kjit/cache_key.hpp"
#include "kjit/kernel_spec.hpp"
#include "nvrtc/compiler.hpp"

namespace kjit::detail {

struct PlannedKey {
  CacheKey key;
  std::string arch;  // the spec's when set, else the current device's
};

PlannedKey plan_key(const KernelSpec& spec);

struct CompilePlan {
  std::string description;
  nvrtc::Request request;
};

// `cache_dir` holds NVRTC's PCH folders (jit/pch_folder.hpp); empty: no PCH.
CompilePlan make_plan(const KernelSpec& spec, const PlannedKey& planned,
                      const std::string& cache_dir);

}  // namespace kjit::detail

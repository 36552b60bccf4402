// KJIT_DUMP_DIR: keeps what each compile saw and produced, one folder per key:
//   description.txt, options.txt, source/<program> and source/<headers>, log.txt, and on success
//   kernel.ptx and kernel.cubin. The dump folder follows the kernel store's rules
//   (util/private_files.hpp): a folder another user owns or can write is refused, and files
//   are replaced by rename, never written through a planted symlink.
#pragma once

#include <string>

#include "jit/compile_plan.hpp"
#include "kjit/cache_key.hpp"
#include "nvrtc/compiler.hpp"

namespace kjit::detail {

// `result` is null for a failed compile (log given instead). Failures to write warn, once each.
void dump_compile(const std::string& dump_dir, const CacheKey& key, const CompilePlan& plan,
                  const nvrtc::Result* result, const std::string& log);

}  // namespace kjit::detail

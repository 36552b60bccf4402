// Where the CUDA toolkit's headers are, for NVRTC's -I options.
#pragma once

#include <string>
#include <vector>

namespace kjit::nvrtc {

// The toolkit include folder followed by its CCCL folder (cuda/std, cub, thrust) when present.
// Searched in order: $CUDA_HOME, $CUDA_PATH, the toolkit kjit was built with, then relative to
// the loaded libnvrtc. Throws kjit::Error listing every place tried when none holds cuda_fp16.h.
const std::vector<std::string>& cuda_include_dirs();

// A short fingerprint of the toolkit headers found (CUDA_VERSION and CCCL_VERSION), part of the
// cache key so that a toolkit upgrade under the same NVRTC version still misses.
const std::string& toolkit_fingerprint();

}  // namespace kjit::nvrtc

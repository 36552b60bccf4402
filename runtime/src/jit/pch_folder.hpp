// Where NVRTC keeps its automatic precompiled headers (KJIT_PCH): <cache dir>/pch/<pid>/<closure
// hash>, private to this user.
//   - One folder per include closure: NVRTC reuses a PCH for a header of the same name even when
//     its bytes changed (measured: an edited header compiled to the old value in the same
//     process), so a changed closure must not find the old PCH.
//   - Not /tmp: an interrupted process leaves its PCH files (9-170 MB) behind there. Folders of
//     processes that are gone are removed the first time a process asks for one, and a process
//     removes its own at exit.
#pragma once

#include <string>

#include "kjit/cache_key.hpp"

namespace kjit::detail {

// "" when no private folder can be had (no cache dir, a foreign folder): compile without PCH.
std::string pch_folder(const std::string& cache_dir, const CacheKey& closure);

}  // namespace kjit::detail

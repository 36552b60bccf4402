// XXH3-128 helpers shared by the runtime and the build-time template embedder, so that a
// template's hash is the same whether it was embedded or read from KJIT_TEMPLATE_DIR.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kjit/cache_key.hpp"

namespace kjit::detail {

CacheKey hash128(std::string_view bytes);

// The quoted includes (#include "x") of a source, in order of appearance.
std::vector<std::string> quoted_includes(std::string_view text);
// The angle-bracket includes (#include <x>): toolkit headers, covered by the toolkit fingerprint,
// unless a user's -I folder holds them.
std::vector<std::string> angle_includes(std::string_view text);

// Hash of an include closure: every (include name, content hash) pair, sorted by name.
CacheKey closure_hash(std::vector<std::pair<std::string, CacheKey>> files);

}  // namespace kjit::detail

// Warnings go to stderr with a "kjit: warning:" prefix; degraded states (a bad cache entry, an
// unusable cache folder) warn and carry on rather than throw on the launch path.
#pragma once

#include <string>

namespace kjit::detail {

void warn(const std::string& message);

}  // namespace kjit::detail

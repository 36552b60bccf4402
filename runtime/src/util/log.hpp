// Warnings go to stderr with a "kjit: warning:" prefix; degraded states (a bad cache entry, an
// unusable cache folder) warn and carry on rather than throw on the launch path.
#pragma once

#include <string>

namespace kjit::detail {

void warn(const std::string& message);
// Warns the first time `key` is seen in this process and stays silent after (a setting or a
// broken file is reported once, not once per kernel or lookup).
void warn_once(const std::string& key, const std::string& message);

}  // namespace kjit::detail

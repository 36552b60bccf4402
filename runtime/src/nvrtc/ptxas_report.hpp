// Parses the resource report ptxas prints with -v (--ptxas-options=-v under NVRTC).
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "kjit/resource_usage.hpp"

namespace kjit::nvrtc {

// Entry function (lowered name) -> what ptxas reported for it. Functions without a report line
// are absent.
std::map<std::string, ResourceUsage> parse_ptxas_report(std::string_view log);

}  // namespace kjit::nvrtc

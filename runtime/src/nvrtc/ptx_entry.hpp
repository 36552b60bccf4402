// Facts read off NVRTC's PTX for one entry function.
#pragma once

#include <string_view>

namespace kjit::nvrtc {

// Number of .param declarations of `.entry <lowered_name>(...)`, or -1 when the PTX has no such
// entry. Lets the launcher ask the driver for exactly that many parameter sizes.
int entry_parameter_count(std::string_view ptx, std::string_view lowered_name);

}  // namespace kjit::nvrtc

#pragma once

#include <cstdint>
#include <string>

namespace kjit::detail {

// "812 B", "3.4 KiB", "1.2 GiB".
std::string human_bytes(std::uint64_t bytes);

}  // namespace kjit::detail

// A device buffer's bytes on the host, for tests that compare two paths' outputs bit for bit.
#pragma once

#include <cstdint>
#include <vector>

#include "kjit/device.hpp"

namespace kjit::test {

inline std::vector<std::uint8_t> device_bytes(const DeviceBuffer& b) {
  std::vector<std::uint8_t> v(b.size());
  b.download(v.data(), v.size());
  return v;
}

}  // namespace kjit::test

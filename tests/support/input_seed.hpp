// The seed of a test's random inputs: fresh each run (std::random_device), or KJIT_TEST_SEED's
// value, so that a failure's printed seed replays its inputs.
#pragma once

#include <cstdlib>
#include <random>

namespace kjit::test {

inline unsigned input_seed() {
  if (const char* fixed = std::getenv("KJIT_TEST_SEED"); fixed && *fixed)
    return static_cast<unsigned>(std::strtoul(fixed, nullptr, 10));
  return std::random_device{}();
}

}  // namespace kjit::test

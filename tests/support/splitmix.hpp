// splitmix64 (Vigna): a cheap, well-mixed 64-bit hash, and the stream of its outputs, for tests
// that need hundreds of millions of random values (a normal distribution's draws would dominate
// them) or values that are a function of their indices.
#pragma once

#include <cstdint>

namespace kjit::test {

inline constexpr std::uint64_t kSplitMixStep = 0x9e3779b97f4a7c15ull;

inline std::uint64_t splitmix64(std::uint64_t x) {
  x += kSplitMixStep;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

struct SplitMix64 {
  std::uint64_t state;
  std::uint64_t next() {
    const std::uint64_t z = splitmix64(state);
    state += kSplitMixStep;
    return z;
  }
};

}  // namespace kjit::test

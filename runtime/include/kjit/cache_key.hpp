// The 128-bit identity of a compiled program (XXH3-128 over every input that changes the bytes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit {

struct CacheKey {
  std::uint64_t high = 0;
  std::uint64_t low = 0;

  std::string hex() const;  // 32 lowercase hex digits
  static std::optional<CacheKey> from_hex(std::string_view hex);

  friend bool operator==(const CacheKey& a, const CacheKey& b) {
    return a.high == b.high && a.low == b.low;
  }
  friend bool operator!=(const CacheKey& a, const CacheKey& b) { return !(a == b); }
};

struct CacheKeyHash {
  std::size_t operator()(const CacheKey& k) const { return static_cast<std::size_t>(k.low); }
};

}  // namespace kjit
#pragma GCC visibility pop

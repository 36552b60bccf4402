#include "kjit/cache_key.hpp"

#include <fmt/format.h>

namespace kjit {

std::string CacheKey::hex() const {
  return fmt::format("{:016x}{:016x}", high, low);
}

std::optional<CacheKey> CacheKey::from_hex(std::string_view hex) {
  if (hex.size() != 32) return std::nullopt;
  CacheKey k;
  for (std::size_t i = 0; i < 32; ++i) {
    const char c = hex[i];
    int v = 0;
    if (c >= '0' && c <= '9') {
      v = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      v = c - 'a' + 10;
    } else {
      return std::nullopt;
    }
    std::uint64_t& half = i < 16 ? k.high : k.low;
    half = (half << 4) | static_cast<std::uint64_t>(v);
  }
  return k;
}

}  // namespace kjit

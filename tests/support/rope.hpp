// Rotary position embedding of MLA's 64 rotary columns, interleaved pairs (x[2i], x[2i + 1])
// rotated by pos * base^(-2i / n), and its inverse (the seed's "unembed": back to the values
// before the rotation), for generating latent caches at global positions.
#pragma once

#include <cmath>
#include <cstddef>

namespace kjit::test {

// Rotates n values at `x` (n even) to position `pos`; `inverse` rotates back.
inline void rope(double* x, int n, long long pos, bool inverse = false, double base = 10000.0) {
  for (int i = 0; i < n / 2; ++i) {
    const double angle =
        static_cast<double>(pos) * std::pow(base, -2.0 * i / n) * (inverse ? -1.0 : 1.0);
    const double c = std::cos(angle), s = std::sin(angle);
    const double a = x[2 * i], b = x[2 * i + 1];
    x[2 * i] = a * c - b * s;
    x[2 * i + 1] = a * s + b * c;
  }
}

}  // namespace kjit::test

#include "tests/reference/mla_reference.hpp"

#include "kjit/mla.hpp"
#include "tests/reference/attention_reference.hpp"

namespace kjit::reference {

MlaDecodeRows mla_decode(const std::vector<double>& q, const std::vector<double>& cache, int s_q,
                         int heads, int length, double scale,
                         const std::function<double(double)>& round_p) {
  constexpr int kD = mla::kHeadDim, kV = mla::kLatentDim;
  std::vector<double> v(cache);
  for (int j = 0; j < length; ++j) {
    for (int x = kV; x < kD; ++x)
      v[static_cast<std::size_t>(j) * kD + x] = 0.0;
  }
  MlaDecodeRows rows{std::vector<double>(static_cast<std::size_t>(s_q) * heads * kV),
                     std::vector<double>(static_cast<std::size_t>(s_q) * heads)};
  for (int h = 0; h < heads; ++h) {
    std::vector<double> qh(static_cast<std::size_t>(s_q) * kD);
    for (int i = 0; i < s_q; ++i) {
      for (int x = 0; x < kD; ++x)
        qh[static_cast<std::size_t>(i) * kD + x] =
            q[(static_cast<std::size_t>(i) * heads + h) * kD + x];
    }
    const AttentionRow r = attention(qh, cache, v, s_q, length, kD, scale, true, round_p);
    for (int i = 0; i < s_q; ++i) {
      for (int x = 0; x < kV; ++x) {
        rows.out[(static_cast<std::size_t>(i) * heads + h) * kV + x] =
            r.out[static_cast<std::size_t>(i) * kD + x];
      }
      rows.lse[static_cast<std::size_t>(i) * heads + h] = r.lse[i];
    }
  }
  return rows;
}

}  // namespace kjit::reference

#include "tests/reference/attention_reference.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kjit::reference {

AttentionRow attention(const std::vector<double>& q, const std::vector<double>& k,
                       const std::vector<double>& v, int sq, int sk, int dim, double scale,
                       bool causal, const std::function<double(double)>& round_p) {
  AttentionRow r;
  r.out.assign(static_cast<std::size_t>(sq) * dim, 0.0);
  r.lse.assign(sq, -std::numeric_limits<double>::infinity());
  std::vector<double> s(sk);
  for (int i = 0; i < sq; ++i) {
    const int last = causal ? std::min(sk - 1, i + sk - sq) : sk - 1;  // bottom-right aligned
    if (last < 0) continue;
    double m = -std::numeric_limits<double>::infinity();
    for (int j = 0; j <= last; ++j) {
      double dot = 0;
      for (int d = 0; d < dim; ++d)
        dot += q[i * dim + d] * k[j * dim + d];
      s[j] = dot * scale;
      m = std::max(m, s[j]);
    }
    double sum = 0;
    for (int j = 0; j <= last; ++j)
      sum += std::exp(s[j] - m);
    for (int j = 0; j <= last; ++j) {
      double p = std::exp(s[j] - m) / sum;
      if (round_p) p = round_p(p);
      for (int d = 0; d < dim; ++d)
        r.out[i * dim + d] += p * v[j * dim + d];
    }
    r.lse[i] = m + std::log(sum);
  }
  return r;
}

}  // namespace kjit::reference

#include "tests/reference/attention_reference.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kjit::reference {

namespace {

// Softmax probabilities of query row i over keys 0..last (returned; -1 when it sees none) into
// p, and the row's LSE.
int row_probabilities(const std::vector<double>& q, const std::vector<double>& k, int i, int sq,
                      int sk, int dim, double scale, bool causal, std::vector<double>& p,
                      double* lse) {
  const int last = causal ? std::min(sk - 1, i + sk - sq) : sk - 1;  // bottom-right aligned
  *lse = -std::numeric_limits<double>::infinity();
  if (last < 0) return last;
  double m = -std::numeric_limits<double>::infinity();
  for (int j = 0; j <= last; ++j) {
    double dot = 0;
    for (int d = 0; d < dim; ++d)
      dot += q[i * dim + d] * k[j * dim + d];
    p[j] = dot * scale;
    m = std::max(m, p[j]);
  }
  double sum = 0;
  for (int j = 0; j <= last; ++j)
    sum += std::exp(p[j] - m);
  for (int j = 0; j <= last; ++j)
    p[j] = std::exp(p[j] - m) / sum;
  *lse = m + std::log(sum);
  return last;
}

}  // namespace

AttentionRow attention(const std::vector<double>& q, const std::vector<double>& k,
                       const std::vector<double>& v, int sq, int sk, int dim, double scale,
                       bool causal, const std::function<double(double)>& round_p) {
  AttentionRow r;
  r.out.assign(static_cast<std::size_t>(sq) * dim, 0.0);
  r.lse.assign(sq, -std::numeric_limits<double>::infinity());
  std::vector<double> p(sk);
  for (int i = 0; i < sq; ++i) {
    const int last = row_probabilities(q, k, i, sq, sk, dim, scale, causal, p, &r.lse[i]);
    for (int j = 0; j <= last; ++j) {
      const double pj = round_p ? round_p(p[j]) : p[j];
      for (int d = 0; d < dim; ++d)
        r.out[i * dim + d] += pj * v[j * dim + d];
    }
  }
  return r;
}

AttentionGradients attention_backward(const std::vector<double>& q, const std::vector<double>& k,
                                      const std::vector<double>& v, const std::vector<double>& dout,
                                      int sq, int sk, int dim, double scale, bool causal,
                                      const std::function<double(double)>& round) {
  AttentionGradients g;
  g.dq.assign(static_cast<std::size_t>(sq) * dim, 0.0);
  g.dk.assign(static_cast<std::size_t>(sk) * dim, 0.0);
  g.dv.assign(static_cast<std::size_t>(sk) * dim, 0.0);
  const auto keep = [&](double x) { return round ? round(x) : x; };
  std::vector<double> p(sk), out(dim);
  for (int i = 0; i < sq; ++i) {
    double lse = 0;
    const int last = row_probabilities(q, k, i, sq, sk, dim, scale, causal, p, &lse);
    if (last < 0) continue;
    std::fill(out.begin(), out.end(), 0.0);
    for (int j = 0; j <= last; ++j) {
      for (int d = 0; d < dim; ++d)
        out[d] += p[j] * v[j * dim + d];
    }
    double row_dot = 0;  // rowsum(dO * O)
    for (int d = 0; d < dim; ++d)
      row_dot += dout[i * dim + d] * out[d];
    for (int j = 0; j <= last; ++j) {
      double dot = 0;
      for (int d = 0; d < dim; ++d)
        dot += dout[i * dim + d] * v[j * dim + d];
      const double pj = keep(p[j]);
      const double ds = pj * (keep(dot) - row_dot);
      for (int d = 0; d < dim; ++d) {
        g.dq[i * dim + d] += scale * ds * k[j * dim + d];
        g.dk[j * dim + d] += scale * ds * q[i * dim + d];
        g.dv[j * dim + d] += pj * dout[i * dim + d];
      }
    }
  }
  return g;
}

}  // namespace kjit::reference

// CPU reference of attention forward for one sequence and one head, in double precision, plus the
// "same dtype" variant FlashAttention's tests use to size the error bound: P rounded to the input
// dtype before P.V. Causal masking is bottom-right aligned (query i sees keys j <= i + Sk - Sq);
// a query that sees no key gives out = 0 and lse = -inf.
#pragma once

#include <functional>
#include <vector>

namespace kjit::reference {

struct AttentionRow {
  std::vector<double> out;  // [Sq][D]
  std::vector<double> lse;  // [Sq], natural log
};

// q [Sq][D], k and v [Sk][D] (already rounded to the input dtype). `round_p`, when given, rounds
// each probability to the input dtype before it multiplies V.
AttentionRow attention(const std::vector<double>& q, const std::vector<double>& k,
                       const std::vector<double>& v, int seqlen_q, int seqlen_k, int dim,
                       double scale, bool causal,
                       const std::function<double(double)>& round_p = nullptr);

struct AttentionGradients {
  std::vector<double> dq;  // [Sq][D]
  std::vector<double> dk;  // [Sk][D]
  std::vector<double> dv;  // [Sk][D]
};

// The backward of attention() for one sequence and one query head: dS = P (dP - rowsum(dO O)),
// dq = scale dS K, dk = scale dS^T Q, dv = P^T dO, with O and P recomputed in double. `round`,
// when given, rounds P and dP to the input dtype (FlashAttention's low-precision reference, which
// sizes the error bound). Rows that see no key contribute nothing.
AttentionGradients attention_backward(const std::vector<double>& q, const std::vector<double>& k,
                                      const std::vector<double>& v, const std::vector<double>& dout,
                                      int seqlen_q, int seqlen_k, int dim, double scale,
                                      bool causal,
                                      const std::function<double(double)>& round = nullptr);

}  // namespace kjit::reference

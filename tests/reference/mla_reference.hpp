// CPU reference of MLA decode (weight-absorbed, one request) in double precision: every query
// row attends the request's cached latents with K = all 576 columns and V = the first 512, causal
// among the s_q new tokens (the last s_q of the cache: query i sees keys j <= L - s_q + i). An
// empty cache gives out = 0 and lse = -inf. It is reference::attention over V = K with the rotary
// columns zeroed, keeping the first 512 output columns.
#pragma once

#include <functional>
#include <vector>

namespace kjit::reference {

struct MlaDecodeRows {
  std::vector<double> out;  // [s_q][H][512]
  std::vector<double> lse;  // [s_q][H], natural log
};

// q [s_q][H][576], cache [L][576] (the request's tokens in order, already rounded to the input
// dtype). `round_p`, when given, rounds each probability before it multiplies V.
MlaDecodeRows mla_decode(const std::vector<double>& q, const std::vector<double>& cache, int s_q,
                         int heads, int length, double scale,
                         const std::function<double(double)>& round_p = nullptr);

}  // namespace kjit::reference

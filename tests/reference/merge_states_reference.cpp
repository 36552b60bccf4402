#include "tests/reference/merge_states_reference.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kjit::reference {

MergedStates merge_states(const std::vector<double>& parts, const std::vector<double>& lse, int n,
                          long long rows, int dim) {
  MergedStates m;
  m.out.assign(static_cast<std::size_t>(rows) * dim, 0.0);
  m.lse.assign(static_cast<std::size_t>(rows), -std::numeric_limits<double>::infinity());
  for (long long r = 0; r < rows; ++r) {
    double max_lse = -std::numeric_limits<double>::infinity();
    for (int i = 0; i < n; ++i)
      max_lse = std::max(max_lse, lse[i * rows + r]);
    if (std::isinf(max_lse) && max_lse < 0) continue;  // no part saw a key: 0 and -inf
    double sum = 0;
    for (int i = 0; i < n; ++i)
      sum += std::exp(lse[i * rows + r] - max_lse);
    for (int i = 0; i < n; ++i) {
      const double w = std::exp(lse[i * rows + r] - max_lse) / sum;
      for (int d = 0; d < dim; ++d) {
        m.out[r * dim + d] += w * parts[(static_cast<std::size_t>(i) * rows + r) * dim + d];
      }
    }
    m.lse[r] = max_lse + std::log(sum);
  }
  return m;
}

}  // namespace kjit::reference

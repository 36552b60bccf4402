// cu_seqlens ([0, l0, l0 + l1, ...]) from sequence lengths, for packed attention tests.
#pragma once

#include <vector>

namespace kjit::test {

inline std::vector<int> cumulative_seqlens(const std::vector<int>& lengths) {
  std::vector<int> cu{0};
  for (int l : lengths)
    cu.push_back(cu.back() + l);
  return cu;
}

}  // namespace kjit::test

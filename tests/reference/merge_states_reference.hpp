// fp64 reference of merge_states on dense host arrays: parts [N][rows][D], lse [N][rows].
#pragma once

#include <vector>

namespace kjit::reference {

struct MergedStates {
  std::vector<double> out;  // [rows][D]
  std::vector<double> lse;  // [rows]
};

MergedStates merge_states(const std::vector<double>& parts, const std::vector<double>& lse,
                          int parts_count, long long rows, int dim);

}  // namespace kjit::reference

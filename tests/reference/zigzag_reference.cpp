#include "tests/reference/zigzag_reference.hpp"

namespace kjit::reference {
namespace {

// Appends the tokens of chunk c (of 2W) of the sequence at seq_start.
void append_chunk(TokenRows& rows, int seq_start, int seq_len, int world, int c) {
  const int n = seq_len / (2 * world);
  for (int i = 0; i < n; ++i)
    rows.push_back(seq_start + c * n + i);
}

}  // namespace

TokenRows zigzag_local_rows(const std::vector<int>& cu, int world, int rank) {
  TokenRows rows;
  for (std::size_t b = 0; b + 1 < cu.size(); ++b) {
    append_chunk(rows, cu[b], cu[b + 1] - cu[b], world, rank);
    append_chunk(rows, cu[b], cu[b + 1] - cu[b], world, 2 * world - 1 - rank);
  }
  return rows;
}

TokenRows zigzag_gathered_rows(const std::vector<int>& cu, int world) {
  TokenRows rows;
  for (int r = 0; r < world; ++r) {
    const TokenRows local = zigzag_local_rows(cu, world, r);
    rows.insert(rows.end(), local.begin(), local.end());
  }
  return rows;
}

TokenRows zigzag_chunk_rows(const std::vector<int>& cu, int world, int begin, int end) {
  TokenRows rows;
  for (std::size_t b = 0; b + 1 < cu.size(); ++b) {
    for (int c = begin; c < end; ++c)
      append_chunk(rows, cu[b], cu[b + 1] - cu[b], world, c);
  }
  return rows;
}

TokenRows zigzag_split_rows(const std::vector<int>& cu, int world, int rank) {
  TokenRows rows;
  for (int c : {rank, 2 * world - 1 - rank}) {
    for (std::size_t b = 0; b + 1 < cu.size(); ++b)
      append_chunk(rows, cu[b], cu[b + 1] - cu[b], world, c);
  }
  return rows;
}

}  // namespace kjit::reference

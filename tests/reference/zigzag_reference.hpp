// Zigzag sharding from its definition (ring-flash-attention's varlen extract_local): every
// sequence cut into 2W equal chunks, rank r holding chunks r and 2W-1-r. Layouts are given as the
// global token index each row holds, so that any move between them is a plain lookup.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace kjit::reference {

using TokenRows = std::vector<std::int64_t>;  // the global token of each row

// Rank r's local buffer: per sequence, chunk r then chunk 2W-1-r.
TokenRows zigzag_local_rows(const std::vector<int>& cu_seqlens, int world, int rank);
// Every rank's local buffer in rank order (an all-gather's output).
TokenRows zigzag_gathered_rows(const std::vector<int>& cu_seqlens, int world);
// Chunks [begin, end) of every sequence, in global order.
TokenRows zigzag_chunk_rows(const std::vector<int>& cu_seqlens, int world, int begin, int end);
// Rank r's chunk r of every sequence, then its chunk 2W-1-r of every sequence.
TokenRows zigzag_split_rows(const std::vector<int>& cu_seqlens, int world, int rank);

// dst row i = the src row holding the same token (zeros where src holds none); rows of `width`
// elements.
template <class T>
std::vector<T> move_rows(const std::vector<T>& src, const TokenRows& from, const TokenRows& to,
                         std::size_t width) {
  std::unordered_map<std::int64_t, std::size_t> where;
  for (std::size_t j = 0; j < from.size(); ++j)
    where[from[j]] = j;
  std::vector<T> dst(to.size() * width, T{});
  for (std::size_t i = 0; i < to.size(); ++i) {
    const auto it = where.find(to[i]);
    if (it == where.end()) continue;
    for (std::size_t e = 0; e < width; ++e)
      dst[i * width + e] = src[it->second * width + e];
  }
  return dst;
}

}  // namespace kjit::reference

// An MLA decode workload for the benchmarks (bench/mla_decode.cpp, bench/helix_decode.cpp): B
// requests of the given lengths at s_q 1, bf16, pages of kBlock tokens shuffled over the cache,
// random queries; the cache (up to 10 GB) one repeated small value, which the timing does not
// depend on.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "bench/attention_timing.hpp"
#include "kjit/mla.hpp"

namespace kjit::bench {

struct MlaWorkload {
  static constexpr int kBlock = 64, kD = mla::kHeadDim, kV = mla::kLatentDim;

  MlaWorkload(long long heads, std::vector<std::int32_t> request_lengths, std::mt19937& rng)
      : heads(heads), lengths(std::move(request_lengths)) {
    batch = static_cast<long long>(lengths.size());
    for (std::int32_t l : lengths) {
      max_blocks = std::max<long long>(max_blocks, (l + kBlock - 1) / kBlock);
      num_blocks += (l + kBlock - 1) / kBlock;
      keys += l;
    }
    // A request's pages, in order, from one shuffled list of the cache's pages.
    std::vector<std::int32_t> pages(static_cast<std::size_t>(num_blocks));
    std::iota(pages.begin(), pages.end(), 0);
    std::shuffle(pages.begin(), pages.end(), rng);
    table.assign(static_cast<std::size_t>(batch * max_blocks), 0);
    std::size_t next = 0;
    for (long long r = 0; r < batch; ++r) {
      for (long long i = 0; i < (lengths[r] + kBlock - 1) / kBlock; ++i)
        table[r * max_blocks + i] = pages[next++];
    }
    q = random_bf16(static_cast<std::size_t>(batch * heads * kD));
    cache = DeviceBuffer(static_cast<std::size_t>(num_blocks) * kBlock * kD * 2);
    cache.fill_bytes(0x3c);
    dtable = DeviceBuffer(table.size() * 4);
    dlengths = DeviceBuffer(lengths.size() * 4);
    out = DeviceBuffer(static_cast<std::size_t>(batch * heads * kV * 2));
    lse = DeviceBuffer(static_cast<std::size_t>(batch * heads * 4));
    dtable.upload(table.data(), dtable.size());
    dlengths.upload(lengths.data(), dlengths.size());
  }

  TensorView q_view() const { return TensorView(q.data(), DType::BFloat16, {batch, 1, heads, kD}); }
  TensorView cache_view() const {
    return TensorView(cache.data(), DType::BFloat16, {num_blocks, kBlock, kD});
  }
  TensorView out_view() const {
    return TensorView(out.data(), DType::BFloat16, {batch, 1, heads, kV});
  }
  TensorView lse_view() const { return TensorView(lse.data(), DType::Float32, {batch, 1, heads}); }
  mla::PagedCache paged() const {
    return {cache_view(), TensorView(dtable.data(), DType::Int32, {batch, max_blocks}),
            table.data(), TensorView(dlengths.data(), DType::Int32, {batch}), lengths.data()};
  }

  long long heads, batch = 0, max_blocks = 1, num_blocks = 0, keys = 0;
  std::vector<std::int32_t> lengths, table;  // table [B, max_blocks], 0 past a request's pages
  DeviceBuffer q, cache, dtable, dlengths, out, lse;
};

}  // namespace kjit::bench

#include <fmt/format.h>

#include "kjit/error.hpp"
#include "kjit/mla.hpp"

namespace kjit::mla {
namespace {

void check_world(int world, int rank) {
  if (world < 1) throw InvalidArgument(fmt::format("mla: world size must be >= 1, got {}", world));
  if (rank < 0 || rank >= world)
    throw InvalidArgument(fmt::format("mla: rank {} is outside [0, {})", rank, world));
}

}  // namespace

HeadRange helix_heads(int heads, int world, int rank) {
  check_world(world, rank);
  if (heads < world) {
    throw InvalidArgument(fmt::format(
        "mla: {} heads over {} ranks would leave a rank without heads (W > H)", heads, world));
  }
  const auto at = [&](int r) {
    return static_cast<int>(static_cast<std::int64_t>(r) * heads / world);
  };
  return {at(rank), at(rank + 1)};
}

int helix_block_owner(std::int64_t block, int world) {
  if (world < 1) throw InvalidArgument(fmt::format("mla: world size must be >= 1, got {}", world));
  if (block < 0) throw InvalidArgument(fmt::format("mla: block {} is negative", block));
  return static_cast<int>(block % world);
}

std::int64_t helix_local_length(std::int64_t length, int tokens_per_block, int world, int rank) {
  check_world(world, rank);
  if (tokens_per_block < 1)
    throw InvalidArgument(
        fmt::format("mla: tokens_per_block must be >= 1, got {}", tokens_per_block));
  if (length < 0) throw InvalidArgument(fmt::format("mla: length {} is negative", length));
  const std::int64_t full = length / tokens_per_block, rest = length % tokens_per_block;
  // Full blocks rank, rank + W, ... below `full`; then the partial block `full`, if it is ours.
  const std::int64_t owned_full = full > rank ? (full - rank + world - 1) / world : 0;
  return owned_full * tokens_per_block + (rest > 0 && full % world == rank ? rest : 0);
}

}  // namespace kjit::mla

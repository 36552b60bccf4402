// The helix step: local decode of every head in head-major scratch (so that each rank's head
// slice is one contiguous run), one all-to-all-v of O and one of the LSE along heads, then
// merge_states over the W partials of this rank's heads into the caller's out and lse.
#include <vector>

#include <fmt/format.h>

#include "driver/stream_allocation.hpp"
#include "kjit/comm.hpp"
#include "kjit/error.hpp"
#include "kjit/merge_states.hpp"
#include "kjit/mla.hpp"

namespace kjit::mla {

void helix_decode(comm::Communicator& comm, const TensorView& q, const PagedCache& local,
                  const TensorView& out, const TensorView& lse, const DecodeOptions& options,
                  StreamHandle stream) {
  if (q.ndim != 4 || q.size(1) != 1) {
    throw InvalidArgument(fmt::format(
        "mla helix decode: q must be [B, 1, H, 576] (one new token), got {}", q.describe()));
  }
  const int world = comm.size(), rank = comm.rank();
  const std::int64_t batch = q.size(0), heads = q.size(2), rows = batch;  // rows per head: B x 1
  const HeadRange mine = helix_heads(static_cast<int>(heads), world, rank);
  if (out.ndim != 4 || out.size(0) != batch || out.size(1) != 1 || out.size(2) != mine.size() ||
      out.size(3) != kLatentDim || out.dtype != q.dtype) {
    throw InvalidArgument(fmt::format(
        "mla helix decode: out must be {} [{}, 1, {}, {}] (rank {}'s heads [{}, {})), got {}",
        dtype_name(q.dtype), batch, mine.size(), kLatentDim, rank, mine.begin, mine.end,
        out.describe()));
  }
  if (!lse.data || lse.ndim != 3 || lse.size(0) != batch || lse.size(1) != 1 ||
      lse.size(2) != mine.size() || lse.dtype != DType::Float32) {
    throw InvalidArgument(
        fmt::format("mla helix decode: lse must be fp32 [{}, 1, {}] (the merge needs it), got {}",
                    batch, mine.size(), lse.describe()));
  }

  // Scratch, head-major: local O [H][B][512] and LSE [H][B]; received [W][H_r][B][512],
  // [W][H_r][B].
  const auto elem = static_cast<std::int64_t>(dtype_size(q.dtype));
  const std::int64_t o_local = heads * rows * kLatentDim,
                     o_recv = world * mine.size() * rows * kLatentDim;
  const std::int64_t l_local = heads * rows, l_recv = world * mine.size() * rows;
  driver::StreamAllocation scratch(
      static_cast<std::size_t>((o_local + o_recv) * elem + (l_local + l_recv) * 4), stream);
  auto* base = static_cast<char*>(scratch.data());
  void* local_o = base;
  void* recv_o = base + o_local * elem;
  auto* local_lse = reinterpret_cast<float*>(base + (o_local + o_recv) * elem);
  float* recv_lse = local_lse + l_local;

  // Local decode over every head into the head-major scratch ([B, 1, H, 512] strides).
  decode(q, local,
         TensorView(local_o, q.dtype, {batch, 1, heads, kLatentDim},
                    {kLatentDim, kLatentDim, rows * kLatentDim, 1}),
         TensorView(local_lse, DType::Float32, {batch, 1, heads}, {1, 1, rows}), options, stream);

  // Rank p gets heads [begin_p, end_p): a contiguous run of the head-major scratch.
  std::vector<std::size_t> send_o(world), send_o_at(world), recv_o_n(world), recv_o_at(world),
      send_l(world), send_l_at(world), recv_l_n(world), recv_l_at(world);
  for (int p = 0; p < world; ++p) {
    const HeadRange theirs = helix_heads(static_cast<int>(heads), world, p);
    send_o[p] = static_cast<std::size_t>(theirs.size() * rows * kLatentDim);
    send_o_at[p] = static_cast<std::size_t>(theirs.begin * rows * kLatentDim);
    recv_o_n[p] = static_cast<std::size_t>(mine.size() * rows * kLatentDim);
    recv_o_at[p] = p * recv_o_n[p];
    send_l[p] = static_cast<std::size_t>(theirs.size() * rows);
    send_l_at[p] = static_cast<std::size_t>(theirs.begin * rows);
    recv_l_n[p] = static_cast<std::size_t>(mine.size() * rows);
    recv_l_at[p] = p * recv_l_n[p];
  }
  comm.all_to_all_v({local_o, static_cast<std::size_t>(o_local), q.dtype}, send_o, send_o_at,
                    {recv_o, static_cast<std::size_t>(o_recv), q.dtype}, recv_o_n, recv_o_at,
                    stream);
  comm.all_to_all_v({local_lse, static_cast<std::size_t>(l_local), DType::Float32}, send_l,
                    send_l_at, {recv_lse, static_cast<std::size_t>(l_recv), DType::Float32},
                    recv_l_n, recv_l_at, stream);

  // The W partials of this rank's heads: parts [W, T = B, H_r, 512], lse [W, B, H_r].
  const std::int64_t hr = mine.size();
  attention::merge_states(
      TensorView(recv_o, q.dtype, {world, rows, hr, kLatentDim},
                 {hr * rows * kLatentDim, kLatentDim, rows * kLatentDim, 1}),
      TensorView(recv_lse, DType::Float32, {world, rows, hr}, {hr * rows, 1, rows}),
      TensorView(out.data, out.dtype, {batch, hr, kLatentDim},
                 {out.stride(0), out.stride(2), out.stride(3)}),
      TensorView(lse.data, DType::Float32, {batch, hr}, {lse.stride(0), lse.stride(2)}), stream);
}

}  // namespace kjit::mla

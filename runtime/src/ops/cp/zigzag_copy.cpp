#include "ops/cp/zigzag_copy.hpp"

#include <algorithm>
#include <numeric>
#include <string>

#include <fmt/format.h>

#include "kjit/error.hpp"
#include "ops/dispatch.hpp"
#include "ops/tensor_checks.hpp"

namespace kjit::ops {
namespace {

const TensorChecks kCheck("zigzag_copy");

bool power_of_two(std::int64_t x) {
  return x > 0 && (x & (x - 1)) == 0;
}

const char* layout_name(int kind) {
  switch (kind) {
    case KJIT_ZIGZAG_GATHERED:
      return "every rank's buffer";
    case KJIT_ZIGZAG_LOCAL:
      return "one rank's buffer";
    case KJIT_ZIGZAG_CHUNKS:
      return "the chunk range";
    default:
      return "the rank's split rows";
  }
}

}  // namespace

ZigzagShape check_zigzag_lengths(const char* op, const std::int32_t* host_cu_seqlens,
                                 std::int64_t batch, int world) {
  const TensorChecks checks(op);
  if (world < 1) checks.fail(fmt::format("world size must be at least 1, got {}", world));
  if (!host_cu_seqlens)
    checks.fail("the host copy of cu_seqlens is a null pointer (kjit validates it on the host)");
  const std::int32_t* host = host_cu_seqlens;
  if (host[0] != 0) checks.fail(fmt::format("cu_seqlens must start at 0, got {}", host[0]));
  for (std::int64_t b = 0; b < batch; ++b) {
    const std::int64_t length = std::int64_t{host[b + 1]} - host[b];
    if (length < 0) {
      checks.fail(fmt::format("cu_seqlens must not decrease: sequence {} goes from {} to {}", b,
                              host[b], host[b + 1]));
    }
    if (length % (2 * world) != 0) {
      checks.fail(fmt::format(
          "sequence {} has {} tokens, not a multiple of 2W = {} (zigzag sharding cuts every "
          "sequence into 2W equal chunks)",
          b, length, 2 * world));
    }
  }
  return {world, batch, host[batch]};
}

ZigzagShape check_zigzag_sequences(const char* op, const cp::ZigzagSequences& seqs, int world) {
  const TensorChecks checks(op);
  const TensorView& cu = seqs.cu_seqlens;
  if (cu.ndim != 1 || cu.size(0) < 2) {
    checks.fail("cu_seqlens must be int32 [B + 1] with B >= 1, got " + cu.describe());
  }
  checks.vector(cu, "cu_seqlens", DType::Int32, cu.size(0));
  return check_zigzag_lengths(op, seqs.host_cu_seqlens, cu.size(0) - 1, world);
}

std::int64_t ZigzagCopy::rows_of(int kind, const ZigzagShape& shape, cp::ChunkRange chunks) {
  switch (kind) {
    case KJIT_ZIGZAG_GATHERED:
      return shape.tokens;
    case KJIT_ZIGZAG_CHUNKS:
      return (chunks.end - chunks.begin) * shape.chunk_tokens();
    default:
      return shape.local_tokens();
  }
}

void ZigzagCopy::check(const Problem& p) {
  if (p.heads < 1 || p.dim < 1) {
    kCheck.fail(fmt::format("heads and head dim must be positive, got {} and {}", p.heads, p.dim));
  }
  if (p.rows < 0) kCheck.fail(fmt::format("rows must not be negative, got {}", p.rows));
  const auto elem = static_cast<std::int64_t>(dtype_size(p.dtype));
  if (p.heads * p.dim * elem > std::int64_t{1} << 31)
    kCheck.fail(fmt::format("a row of {} heads x {} must fit in 2 GiB", p.heads, p.dim));
  if (p.alignment < elem || p.alignment > 16 || !power_of_two(p.alignment)) {
    kCheck.fail(fmt::format("tensors must be aligned to their element size ({} bytes)", elem));
  }
}

std::vector<ZigzagCopy::Config> ZigzagCopy::space(const Problem&, const Arch&) {
  std::vector<Config> out;
  for (std::int64_t bytes : {4, 8, 16}) {
    for (std::int64_t tpr : {4, 8, 16, 32, 64, 128}) {
      for (std::int64_t threads : {128, 256, 512}) {
        if (threads >= tpr) out.push_back({bytes, tpr, threads / tpr});
      }
    }
  }
  return out;
}

bool ZigzagCopy::valid(const Config& c, const Problem& p, const Arch&) {
  const std::int64_t row_bytes = p.dim * static_cast<std::int64_t>(dtype_size(p.dtype));
  const bool access_ok = power_of_two(c.access_bytes) && c.access_bytes >= 2 &&
                         c.access_bytes <= p.alignment && row_bytes % c.access_bytes == 0;
  const std::int64_t threads = c.threads_per_row * c.rows_per_block;
  return access_ok && c.threads_per_row > 0 && c.rows_per_block > 0 && threads >= 32 &&
         threads <= 1024;
}

ZigzagCopy::Config ZigzagCopy::default_config(const Problem& p, const Arch&) {
  const std::int64_t row_bytes = p.dim * static_cast<std::int64_t>(dtype_size(p.dtype));
  std::int64_t access = std::min<std::int64_t>(16, p.alignment);
  while (row_bytes % access != 0)
    access /= 2;
  // Enough threads for one access per thread across the row, within 4..128.
  const std::int64_t units = p.heads * (row_bytes / access);
  const std::int64_t tpr = std::clamp<std::int64_t>(tuning::next_pow2(units), 4, 128);
  return {access, tpr, 256 / tpr};
}

KernelSpec ZigzagCopy::spec(const Config& c, const Problem&, const Arch& arch) {
  KernelSpec s(sources()[0], {fmt::format("kjit::cp::zigzag_copy<{}, {}, {}>", c.access_bytes,
                                          c.threads_per_row, c.rows_per_block)});
  s.arch = arch.name();
  return s;
}

void ZigzagCopy::launch(const Program& program, const Config& c, const Problem& p, const Args& args,
                        StreamHandle stream) {
  if (p.rows == 0 && !args.plan) return;
  const std::int64_t blocks =
      std::max<std::int64_t>(1, (p.rows + c.rows_per_block - 1) / c.rows_per_block);
  if (blocks > 0x7fffffffLL)
    kCheck.fail(fmt::format("{} rows need more blocks than a grid holds", p.rows));
  Args a = args;  // the access width is the config's
  a.units_per_head =
      static_cast<int>(p.dim * static_cast<std::int64_t>(dtype_size(p.dtype)) / c.access_bytes);
  program.kernel().launch({{static_cast<unsigned>(blocks), static_cast<unsigned>(a.tensors)},
                           {static_cast<unsigned>(c.threads_per_row * c.rows_per_block)},
                           0,
                           stream,
                           {}},
                          a);
}

std::vector<ZigzagCopy::Problem> ZigzagCopy::shipped(const Arch&) {
  // Every kernel the default configs pick: K/V rows (the Llama-3 heads at D 64..256) and the
  // LSE's single fp32 per head.
  std::vector<Problem> out;
  for (DType dtype : {DType::BFloat16, DType::Float32}) {
    for (std::int64_t heads : {1, 2, 4, 8}) {
      for (std::int64_t dim : {64, 128, 256})
        out.push_back({dtype, heads, dim, 8192});
    }
  }
  for (std::int64_t heads : {8, 32, 64})
    out.push_back({DType::Float32, heads, 1, 8192});
  return out;
}

std::vector<TensorSpec> ZigzagCopy::tensors(const Problem& p) {
  using Role = TensorSpec::Role;
  const std::int64_t rows = std::max<std::int64_t>(2, p.rows + p.rows % 2);
  TensorSpec cu{"cu_seqlens", DType::Int32, {2}, Role::Input};
  cu.value = [rows](std::int64_t i) { return static_cast<float>(i * rows); };
  return {cu,
          {"gathered", p.dtype, {rows, p.heads, p.dim}, Role::Input},
          {"out", p.dtype, {rows, p.heads, p.dim}, Role::Output}};
}

ZigzagCopy::Args ZigzagCopy::args(const Problem&, const std::vector<TensorView>& t) {
  const std::int64_t rows = t.at(1).size(0);
  const std::int32_t host_cu[2] = {0, static_cast<std::int32_t>(rows)};
  const ZigzagShape shape = check_zigzag_sequences(kName, {t.at(0), host_cu}, 1);
  return validate(kName, shape, t.at(0), {&t.at(1), KJIT_ZIGZAG_GATHERED},
                  {&t.at(2), KJIT_ZIGZAG_CHUNKS}, 0, {0, 2})
      .args;
}

std::vector<Preset<ZigzagCopy::Problem>> ZigzagCopy::presets() {
  // One rank's moves at zigzag-llama3 training shapes (8k tokens per rank): the K/V a chunk needs
  // (Hk 8 per step or one head at heads_k_stride 1; up to 8 ranks' tokens), Q/O/dQ rows split
  // and merged (Hq 32 or 64) and the LSE's.
  Preset<Problem> llama8b{"zigzag_copy-llama3-8b", {}}, llama70b{"zigzag_copy-llama3-70b", {}},
      quick{"zigzag_copy-quick", {}};
  for (std::int64_t rows : {8192, 16384, 32768, 65536}) {
    for (std::int64_t heads : {1, 8}) {
      llama8b.problems.push_back({DType::BFloat16, heads, 128, rows});
      llama70b.problems.push_back({DType::BFloat16, heads, 128, rows});
    }
  }
  llama8b.problems.push_back({DType::BFloat16, 32, 128, 8192});
  llama8b.problems.push_back({DType::Float32, 32, 1, 8192});
  llama70b.problems.push_back({DType::BFloat16, 64, 128, 8192});
  llama70b.problems.push_back({DType::Float32, 64, 1, 8192});
  quick.problems = {{DType::BFloat16, 8, 128, 65536}, {DType::BFloat16, 32, 128, 8192}};
  return {llama8b, llama70b, quick};
}

Call<ZigzagCopy> ZigzagCopy::validate(const char* op, const ZigzagShape& shape,
                                      const TensorView& cu_seqlens, const ZigzagSide& from,
                                      const ZigzagSide& to, int rank, cp::ChunkRange chunks,
                                      const TensorView* second_from, const TensorView* second_to) {
  const TensorChecks checks(op);
  const int world = shape.world;
  const bool ranked = from.kind == KJIT_ZIGZAG_LOCAL || from.kind == KJIT_ZIGZAG_SPLIT ||
                      to.kind == KJIT_ZIGZAG_LOCAL || to.kind == KJIT_ZIGZAG_SPLIT;
  if (ranked && (rank < 0 || rank >= world))
    checks.fail(fmt::format("rank must be in [0, {}) (the world size), got {}", world, rank));
  if ((from.kind == KJIT_ZIGZAG_CHUNKS || to.kind == KJIT_ZIGZAG_CHUNKS) &&
      (chunks.begin < 0 || chunks.begin >= chunks.end || chunks.end > 2 * world)) {
    checks.fail(fmt::format("chunks [{}, {}) must be a non-empty range inside the 2W = {} chunks",
                            chunks.begin, chunks.end, 2 * world));
  }
  const TensorView& src = *from.tensor;
  const TensorView& dst = *to.tensor;
  const auto check_side = [&](const TensorView& t, const char* name, int kind) {
    checks.strided(t, name, 3, "[rows, H, D]");
    const std::int64_t rows = rows_of(kind, shape, chunks);
    if (t.size(0) != rows) {
      checks.fail(fmt::format("{} must hold {} rows ({} for {} tokens over W = {}), got {}", name,
                              rows, layout_name(kind), shape.tokens, world, t.describe()));
    }
  };
  const char* src_name = second_from ? "k" : "source";
  const char* dst_name = second_to ? "k out" : "destination";
  check_side(src, src_name, from.kind);
  check_side(dst, dst_name, to.kind);
  if (src.dtype != DType::Float16 && src.dtype != DType::BFloat16 && src.dtype != DType::Float32)
    checks.fail(fmt::format("{} must be fp16, bf16 or fp32, got {}", src_name, src.describe()));
  checks.same_dtype(dst, dst_name, src, src_name);
  if (dst.size(1) != src.size(1) || dst.size(2) != src.size(2)) {
    checks.fail(fmt::format("{} must have {}'s heads and head dim, got {} and {}", dst_name,
                            src_name, dst.describe(), src.describe()));
  }
  if (second_from) {
    for (const auto& [t, ref, name] :
         {std::tuple{second_from, &src, "v"}, std::tuple{second_to, &dst, "v out"}}) {
      checks.strided(*t, name, 3, "[rows, H, D]");
      if (t->dtype != ref->dtype || t->shape != ref->shape)
        checks.fail(fmt::format("{} must be shaped like k: {}, got {}", name, ref->describe(),
                                t->describe()));
    }
    if (second_from->strides != src.strides || second_to->strides != dst.strides)
      checks.fail("v and v out must have the strides of k and k out");
  }

  Call<ZigzagCopy> call{};
  Problem& p = call.problem;
  p.dtype = src.dtype;
  p.heads = src.size(1);
  p.dim = src.size(2);
  p.rows = dst.size(0);
  const auto elem = static_cast<std::int64_t>(dtype_size(p.dtype));
  std::int64_t alignment = row_alignment({{&src, 2}, {&dst, 2}});
  if (second_from)
    alignment = std::min(alignment, row_alignment({{second_from, 2}, {second_to, 2}}));
  for (const ZigzagSide* side : {&from, &to}) {
    if (side->kind == KJIT_ZIGZAG_GATHERED && side->slot_stride)
      alignment = std::gcd(alignment, side->slot_stride * elem);
  }
  p.alignment = alignment;
  check(p);

  Args& a = call.args;
  a.cu_seqlens = static_cast<const int*>(cu_seqlens.data);
  a.batch = static_cast<int>(shape.batch);
  a.world = world;
  a.rank = std::max(rank, 0);
  a.chunk_begin = chunks.begin;
  a.chunk_end = chunks.end;
  a.rows = p.rows;
  a.heads = static_cast<int>(p.heads);
  a.tensors = second_from ? 2 : 1;
  a.src[0] = static_cast<const char*>(src.data);
  a.dst[0] = static_cast<char*>(dst.data);
  a.src[1] = second_from ? static_cast<const char*>(second_from->data) : nullptr;
  a.dst[1] = second_to ? static_cast<char*>(second_to->data) : nullptr;
  const auto layout = [&](const ZigzagSide& side, const TensorView& t) {
    const std::int64_t slot =
        side.slot_stride ? side.slot_stride : shape.local_tokens() * t.stride(0);
    return KjitZigzagLayout{side.kind, t.stride(0) * elem, t.stride(1) * elem, slot * elem};
  };
  a.from = layout(from, src);
  a.to = layout(to, dst);
  return call;
}

}  // namespace kjit::ops

namespace kjit::cp {

std::vector<std::int32_t> zigzag_local_cu_seqlens(const std::int32_t* host_cu_seqlens, int batch,
                                                  int world) {
  if (batch < 1) throw InvalidArgument(fmt::format("zigzag: batch must be >= 1, got {}", batch));
  const std::int32_t* host = host_cu_seqlens;
  ops::check_zigzag_lengths("zigzag", host, batch, world);
  std::vector<std::int32_t> local(static_cast<std::size_t>(batch) + 1);
  for (int b = 0; b <= batch; ++b)
    local[static_cast<std::size_t>(b)] = host[b] / world;
  return local;
}

void extract_zigzag_kv_slice(const TensorView& gathered, const ZigzagSequences& seqs, int world,
                             ChunkRange chunks, const TensorView& out, StreamHandle stream) {
  constexpr const char* kOp = "extract_zigzag_kv_slice";
  const ops::ZigzagShape shape = ops::check_zigzag_sequences(kOp, seqs, world);
  const ops::Call<ops::ZigzagCopy> call =
      ops::ZigzagCopy::validate(kOp, shape, seqs.cu_seqlens, {&gathered, KJIT_ZIGZAG_GATHERED},
                                {&out, KJIT_ZIGZAG_CHUNKS}, 0, chunks);
  if (call.problem.rows > 0) ops::run(call, stream);
}

void scatter_grad_to_zigzag(const TensorView& grad, const ZigzagSequences& seqs, int world,
                            ChunkRange chunks, int rank, const TensorView& out,
                            StreamHandle stream) {
  constexpr const char* kOp = "scatter_grad_to_zigzag";
  const ops::ZigzagShape shape = ops::check_zigzag_sequences(kOp, seqs, world);
  const bool every = rank == kEveryRank;
  const ops::Call<ops::ZigzagCopy> call = ops::ZigzagCopy::validate(
      kOp, shape, seqs.cu_seqlens, {&grad, KJIT_ZIGZAG_CHUNKS},
      {&out, every ? KJIT_ZIGZAG_GATHERED : KJIT_ZIGZAG_LOCAL}, every ? 0 : rank, chunks);
  if (call.problem.rows > 0) ops::run(call, stream);
}

}  // namespace kjit::cp

// The zigzag_copy family: templates/cp/zigzag_copy.cuh, its access width / threads per row / rows
// per block configs, the checks of the zigzag sequences and layouts, and the launch.
// kjit::cp::extract_zigzag_kv_slice, scatter_grad_to_zigzag and the zigzag attention's moves
// (a rank's rows split by chunk kind and merged back, head groups packed) run through it.
#pragma once

#include <cstdint>
#include <vector>

#include "cp/zigzag_copy_params.h"
#include "kjit/zigzag.hpp"
#include "ops/kernel_family.hpp"

namespace kjit::ops {

// Global sequences checked for W ranks on their host copy (InvalidArgument names `op` and the
// sequence).
struct ZigzagShape {
  int world = 1;
  std::int64_t batch = 0, tokens = 0;
  std::int64_t chunk_tokens() const { return tokens / (2 * world); }  // one chunk of each sequence
  std::int64_t local_tokens() const { return tokens / world; }
};
ZigzagShape check_zigzag_sequences(const char* op, const cp::ZigzagSequences& seqs, int world);
// The host copy's rules alone (B sequences).
ZigzagShape check_zigzag_lengths(const char* op, const std::int32_t* host_cu_seqlens,
                                 std::int64_t batch, int world);

// One side of a move: a tensor [rows, H, D] (D contiguous, any other strides) in one layout.
struct ZigzagSide {
  const TensorView* tensor;
  int kind;                      // KJIT_ZIGZAG_*
  std::int64_t slot_stride = 0;  // GATHERED: elements between rank slots (0: the local rows')
};

struct ZigzagCopy {
  static constexpr const char* kName = "zigzag_copy";
  static std::vector<Source> sources() { return {Source::embedded("cp/zigzag_copy.cuh")}; }

  struct Problem {
    DType dtype = DType::BFloat16;
    std::int64_t heads = 0, dim = 0, rows = 0;  // rows: the destination's
    std::int64_t alignment = 16;  // bytes every row and head start is aligned to (<= 16)
  };
  // access_bytes per access, threads_per_row threads per destination row, rows_per_block.
  struct Config {
    std::int64_t access_bytes = 0, threads_per_row = 0, rows_per_block = 0;
  };
  using Args = KjitZigzagCopyParams;

  static constexpr Field<Problem> kShape[] = {
      field<&Problem::heads>("H"), field<&Problem::dim>("D"),
      field<&Problem::rows>("rows", tuning::Bucket::Pow2),
      field<&Problem::alignment>("alignment", tuning::Bucket::Local)};
  static constexpr Field<Config> kConfig[] = {field<&Config::access_bytes>("access_bytes"),
                                              field<&Config::threads_per_row>("threads_per_row"),
                                              field<&Config::rows_per_block>("rows_per_block")};
  static constexpr DType kDTypes[] = {DType::Float16, DType::BFloat16, DType::Float32};

  static void check(const Problem& p);
  static std::vector<Config> space(const Problem& p, const Arch& arch);
  static bool valid(const Config& c, const Problem& p, const Arch& arch);
  static Config default_config(const Problem& p, const Arch& arch);
  static KernelSpec spec(const Config& c, const Problem& p, const Arch& arch);
  static void launch(const Program& program, const Config& c, const Problem& p, const Args& args,
                     StreamHandle stream);
  static std::vector<Problem> shipped(const Arch& arch);

  // The tuner's workload: one sequence of `rows` tokens (rounded up to even) at W = 1, its two
  // chunks extracted from the gathered buffer.
  static std::vector<TensorSpec> tensors(const Problem& p);
  static Args args(const Problem& p, const std::vector<TensorView>& t);
  static double tolerance(const Problem&) { return 0; }  // a copy: every config is exact
  static std::vector<Preset<Problem>> presets();

  // A move from one layout to another: `rank` places LOCAL and SPLIT, `chunks` bounds CHUNKS. The
  // second pair, if any, moves alike in the same launch (K and V). Throws InvalidArgument naming
  // `op` and the tensor.
  static Call<ZigzagCopy> validate(const char* op, const ZigzagShape& shape,
                                   const TensorView& cu_seqlens, const ZigzagSide& from,
                                   const ZigzagSide& to, int rank, cp::ChunkRange chunks,
                                   const TensorView* second_from = nullptr,
                                   const TensorView* second_to = nullptr);
  // The rows a layout holds.
  static std::int64_t rows_of(int kind, const ZigzagShape& shape, cp::ChunkRange chunks);
};

}  // namespace kjit::ops

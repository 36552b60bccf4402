// Host side of templates/attention/merge_states.cuh: input validation, the tunable parameters
// (vector width, threads per row, rows per block), the default config, the kernel spec for a
// config, and the launch. Used by the op, the tuner and the tests.
#pragma once

#include <string>
#include <vector>

#include "attention/merge_states_params.h"
#include "cache/tuning_key.hpp"
#include "kjit/kernel.hpp"
#include "kjit/kernel_spec.hpp"
#include "kjit/tensor.hpp"

namespace kjit::attention::merge_states_plan {

inline constexpr int kMinDim = 64, kMaxDim = 1024, kMaxParts = 64;

struct Problem {
  DType dtype = DType::Float32;
  int dim = 0;
  int parts = 0;
  long long tokens = 0, heads = 0;
  unsigned alignment = 16;  // bytes every row start is aligned to (power of two, <= 16)
  KjitMergeStatesParams params{};

  long long rows() const { return tokens * heads; }
  tuning::Shape shape() const { return {{"D", dim}, {"N", parts}, {"rows", rows()}}; }
};

// Throws InvalidArgument naming the bad argument.
Problem validate(const TensorView& parts, const TensorView& parts_lse, const TensorView& out,
                 const TensorView& out_lse);

// Tunable parameters and their domains; vec is in elements.
std::vector<std::pair<std::string, std::vector<std::int64_t>>> search_space(DType dtype);
bool valid(const tuning::Config& config, const Problem& problem);
bool valid(const tuning::Config& config, DType dtype, int dim, unsigned alignment);
tuning::Config default_config(DType dtype, int dim, unsigned alignment);

KernelSpec spec(const tuning::Config& config, DType dtype, int dim, int parts,
                const std::string& arch = "");
void launch(const Kernel& kernel, const tuning::Config& config, const Problem& problem,
            StreamHandle stream);

// The template file, for the tuning key's template hash.
inline constexpr const char* kTemplate = "attention/merge_states.cuh";
// Bytes read and written by one merge (for bandwidth figures).
std::uint64_t bytes_moved(const Problem& problem);

// The specialisations kjit ships (default configs): fp16/bf16/fp32 x D {64..512} x N {2..16}.
std::vector<KernelSpec> shipped(const std::string& arch);

}  // namespace kjit::attention::merge_states_plan

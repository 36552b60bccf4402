// A compiled program loaded into the driver as a context-independent CUlibrary, and its kernels.
#pragma once

#include <cuda.h>

#include <array>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "kjit/jit.hpp"

namespace kjit::detail {

// Unloads the library when the last Program or Kernel holding it goes away.
struct Library {
  CUlibrary handle = nullptr;
  ~Library();
};

struct LoadedKernel {
  std::shared_ptr<const Library> library;
  CUkernel kernel = nullptr;
  CacheKey key;
  std::string name_expression;
  std::string lowered_name;
  ResourceUsage resources;
  // Parameter sizes as the driver reports them; empty when it cannot (the check is skipped).
  std::vector<std::size_t> parameter_sizes;
  bool parameters_known = false;
  // Dynamic shared memory opt-in already granted, per device ordinal.
  mutable std::array<std::atomic<unsigned>, 64> shared_opt_in{};
};

struct LoadedProgram {
  CacheKey key;
  std::vector<std::shared_ptr<const LoadedKernel>> kernels;  // in name-expression order
};

std::shared_ptr<const LoadedProgram> load_into_driver(const CompiledProgram& program);

}  // namespace kjit::detail

// A loaded kernel and its launch. A Kernel is a cheap handle (shared ownership of the loaded
// library); launching it is an argument-size check and one cuLaunchKernelEx.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "kjit/cache_key.hpp"
#include "kjit/device.hpp"
#include "kjit/resource_usage.hpp"

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

struct LaunchConfig {
  Dim3 grid;
  Dim3 block;
  // Dynamic shared memory. Above 48 KiB the kernel's opt-in limit is raised on first use.
  unsigned dynamic_shared_bytes = 0;
  StreamHandle stream = nullptr;
  // Thread-block cluster shape (Hopper); {1,1,1} launches without clusters. The grid must be a
  // multiple of it.
  Dim3 cluster;
  // Programmatic dependent launch (sm_90): the kernel may start before the stream's previous
  // kernel has finished, once every block of that one has started (or signalled with
  // ptx::allow_dependent_launch), and reads its results only after ptx::wait_for_prior_grid
  // (templates/common/grid_dependency.cuh). Hides the launch and the prologue of a short kernel
  // that follows another.
  bool overlaps_previous_kernel = false;
};

namespace detail {
struct LoadedKernel;
struct LoadedProgram;
}  // namespace detail

class Kernel {
 public:
  // Launches with the given arguments, passed by value as the kernel declares them. Each
  // argument must be trivially copyable and, where the driver reports the kernel's parameter
  // layout, match its parameter's size; a mismatch throws kjit::Error before launching.
  template <class... Args>
  void launch(const LaunchConfig& config, const Args&... args) const {
    static_assert((std::is_trivially_copyable_v<Args> && ...),
                  "kernel arguments are copied bytewise: pass trivially copyable values");
    void* pointers[] = {const_cast<void*>(static_cast<const void*>(&args))..., nullptr};
    const std::size_t sizes[] = {sizeof(Args)..., 0};
    launch_raw(config, pointers, sizes, sizeof...(Args));
  }

  // Untyped launch: `args[i]` points at argument i, of `sizes[i]` bytes.
  void launch_raw(const LaunchConfig& config, void** args, const std::size_t* sizes,
                  std::size_t count) const;

  const std::string& name_expression() const;
  const std::string& lowered_name() const;
  const ResourceUsage& resources() const;
  const CacheKey& key() const;
  // The CUkernel handle (usable wherever a CUfunction is accepted).
  void* native_handle() const;

  explicit Kernel(std::shared_ptr<const detail::LoadedKernel> impl) : impl_(std::move(impl)) {}

 private:
  std::shared_ptr<const detail::LoadedKernel> impl_;
};

// A compiled program loaded into the driver: one kernel per name expression of its spec.
class Program {
 public:
  Kernel kernel(std::string_view name_expression) const;
  Kernel kernel() const;  // the first name expression's kernel
  // The kernel of name expression `index` (in the spec's order): no lookup by name, for
  // families that launch several kernels per call.
  Kernel kernel_at(std::size_t index) const;
  const CacheKey& key() const;
  std::vector<std::string> name_expressions() const;

  explicit Program(std::shared_ptr<const detail::LoadedProgram> impl) : impl_(std::move(impl)) {}

 private:
  std::shared_ptr<const detail::LoadedProgram> impl_;
};

}  // namespace kjit
#pragma GCC visibility pop

// Loading compiled programs into the driver, and Kernel/Program (kjit/kernel.hpp).
#include "kjit/kernel.hpp"

#include <fmt/format.h>

#include "driver/cuda_driver.hpp"
#include "jit/loaded_program.hpp"
#include "kjit/error.hpp"

namespace kjit {
namespace detail {
namespace {

// The driver reports each parameter's size but not how many there are: the count comes from the
// PTX at compile time (probing past the last index would be an API error under sanitizers).
std::vector<std::size_t> parameter_sizes(CUkernel kernel, int count, bool* known) {
  std::vector<std::size_t> sizes;
  *known = false;
  if (count < 0) return sizes;
  for (int i = 0; i < count; ++i) {
    std::size_t offset = 0, size = 0;
    if (driver::api().cuKernelGetParamInfo(kernel, i, &offset, &size) != CUDA_SUCCESS) return {};
    sizes.push_back(size);
  }
  *known = true;
  return sizes;
}

constexpr unsigned kDefaultSharedLimit = 48 * 1024;

}  // namespace

Library::~Library() {
  if (handle) driver::api().cuLibraryUnload(handle);
}

std::shared_ptr<const LoadedProgram> load_into_driver(const CompiledProgram& program) {
  const driver::Api& a = driver::api();
  driver::ensure_context();
  auto library = std::make_shared<Library>();
  driver::check(a.cuLibraryLoadData(&library->handle, program.cubin.data(), nullptr, nullptr, 0,
                                    nullptr, nullptr, 0),
                fmt::format("cuLibraryLoadData({})", program.description).c_str());
  auto loaded = std::make_shared<LoadedProgram>();
  loaded->key = program.key;
  for (const CompiledKernel& k : program.kernels) {
    auto lk = std::make_shared<LoadedKernel>();
    lk->library = library;
    driver::check(a.cuLibraryGetKernel(&lk->kernel, library->handle, k.lowered_name.c_str()),
                  fmt::format("cuLibraryGetKernel({})", k.name_expression).c_str());
    lk->key = program.key;
    lk->name_expression = k.name_expression;
    lk->lowered_name = k.lowered_name;
    lk->resources = k.resources;
    lk->parameter_sizes = parameter_sizes(lk->kernel, k.parameter_count, &lk->parameters_known);
    loaded->kernels.push_back(std::move(lk));
  }
  return loaded;
}

}  // namespace detail

void Kernel::launch_raw(const LaunchConfig& c, void** args, const std::size_t* sizes,
                        std::size_t count) const {
  const detail::LoadedKernel& k = *impl_;
  if (k.parameters_known) {
    if (count != k.parameter_sizes.size()) {
      throw Error(fmt::format("{} takes {} argument(s), launch passed {}", k.name_expression,
                              k.parameter_sizes.size(), count));
    }
    for (std::size_t i = 0; i < count; ++i) {
      if (sizes[i] != k.parameter_sizes[i]) {
        throw Error(fmt::format("argument {} of {} is {} bytes, the kernel's parameter is {}", i,
                                k.name_expression, sizes[i], k.parameter_sizes[i]));
      }
    }
  }
  const driver::Api& a = driver::api();
  driver::ensure_context();
  if (c.dynamic_shared_bytes > detail::kDefaultSharedLimit) {
    CUdevice dev = 0;
    driver::check(a.cuCtxGetDevice(&dev), "cuCtxGetDevice");
    std::atomic<unsigned>& granted = k.shared_opt_in.at(static_cast<std::size_t>(dev));
    if (granted.load(std::memory_order_relaxed) < c.dynamic_shared_bytes) {
      driver::check(a.cuKernelSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                           static_cast<int>(c.dynamic_shared_bytes), k.kernel, dev),
                    fmt::format("raising {}'s dynamic shared memory limit to {} bytes",
                                k.name_expression, c.dynamic_shared_bytes)
                        .c_str());
      // All of L1 as shared memory where the kernel asks for more than the default, so that
      // as many blocks as it allows share an SM (the driver otherwise may pick a carveout
      // that fits just one).
      driver::check(a.cuKernelSetAttribute(CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
                                           CU_SHAREDMEM_CARVEOUT_MAX_SHARED, k.kernel, dev),
                    "preferring the largest shared memory carveout");
      granted.store(c.dynamic_shared_bytes, std::memory_order_relaxed);
    }
  }
  CUlaunchConfig config{};
  config.gridDimX = c.grid.x;
  config.gridDimY = c.grid.y;
  config.gridDimZ = c.grid.z;
  config.blockDimX = c.block.x;
  config.blockDimY = c.block.y;
  config.blockDimZ = c.block.z;
  config.sharedMemBytes = c.dynamic_shared_bytes;
  config.hStream = c.stream;
  CUlaunchAttribute attrs[2]{};
  config.attrs = attrs;
  if (c.cluster.x * c.cluster.y * c.cluster.z > 1) {
    if (c.grid.x % c.cluster.x || c.grid.y % c.cluster.y || c.grid.z % c.cluster.z) {
      throw Error(fmt::format("{}: grid ({}, {}, {}) is not a multiple of cluster ({}, {}, {})",
                              k.name_expression, c.grid.x, c.grid.y, c.grid.z, c.cluster.x,
                              c.cluster.y, c.cluster.z));
    }
    CUlaunchAttribute& cluster = attrs[config.numAttrs++];
    cluster.id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
    cluster.value.clusterDim.x = c.cluster.x;
    cluster.value.clusterDim.y = c.cluster.y;
    cluster.value.clusterDim.z = c.cluster.z;
  }
  if (c.overlaps_previous_kernel) {
    CUlaunchAttribute& early = attrs[config.numAttrs++];
    early.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    early.value.programmaticStreamSerializationAllowed = 1;
  }
  const CUresult r =
      a.cuLaunchKernelEx(&config, reinterpret_cast<CUfunction>(k.kernel), args, nullptr);
  if (r != CUDA_SUCCESS) driver::check(r, ("launching " + k.name_expression).c_str());
}

const std::string& Kernel::name_expression() const {
  return impl_->name_expression;
}
const std::string& Kernel::lowered_name() const {
  return impl_->lowered_name;
}
const ResourceUsage& Kernel::resources() const {
  return impl_->resources;
}
const CacheKey& Kernel::key() const {
  return impl_->key;
}
void* Kernel::native_handle() const {
  return impl_->kernel;
}

Kernel Program::kernel(std::string_view name_expression) const {
  for (const auto& k : impl_->kernels) {
    if (k->name_expression == name_expression) return Kernel(k);
  }
  std::string known;
  for (const auto& k : impl_->kernels)
    known += "\n  " + k->name_expression;
  throw Error(fmt::format("program {} has no kernel \"{}\"; it has:{}", impl_->key.hex(),
                          name_expression, known));
}

Kernel Program::kernel() const {
  return Kernel(impl_->kernels.front());
}

Kernel Program::kernel_at(std::size_t index) const {
  if (index >= impl_->kernels.size()) {
    throw Error(fmt::format("program {} has {} kernels, not {}", impl_->key.hex(),
                            impl_->kernels.size(), index + 1));
  }
  return Kernel(impl_->kernels[index]);
}
const CacheKey& Program::key() const {
  return impl_->key;
}

std::vector<std::string> Program::name_expressions() const {
  std::vector<std::string> out;
  for (const auto& k : impl_->kernels)
    out.push_back(k->name_expression);
  return out;
}

}  // namespace kjit

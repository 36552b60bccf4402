#include "driver/cuda_driver.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kjit/error.hpp"

namespace kjit::driver {
namespace {

struct Loaded {
  Api api;
  std::string failure;  // empty when the table is usable
};

std::string symbol_failure(const char* symbol, int version, CUresult result,
                           CUdriverProcAddressQueryResult q) {
  return fmt::format(
      "driver function {} (ABI of CUDA {}.{}) not found (CUresult {}, query status "
      "{}): the driver is too old for kjit",
      symbol, version / 1000, version % 1000 / 10, static_cast<int>(result), static_cast<int>(q));
}

Loaded load() {
  Loaded out;
  const char* override_path = std::getenv("KJIT_LIBCUDA");
  const char* path = override_path && *override_path ? override_path : "libcuda.so.1";
  // The handle is never closed: function pointers into it live as long as the process.
  void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* why = dlerror();
    out.failure = fmt::format("no CUDA driver found: dlopen({}) failed: {}", path,
                              why ? why : "unknown error");
    return out;
  }
  using GetProc = PFN_cuGetProcAddress_v12000;
  auto get_proc = reinterpret_cast<GetProc>(dlsym(handle, "cuGetProcAddress_v2"));
  if (!get_proc) {
    out.failure = fmt::format(
        "no usable CUDA driver: {} has no cuGetProcAddress_v2 (driver older "
        "than CUDA 12)",
        path);
    return out;
  }
#define KJIT_DRIVER_RESOLVE(name, version)                                       \
  {                                                                              \
    void* fn = nullptr;                                                          \
    CUdriverProcAddressQueryResult q = CU_GET_PROC_ADDRESS_SUCCESS;              \
    CUresult r = get_proc(#name, &fn, version, CU_GET_PROC_ADDRESS_DEFAULT, &q); \
    if (r != CUDA_SUCCESS || !fn) {                                              \
      out.failure = symbol_failure(#name, version, r, q);                        \
      return out;                                                                \
    }                                                                            \
    out.api.name = reinterpret_cast<decltype(out.api.name)>(fn);                 \
  }
  KJIT_DRIVER_FUNCTIONS(KJIT_DRIVER_RESOLVE)
#undef KJIT_DRIVER_RESOLVE
  CUresult r = out.api.cuInit(0);
  if (r != CUDA_SUCCESS) {
    const char* name = nullptr;
    out.api.cuGetErrorName(r, &name);
    out.failure = fmt::format("CUDA driver loaded from {} but cuInit failed: {}", path,
                              name ? name : "unknown error");
  }
  return out;
}

const Loaded& loaded() {
  static const Loaded instance = load();
  return instance;
}

}  // namespace

const Api& api() {
  const Loaded& l = loaded();
  if (!l.failure.empty()) throw NoDriverError(l.failure);
  return l.api;
}

void check(CUresult result, const char* what) {
  if (result == CUDA_SUCCESS) return;
  const Api& a = api();
  const char* name = nullptr;
  const char* text = nullptr;
  a.cuGetErrorName(result, &name);
  a.cuGetErrorString(result, &text);
  throw DriverError(static_cast<int>(result),
                    fmt::format("{} failed: {} ({})", what, name ? name : "unknown",
                                text ? text : "no description"));
}

CUcontext primary_context(int ordinal) {
  // Retained once per device and kept for the process: releasing the primary context while
  // kernels of a cached library are in use would unload them.
  static std::mutex mutex;
  static std::vector<CUcontext> contexts;
  const Api& a = api();
  std::lock_guard<std::mutex> lock(mutex);
  if (ordinal < 0) throw Error(fmt::format("device ordinal {} is negative", ordinal));
  if (contexts.size() <= static_cast<std::size_t>(ordinal)) contexts.resize(ordinal + 1, nullptr);
  if (!contexts[ordinal]) {
    int count = 0;
    check(a.cuDeviceGetCount(&count), "cuDeviceGetCount");
    if (ordinal >= count) {
      throw Error(
          fmt::format("device ordinal {} is out of range: {} device(s) present", ordinal, count));
    }
    CUdevice device = 0;
    check(a.cuDeviceGet(&device, ordinal), "cuDeviceGet");
    check(a.cuDevicePrimaryCtxRetain(&contexts[ordinal], device), "cuDevicePrimaryCtxRetain");
  }
  return contexts[ordinal];
}

void ensure_context() {
  thread_local bool has_context = false;
  if (has_context) return;
  const Api& a = api();
  CUcontext current = nullptr;
  check(a.cuCtxGetCurrent(&current), "cuCtxGetCurrent");
  if (!current) check(a.cuCtxSetCurrent(primary_context(0)), "cuCtxSetCurrent");
  has_context = true;
}

}  // namespace kjit::driver

#include "comm/nccl_library.hpp"

#include <dlfcn.h>

#include <string>

#include <fmt/format.h>

#include "kjit/error.hpp"
#include "util/environment.hpp"

namespace kjit::comm {
namespace {

// Non-blocking communicators, ncclCommFinalize and ncclGetLastError, as kjit uses them.
constexpr int kOldestNccl = 21800;

struct Loaded {
  NcclApi api;
  std::string failure;  // empty when usable
};

Loaded load() {
  Loaded out;
  const std::string override_path = detail::env("KJIT_LIBNCCL");
  const std::string path = override_path.empty() ? "libnccl.so.2" : override_path;
  // Never closed: the function pointers live as long as the process.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* why = dlerror();
    out.failure = fmt::format("NCCL is not available: dlopen({}) failed: {}", path,
                              why ? why : "unknown error");
    return out;
  }
#define KJIT_NCCL_RESOLVE(name)                                                                    \
  out.api.name = reinterpret_cast<decltype(out.api.name)>(dlsym(handle, #name));                   \
  if (!out.api.name) {                                                                             \
    out.failure = fmt::format("NCCL at {} has no {}: kjit needs NCCL 2.18 or newer", path, #name); \
    return out;                                                                                    \
  }
  KJIT_NCCL_FUNCTIONS(KJIT_NCCL_RESOLVE)
#undef KJIT_NCCL_RESOLVE
  if (out.api.ncclGetVersion(&out.api.version) != ncclSuccess || out.api.version < kOldestNccl) {
    out.failure = fmt::format("NCCL at {} is version code {}: kjit needs 2.18 or newer", path,
                              out.api.version);
  }
  return out;
}

}  // namespace

const NcclApi& nccl() {
  static const Loaded loaded = load();
  if (!loaded.failure.empty()) throw Error(loaded.failure);
  return loaded.api;
}

}  // namespace kjit::comm

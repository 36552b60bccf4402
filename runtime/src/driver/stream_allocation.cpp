#include "driver/stream_allocation.hpp"

#include <map>
#include <mutex>

#include "util/environment.hpp"

namespace kjit::driver {
namespace {

constexpr std::uint64_t kDefaultKeepBytes = std::uint64_t{1} << 30;

std::uint64_t keep_bytes() {
  const std::string text = detail::env("KJIT_SCRATCH_KEEP_BYTES");
  return text.empty() ? kDefaultKeepBytes : detail::parse_bytes("KJIT_SCRATCH_KEEP_BYTES", text);
}

}  // namespace

CUmemoryPool scratch_pool() {
  const int device = current_device();  // makes a context current where there is none
  static std::mutex mutex;
  static std::map<int, CUmemoryPool> pools;  // never destroyed: they outlive every stream
  const std::lock_guard<std::mutex> lock(mutex);
  if (const auto it = pools.find(device); it != pools.end()) return it->second;
  CUmemPoolProps props{};
  props.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
  props.handleTypes = CU_MEM_HANDLE_TYPE_NONE;
  props.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  props.location.id = device;
  CUmemoryPool pool = nullptr;
  check(api().cuMemPoolCreate(&pool, &props), "cuMemPoolCreate");
  cuuint64_t keep = keep_bytes();
  check(api().cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &keep),
        "cuMemPoolSetAttribute(release threshold)");
  pools.emplace(device, pool);
  return pool;
}

}  // namespace kjit::driver

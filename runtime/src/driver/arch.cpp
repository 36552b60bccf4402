#include "driver/arch.hpp"

#include <algorithm>
#include <limits>

#include <fmt/format.h>

#include "driver/cuda_driver.hpp"
#include "kjit/device.hpp"
#include "kjit/error.hpp"
#include "nvrtc/compiler.hpp"

namespace kjit {

bool arch::is_real(std::string_view name) {
  if (name.size() < 5 || name.substr(0, 3) != "sm_") return false;
  std::string_view rest = name.substr(3);
  if (rest.back() == 'a' || rest.back() == 'f') rest.remove_suffix(1);
  return !rest.empty() && rest.size() <= 4 &&
         std::all_of(rest.begin(), rest.end(), [](char c) { return c >= '0' && c <= '9'; });
}

Arch::Arch(std::string name) : name_(std::move(name)) {
  if (!arch::is_real(name_)) {
    throw InvalidArgument(
        fmt::format("\"{}\" is not a real architecture such as sm_90a or sm_80", name_));
  }
  const char last = name_.back();
  suffix_ = last == 'a' || last == 'f' ? last : 0;
  version_ = std::stoi(name_.substr(3));  // at most four digits: cannot overflow
}

unsigned Arch::max_shared_bytes() const {
  if (version_ >= 90) return 227 * 1024;
  return version_ == 80 || version_ == 87 ? 163 * 1024 : 99 * 1024;
}

void Arch::check_supported() const {
  const std::vector<int>& supported = nvrtc::supported_archs();
  if (std::find(supported.begin(), supported.end(), version_) != supported.end()) return;
  std::string list;
  for (int v : supported)
    list += fmt::format("{}sm_{}", list.empty() ? "" : ", ", v);
  throw InvalidArgument(fmt::format("NVRTC {}.{} cannot compile for {}; it supports {}",
                                    nvrtc::version().first, nvrtc::version().second, name_, list));
}

namespace {

// What the ops ask of the current device, cached per thread and context.
struct CurrentDevice {
  Arch arch{"sm_80"};
  int multiprocessors = 0;
};

const CurrentDevice& current_device_facts() {
  driver::ensure_context();
  CUcontext context = nullptr;
  driver::check(driver::api().cuCtxGetCurrent(&context), "cuCtxGetCurrent");
  thread_local CUcontext cached_context = nullptr;
  thread_local CurrentDevice cached;
  if (context != cached_context) {
    const DeviceInfo info = device_info(current_device());
    cached = {Arch(info.arch()), info.sm_count};
    cached_context = context;
  }
  return cached;
}

}  // namespace

const Arch& arch::current() {
  return current_device_facts().arch;
}

int arch::current_multiprocessors() {
  return current_device_facts().multiprocessors;
}

Arch arch::requested_or_current(const std::string& requested) {
  if (!requested.empty()) {
    Arch a(requested);
    a.check_supported();
    return a;
  }
  std::string reason;
  if (!driver_available(&reason))
    throw Error("no GPU to take the arch from (" + reason + "); pass --arch, e.g. sm_90a");
  return Arch(device_info(current_device()).arch());
}

}  // namespace kjit

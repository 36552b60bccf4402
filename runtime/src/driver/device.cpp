// kjit/device.hpp over the driver table.
#include "kjit/device.hpp"

#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "driver/cuda_driver.hpp"
#include "kjit/error.hpp"

namespace kjit {
namespace {

// cuMemsetD8 and a pageable cuMemcpyHtoD may return before the device has finished them, and
// they run on the legacy stream, which non-blocking streams do not wait for: a kernel launched
// next on such a stream could race them (seen: a poisoned output overwriting a kernel's result).
// Waiting here makes upload() and fill_bytes() complete on return, as documented.
void finish_legacy_stream_work() {
  driver::check(driver::api().cuStreamSynchronize(nullptr), "cuStreamSynchronize");
}

}  // namespace

bool driver_available(std::string* reason) {
  try {
    driver::api();
    return true;
  } catch (const Error& e) {
    if (reason) *reason = e.what();
    return false;
  }
}

int driver_version() {
  int v = 0;
  driver::check(driver::api().cuDriverGetVersion(&v), "cuDriverGetVersion");
  return v;
}

int device_count() {
  int n = 0;
  driver::check(driver::api().cuDeviceGetCount(&n), "cuDeviceGetCount");
  return n;
}

std::string DeviceInfo::arch() const {
  // Hopper's wgmma/setmaxnreg and Blackwell's tcgen05 exist only on the arch-specific target.
  const bool specific = cc_major >= 9;
  return fmt::format("sm_{}{}{}", cc_major, cc_minor, specific ? "a" : "");
}

DeviceInfo device_info(int ordinal) {
  const driver::Api& a = driver::api();
  const int count = device_count();
  if (ordinal < 0 || ordinal >= count) {
    throw Error(
        fmt::format("device ordinal {} is out of range: {} device(s) present", ordinal, count));
  }
  CUdevice dev = 0;
  driver::check(a.cuDeviceGet(&dev, ordinal), "cuDeviceGet");
  DeviceInfo info;
  info.ordinal = ordinal;
  char name[256] = {};
  driver::check(a.cuDeviceGetName(name, sizeof(name), dev), "cuDeviceGetName");
  info.name = name;
  auto attr = [&](CUdevice_attribute which) {
    int v = 0;
    driver::check(a.cuDeviceGetAttribute(&v, which, dev), "cuDeviceGetAttribute");
    return v;
  };
  info.cc_major = attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
  info.cc_minor = attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
  info.sm_count = attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
  info.max_shared_memory_per_block_optin =
      attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
  info.l2_bytes = attr(CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE);
  driver::check(a.cuDeviceTotalMem(&info.total_memory, dev), "cuDeviceTotalMem");
  CUuuid uuid{};
  driver::check(a.cuDeviceGetUuid(&uuid, dev), "cuDeviceGetUuid");
  std::memcpy(info.uuid.data(), uuid.bytes, info.uuid.size());
  return info;
}

void set_device(int ordinal) {
  driver::check(driver::api().cuCtxSetCurrent(driver::primary_context(ordinal)), "cuCtxSetCurrent");
}

int current_device() {
  driver::ensure_context();
  CUdevice dev = 0;
  driver::check(driver::api().cuCtxGetDevice(&dev), "cuCtxGetDevice");
  return static_cast<int>(dev);
}

Stream::Stream() {
  driver::ensure_context();
  driver::check(driver::api().cuStreamCreate(&stream_, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
}

Stream::~Stream() {
  if (stream_) driver::api().cuStreamDestroy(stream_);
}

Stream::Stream(Stream&& other) noexcept : stream_(std::exchange(other.stream_, nullptr)) {}

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    if (stream_) driver::api().cuStreamDestroy(stream_);
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

void Stream::synchronize() const {
  kjit::synchronize(stream_);
}

void synchronize(StreamHandle stream) {
  driver::ensure_context();
  driver::check(driver::api().cuStreamSynchronize(stream), "cuStreamSynchronize");
}

DeviceBuffer::DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
  driver::ensure_context();
  if (bytes == 0) return;
  CUdeviceptr p = 0;
  CUresult r = driver::api().cuMemAlloc(&p, bytes);
  if (r != CUDA_SUCCESS) {
    driver::check(r, fmt::format("cuMemAlloc({} bytes)", bytes).c_str());
  }
  ptr_ = p;
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) driver::api().cuMemFree(ptr_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, 0)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_) driver::api().cuMemFree(ptr_);
    ptr_ = std::exchange(other.ptr_, 0);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void DeviceBuffer::upload(const void* host, std::size_t bytes) {
  if (bytes > bytes_) {
    throw InvalidArgument(fmt::format("upload of {} bytes into a {}-byte buffer", bytes, bytes_));
  }
  if (bytes) {
    driver::check(driver::api().cuMemcpyHtoD(ptr_, host, bytes), "cuMemcpyHtoD");
    finish_legacy_stream_work();
  }
}

void DeviceBuffer::download(void* host, std::size_t bytes) const {
  if (bytes > bytes_) {
    throw InvalidArgument(fmt::format("download of {} bytes from a {}-byte buffer", bytes, bytes_));
  }
  if (bytes) driver::check(driver::api().cuMemcpyDtoH(host, ptr_, bytes), "cuMemcpyDtoH");
}

void DeviceBuffer::copy_from(const DeviceBuffer& source, std::size_t bytes, StreamHandle stream) {
  if (bytes > bytes_ || bytes > source.bytes_) {
    throw Error(fmt::format("copy of {} bytes between buffers of {} and {} bytes", bytes,
                            source.bytes_, bytes_));
  }
  if (bytes) {
    driver::check(driver::api().cuMemcpyDtoDAsync(ptr_, source.ptr_, bytes, stream),
                  "cuMemcpyDtoDAsync");
  }
}

void DeviceBuffer::fill_bytes(unsigned char value) {
  if (bytes_) {
    driver::check(driver::api().cuMemsetD8(ptr_, value, bytes_), "cuMemsetD8");
    finish_legacy_stream_work();
  }
}

HostBuffer::HostBuffer(std::size_t bytes) : bytes_(bytes) {
  driver::ensure_context();
  if (bytes == 0) return;
  // Portable: usable from every context, whichever device the copies run on.
  CUresult r = driver::api().cuMemHostAlloc(&ptr_, bytes, CU_MEMHOSTALLOC_PORTABLE);
  if (r != CUDA_SUCCESS) {
    driver::check(r, fmt::format("cuMemHostAlloc({} bytes)", bytes).c_str());
  }
}

HostBuffer::~HostBuffer() {
  if (ptr_) driver::api().cuMemFreeHost(ptr_);
}

HostBuffer::HostBuffer(HostBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

HostBuffer& HostBuffer::operator=(HostBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_) driver::api().cuMemFreeHost(ptr_);
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void copy_async(void* dst, const void* src, std::size_t bytes, StreamHandle stream) {
  if (bytes == 0) return;
  driver::ensure_context();
  driver::check(driver::api().cuMemcpyAsync(reinterpret_cast<CUdeviceptr>(dst),
                                            reinterpret_cast<CUdeviceptr>(src), bytes, stream),
                "cuMemcpyAsync");
}

Event::Event() {
  driver::ensure_context();
  driver::check(driver::api().cuEventCreate(&event_, CU_EVENT_DEFAULT), "cuEventCreate");
}

Event::~Event() {
  if (event_) driver::api().cuEventDestroy(event_);
}

void Event::record(StreamHandle stream) {
  driver::check(driver::api().cuEventRecord(event_, stream), "cuEventRecord");
}

void Event::synchronize() const {
  driver::check(driver::api().cuEventSynchronize(event_), "cuEventSynchronize");
}

bool Event::done() const {
  const CUresult r = driver::api().cuEventQuery(event_);
  if (r == CUDA_ERROR_NOT_READY) return false;
  driver::check(r, "cuEventQuery");
  return true;
}

float Event::elapsed_ms_since(const Event& start) const {
  float ms = 0;
  driver::check(driver::api().cuEventElapsedTime(&ms, start.event_, event_), "cuEventElapsedTime");
  return ms;
}

void memory_info(std::size_t* free_bytes, std::size_t* total_bytes) {
  driver::ensure_context();
  std::size_t f = 0, t = 0;
  driver::check(driver::api().cuMemGetInfo(&f, &t), "cuMemGetInfo");
  if (free_bytes) *free_bytes = f;
  if (total_bytes) *total_bytes = t;
}

}  // namespace kjit

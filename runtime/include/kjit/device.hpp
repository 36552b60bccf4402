// Devices, streams and device memory, on the CUDA driver API loaded at first use. Nothing here
// links libcuda: on a machine without a driver these throw kjit::NoDriverError.
#pragma once

#include <array>
#include <cstddef>
#include <string>

struct CUstream_st;
struct CUevent_st;

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit {

// Same pointer as CUstream and cudaStream_t; nullptr is the legacy default stream.
using StreamHandle = CUstream_st*;

// True when libcuda loaded and initialised; never throws. `reason` says why not otherwise.
bool driver_available(std::string* reason = nullptr);
int driver_version();  // e.g. 13000
int device_count();

struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int cc_major = 0;
  int cc_minor = 0;
  int sm_count = 0;
  std::size_t total_memory = 0;
  int max_shared_memory_per_block_optin = 0;
  int l2_bytes = 0;
  std::array<unsigned char, 16> uuid{};  // tells two ordinals (or two processes' GPUs) apart
  // The NVRTC target for this device: "sm_90a" on Hopper (arch-specific features on), "sm_XY"
  // elsewhere.
  std::string arch() const;
};
DeviceInfo device_info(int ordinal);

// Makes `ordinal`'s primary context current on the calling thread.
void set_device(int ordinal);
// The device of the calling thread's current context; device 0's primary context is made
// current if the thread has none (as the CUDA runtime does).
int current_device();

class Stream {
 public:
  Stream();  // non-blocking stream on the current device
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  Stream(Stream&& other) noexcept;
  Stream& operator=(Stream&& other) noexcept;

  StreamHandle handle() const { return stream_; }
  void synchronize() const;

 private:
  StreamHandle stream_ = nullptr;
};

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;

  void* data() const { return reinterpret_cast<void*>(ptr_); }
  template <class T>
  T* as() const {
    return reinterpret_cast<T*>(ptr_);
  }
  std::size_t size() const { return bytes_; }

  // Copies that are complete when they return (safe before work on any stream).
  void upload(const void* host, std::size_t bytes);
  void download(void* host, std::size_t bytes) const;
  // Asynchronous device-to-device copy of `bytes` from `source` (both must hold them).
  void copy_from(const DeviceBuffer& source, std::size_t bytes, StreamHandle stream);
  // Fills every byte with `value`, complete on return (used to poison outputs before a run).
  void fill_bytes(unsigned char value);

 private:
  unsigned long long ptr_ = 0;  // CUdeviceptr
  std::size_t bytes_ = 0;
};

// Page-locked host memory: the staging area for copies that overlap with device work.
class HostBuffer {
 public:
  HostBuffer() = default;
  explicit HostBuffer(std::size_t bytes);
  ~HostBuffer();
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;
  HostBuffer(HostBuffer&& other) noexcept;
  HostBuffer& operator=(HostBuffer&& other) noexcept;

  void* data() const { return ptr_; }
  std::size_t size() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

// Copies `bytes` between any two addresses the driver knows (device, page-locked or pageable
// host), ordered on `stream`. Pageable host memory makes the copy synchronous.
void copy_async(void* dst, const void* src, std::size_t bytes, StreamHandle stream);

// Device-side timing: elapsed milliseconds between two recorded events.
class Event {
 public:
  Event();
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(StreamHandle stream = nullptr);
  void synchronize() const;
  bool done() const;  // the work before its last record has run (or it was never recorded)
  float elapsed_ms_since(const Event& start) const;

 private:
  CUevent_st* event_ = nullptr;
};

// Waits for every operation queued on `stream` (nullptr: the legacy default stream).
void synchronize(StreamHandle stream);

// Device memory in use and total on the current device, in bytes.
void memory_info(std::size_t* free_bytes, std::size_t* total_bytes);

}  // namespace kjit
#pragma GCC visibility pop

#include "offload/expert_loader.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "driver/cuda_driver.hpp"
#include "kjit/error.hpp"

namespace kjit::offload {
namespace {

CUmemorytype memory_type(const void* p) {
  CUmemorytype type{};
  CUpointer_attribute attributes[] = {CU_POINTER_ATTRIBUTE_MEMORY_TYPE};
  void* values[] = {&type};
  driver::check(
      driver::api().cuPointerGetAttributes(1, attributes, values, reinterpret_cast<CUdeviceptr>(p)),
      "cuPointerGetAttributes");
  return type;
}

}  // namespace

void ExpertLoader::require_device(const TensorView& t, const char* what) {
  if (t.data && memory_type(t.data) != CU_MEMORYTYPE_DEVICE) {
    throw InvalidArgument(
        fmt::format("expert offload: {} {} must be in device memory", what, t.describe()));
  }
}

ExpertLoader::ExpertLoader(int layers, int slots)
    : slots_(slots), tiles_(static_cast<std::size_t>(layers)) {
  for (int i = 0; i < layers * slots; ++i)
    fences_.push_back(std::make_unique<SlotFences>());
}

TensorView ExpertLoader::add_tile(int layer, const TensorView& host) {
  // Each expert's part one contiguous range: a copy an expert and tile.
  std::int64_t expected = 1;
  for (int d = host.ndim - 1; d >= 0; --d) {
    if (host.size(d) > 1 && host.stride(d) != expected) {
      throw InvalidArgument(fmt::format(
          "expert offload: host expert tensors must be contiguous, got {}", host.describe()));
    }
    expected *= host.size(d);
  }
  if (memory_type(host.data) != CU_MEMORYTYPE_HOST) {
    throw InvalidArgument(fmt::format(
        "expert offload: {} is not in page-locked host memory (cuMemHostAlloc, cudaHostAlloc or "
        "registered): copies from pageable memory would not overlap with the GEMMs",
        host.describe()));
  }
  Tile tile;
  tile.host = static_cast<const char*>(host.data);
  tile.expert_bytes =
      static_cast<std::size_t>(host.numel() / host.size(0)) * dtype_size(host.dtype);
  tile.slots = DeviceBuffer(tile.expert_bytes * static_cast<std::size_t>(slots_));
  device_bytes_ += tile.slots.size();
  std::vector<std::int64_t> shape(host.shape.begin(), host.shape.begin() + host.ndim);
  shape[0] = slots_;
  TensorView view(tile.slots.data(), host.dtype, shape);
  tiles_[layer].push_back(std::move(tile));
  return view;
}

std::size_t ExpertLoader::load(int layer, const std::vector<Load>& loads) {
  if (loads.empty()) return 0;
  for (const Load& l : loads)
    fences(layer, l.slot).released.wait(stream_.handle());
  // Consecutive experts into consecutive slots (a cold layer's loads, a prefill's) move as one
  // copy a tile: the copy engine's cost per copy, which NVFP4's small scale tiles feel, is paid
  // once a run.
  std::vector<Load> by_expert(loads);
  std::sort(by_expert.begin(), by_expert.end(),
            [](const Load& a, const Load& b) { return a.expert < b.expert; });
  copy_spans_.begin(stream_.handle());
  std::size_t bytes = 0;
  for (std::size_t first = 0, run = 1; first < by_expert.size(); first += run, run = 1) {
    const Load& l = by_expert[first];
    while (first + run < by_expert.size() && by_expert[first + run].expert == l.expert + int(run) &&
           by_expert[first + run].slot == l.slot + int(run))
      ++run;
    for (const Tile& t : tiles_[layer]) {
      copy_async(static_cast<char*>(t.slots.data()) + t.expert_bytes * l.slot,
                 t.host + t.expert_bytes * l.expert, t.expert_bytes * run, stream_.handle());
      bytes += t.expert_bytes * run;
    }
    for (std::size_t i = first; i < first + run; ++i) {
      SlotFences& f = fences(layer, by_expert[i].slot);
      f.ready.signal(stream_.handle());
      f.loading = true;
    }
  }
  copy_spans_.end(stream_.handle());
  return bytes;
}

void ExpertLoader::wait_ready(int layer, const std::vector<Load>& pass, StreamHandle compute) {
  bool pending = false;
  for (const Load& l : pass)
    pending |= fences(layer, l.slot).loading;
  if (pending) stall_spans_.begin(compute);
  for (const Load& l : pass) {
    SlotFences& f = fences(layer, l.slot);
    f.ready.wait(compute);  // cheap when long done; safe for a stream that did not wait before
    f.loading = false;
  }
  if (pending) stall_spans_.end(compute);
}

void ExpertLoader::release(int layer, const std::vector<Load>& pass, StreamHandle compute) {
  for (const Load& l : pass)
    fences(layer, l.slot).released.signal(compute);
}

}  // namespace kjit::offload

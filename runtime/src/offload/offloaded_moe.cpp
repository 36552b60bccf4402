// The offloaded MoE stack (kjit/expert_offload.hpp): per layer call, route on the GPU, bring the
// choices to the host, let the ExpertCache decide (hits, loads, passes), then per pass load its
// misses (ExpertLoader), wait for them, map align's blocks to the pass's slots and run the
// experts' GEMMs over the slots; combine once; load what the cache prefetches for the next layer.
#include "kjit/expert_offload.hpp"

#include <algorithm>
#include <numeric>
#include <utility>

#include <fmt/format.h>

#include "kjit/error.hpp"
#include "offload/expert_loader.hpp"
#include "ops/moe/layer_steps.hpp"

namespace kjit::moe {
namespace {

using Weights = ops::MoeGemm::Weights;

// A stack's layers as the GEMMs take their weights.
struct Stack {
  std::vector<Weights> gate_up, down;
  std::vector<TensorView> router_bias;
};

// The checks of the weights that need no device, before any is touched (the cache checks the
// options).
void check_stack(const Stack& stack) {
  if (stack.gate_up.empty()) throw InvalidArgument("expert offload: no layers");
  const TensorView &first = stack.gate_up[0].codes, &first_down = stack.down[0].codes;
  if (first.ndim != 3) {
    throw InvalidArgument(
        fmt::format("expert offload: gate_up must be [E, 2 I, H], got {}", first.describe()));
  }
  const auto same = [](const TensorView& a, const TensorView& b) {
    return a.ndim == b.ndim && a.dtype == b.dtype &&
           std::equal(a.shape.begin(), a.shape.begin() + a.ndim, b.shape.begin());
  };
  for (std::size_t l = 0; l < stack.gate_up.size(); ++l) {
    if (!same(stack.gate_up[l].codes, first) || !same(stack.down[l].codes, first_down) ||
        stack.gate_up[l].format != stack.gate_up[0].format) {
      throw InvalidArgument(fmt::format(
          "expert offload: layer {}'s weights (gate_up {}, down {}) differ from layer 0's", l,
          stack.gate_up[l].codes.describe(), stack.down[l].codes.describe()));
    }
  }
}

template <class LayerList>
Stack stack_of(const LayerList& layers) {
  Stack s;
  for (const auto& l : layers) {
    s.gate_up.emplace_back(l.gate_up);
    s.down.emplace_back(l.down);
    s.router_bias.push_back(l.router_bias);
  }
  check_stack(s);
  return s;
}

// The slots' weights: the host tensors' tiles on the loader; NVFP4's tensor scale a tile when it
// is per expert ([E], E > 1), else (one for all, [1] or 0-d) on the device as given; MXFP4's is
// not read.
Weights slot_weights(offload::ExpertLoader& loader, int layer, const Weights& host) {
  Weights slots = host;
  slots.codes = loader.add_tile(layer, host.codes);
  if (host.format != ops::MoeGemm::kSameAsX) slots.scales = loader.add_tile(layer, host.scales);
  if (host.format == ops::MoeGemm::kNvFp4) {
    const TensorView& scale = host.tensor_scale;
    if (scale.ndim == 1 && scale.size(0) == host.codes.size(0) && scale.size(0) > 1) {
      slots.tensor_scale = loader.add_tile(layer, scale);
    } else {
      offload::ExpertLoader::require_device(scale, "a tensor scale shared by every expert");
    }
  }
  return slots;
}

}  // namespace

struct OffloadedMoe::Impl {
  Impl(Stack stack, const LayerOptions& layer_options, const OffloadOptions& options);
  ~Impl();

  std::vector<int> download_ids(const TensorView& ids, StreamHandle stream);
  void run(int index, const TensorView& x, const TensorView& router_logits,
           const TensorView& shared, const TensorView& out, StreamHandle stream,
           const std::vector<std::uint32_t>& sequences);
  void load(int layer, const std::vector<ExpertSlots::Load>& prefetches);

  int layers() const { return cache.layers(); }
  int experts() const { return cache.experts(); }
  void check_layer(int index) const {  // before any device work
    if (index < 0 || index >= layers()) {
      throw InvalidArgument(
          fmt::format("expert offload: layer {} is outside 0..{}", index, layers() - 1));
    }
  }

  LayerOptions layer_options;
  std::vector<Weights> host_gate_up, host_down, slot_gate_up, slot_down;
  std::vector<TensorView> router_bias;
  ExpertCache cache;
  offload::ExpertLoader loader;
  HostBuffer ids_host, tables_host;
  DeviceBuffer tables;
  Event ids_ready, tables_copied, last_call;  // last_call: the end of the last call's work
  std::int64_t bytes_on_demand = 0, bytes_prefetched = 0;
};

OffloadedMoe::Impl::Impl(Stack stack, const LayerOptions& layer_options_,
                         const OffloadOptions& options)
    : layer_options(layer_options_),
      host_gate_up(std::move(stack.gate_up)),
      host_down(std::move(stack.down)),
      router_bias(std::move(stack.router_bias)),
      cache(static_cast<int>(host_gate_up.size()), static_cast<int>(host_gate_up[0].codes.size(0)),
            layer_options_.router.top_k, options),
      loader(layers(), options.slots) {
  const int layers = this->layers(), experts = this->experts();
  for (int l = 0; l < layers; ++l) {
    slot_gate_up.push_back(slot_weights(loader, l, host_gate_up[l]));
    slot_down.push_back(slot_weights(loader, l, host_down[l]));
  }
  const auto e = static_cast<std::size_t>(experts);
  tables_host = HostBuffer(e * e * sizeof(int));  // a pass holds one expert at least
  tables = DeviceBuffer(e * e * sizeof(int));
  // Pinned experts are loaded once, now.
  for (int l = 0; l < layers; ++l) {
    std::vector<ExpertSlots::Load> pinned;
    for (int x = 0; x < experts; ++x) {
      if (cache.slots(l).resident(x)) pinned.push_back({x, cache.slots(l).slot(x)});
    }
    loader.load(l, pinned);
  }
}

OffloadedMoe::Impl::~Impl() {
  // The GEMMs reading the slots, the loads writing them and the table's copy are done before
  // their memory goes (and before the caller frees the host weights the loads read).
  try {
    last_call.synchronize();
    loader.synchronize();
    tables_copied.synchronize();
  } catch (const std::exception&) {  // a broken context: nothing left to wait for
  }
}

std::vector<int> OffloadedMoe::Impl::download_ids(const TensorView& ids, StreamHandle stream) {
  const std::size_t bytes = static_cast<std::size_t>(ids.numel()) * sizeof(int);
  if (ids_host.size() < bytes) ids_host = HostBuffer(std::max(bytes, 2 * ids_host.size()));
  copy_async(ids_host.data(), ids.data, bytes, stream);
  ids_ready.record(stream);
  ids_ready.synchronize();  // the loads below depend on the choice
  const int* p = static_cast<const int*>(ids_host.data());
  return std::vector<int>(p, p + ids.numel());
}

void OffloadedMoe::Impl::load(int layer, const std::vector<ExpertSlots::Load>& prefetches) {
  try {
    bytes_prefetched += static_cast<std::int64_t>(loader.load(layer, prefetches));
  } catch (...) {
    cache.forget(layer);  // the cache counts them resident: not all were queued
    throw;
  }
}

void OffloadedMoe::Impl::run(int index, const TensorView& x, const TensorView& router_logits,
                             const TensorView& shared, const TensorView& out, StreamHandle stream,
                             const std::vector<std::uint32_t>& sequences) {
  check_layer(index);
  const int experts = this->experts();
  const std::int64_t tokens = x.ndim == 2 ? x.size(0) : 0;
  if (!sequences.empty() && static_cast<std::int64_t>(sequences.size()) != tokens) {
    throw InvalidArgument(
        fmt::format("expert offload: {} sequence ids for {} tokens", sequences.size(), tokens));
  }
  ops::MoeLayerSteps steps(x, router_logits, host_gate_up[index], host_down[index], shared,
                           layer_options, out, stream);
  steps.route(router_bias[index]);
  const std::vector<int> ids = download_ids(steps.ids(), stream);
  std::vector<std::uint32_t> seqs = sequences;
  if (seqs.empty()) {
    seqs.resize(static_cast<std::size_t>(tokens));
    std::iota(seqs.begin(), seqs.end(), 0u);
  }
  const ExpertSlots::Outcome o = cache.step(index, seqs, ids);

  // From here the cache counts this step's misses as resident: any failure before their loads
  // and GEMMs are queued makes it forget the layer (its pinned experts keep their slots).
  const std::size_t passes = o.passes.size();
  std::size_t p = 0;
  try {
    // Each pass's table of slots (passes x E, -1 for the experts of other passes), one copy.
    tables_copied.synchronize();  // the last call's copy has left tables_host
    int* table = static_cast<int*>(tables_host.data());
    std::fill(table, table + passes * experts, -1);
    for (std::size_t q = 0; q < passes; ++q) {
      for (const ExpertSlots::Load& l : o.passes[q])
        table[q * experts + l.expert] = l.slot;
    }
    copy_async(tables.data(), table, passes * experts * sizeof(int), stream);
    tables_copied.record(stream);

    const TensorView& block_expert = steps.block_expert();
    driver::StreamAllocation block_slot_memory(
        static_cast<std::size_t>(block_expert.size(0)) * sizeof(int), stream);
    const TensorView block_slot(block_slot_memory.data(), DType::Int32, {block_expert.size(0)});
    std::size_t loaded = 0;
    for (; p < passes; ++p) {
      // This pass's misses, the next run of o.loaded (in pass order), queued after the last pass
      // released the slots they overwrite.
      const std::size_t first = loaded;
      while (loaded < o.loaded.size() && std::find(o.passes[p].begin(), o.passes[p].end(),
                                                   o.loaded[loaded]) != o.passes[p].end())
        ++loaded;
      bytes_on_demand += static_cast<std::int64_t>(
          loader.load(index, {o.loaded.begin() + static_cast<std::ptrdiff_t>(first),
                              o.loaded.begin() + static_cast<std::ptrdiff_t>(loaded)}));
      loader.wait_ready(index, o.passes[p], stream);
      map_block_experts(
          block_expert,
          TensorView(static_cast<int*>(tables.data()) + p * experts, DType::Int32, {experts}),
          block_slot, stream);
      steps.experts(slot_gate_up[index], slot_down[index], block_slot);
      loader.release(index, o.passes[p], stream);
    }
  } catch (...) {
    cache.forget(index);
    try {  // later loads into the slots of the passes not run wait for what was queued
      for (std::size_t q = p; q < passes; ++q)
        loader.release(index, o.passes[q], stream);
    } catch (const std::exception&) {  // a broken context: the first error is the one to report
    }
    throw;
  }
  steps.combine();
  last_call.record(stream);
  load(index + 1, cache.prefetch_next(index, seqs, ids));
}

OffloadedMoe::OffloadedMoe(const std::vector<LayerWeights>& layers, const LayerOptions& options,
                           const OffloadOptions& offload)
    : impl_(std::make_unique<Impl>(stack_of(layers), options, offload)) {}

OffloadedMoe::OffloadedMoe(const std::vector<Fp4LayerWeights>& layers, const LayerOptions& options,
                           const OffloadOptions& offload)
    : impl_(std::make_unique<Impl>(stack_of(layers), options, offload)) {}

OffloadedMoe::~OffloadedMoe() = default;

void OffloadedMoe::layer(int index, const TensorView& x, const TensorView& router_logits,
                         const TensorView& shared, const TensorView& out, StreamHandle stream,
                         const std::vector<std::uint32_t>& sequences) {
  impl_->run(index, x, router_logits, shared, out, stream, sequences);
}

void OffloadedMoe::prefetch_from_logits(int index, const TensorView& guess_logits,
                                        StreamHandle stream) {
  Impl& m = *impl_;
  m.check_layer(index);
  if (guess_logits.ndim != 2 || guess_logits.size(1) != m.experts()) {
    throw InvalidArgument(fmt::format("expert offload: guess logits must be [T, {}], got {}",
                                      m.experts(), guess_logits.describe()));
  }
  const std::int64_t tokens = guess_logits.size(0), top_k = m.cache.top_k();
  const auto pairs = static_cast<std::size_t>(tokens * top_k);
  driver::StreamAllocation memory(pairs * (sizeof(int) + sizeof(float)), stream);
  const TensorView ids(memory.data(), DType::Int32, {tokens, top_k}),
      weights(static_cast<int*>(memory.data()) + pairs, DType::Float32, {tokens, top_k});
  router_topk(guess_logits, m.router_bias[index], ids, weights, m.layer_options.router, stream);
  const std::vector<int> chosen = m.download_ids(ids, stream);
  m.last_call.record(stream);
  m.load(index, m.cache.prefetch(index, chosen));
}

OffloadStats OffloadedMoe::stats() const {
  OffloadStats s;
  static_cast<ExpertCacheStats&>(s) = impl_->cache.stats();
  s.bytes_on_demand = impl_->bytes_on_demand;
  s.bytes_prefetched = impl_->bytes_prefetched;
  s.stall_ms = impl_->loader.stall_ms(true);
  s.copy_ms = impl_->loader.copy_ms(true);
  return s;
}

RoutingTrace OffloadedMoe::history() const {
  return impl_->cache.history();
}

std::size_t OffloadedMoe::cache_bytes() const {
  return impl_->loader.device_bytes();
}

}  // namespace kjit::moe

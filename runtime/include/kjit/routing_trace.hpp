// MoE routing traces: which experts every token chose at every MoE layer, as the router's top-k
// gives them. What the expert-offload tools read (`kjit moe analyze`) and write (`kjit moe
// simulate`), and what a serving stack records from its routers.
//
// A record is one token: its sequence, its step (the decode step or prefill batch it ran in;
// records of one step share it), and top_k expert ids for each of the layers. Two files:
// - Binary (".kjrt"), little-endian: "KJITRT01"; u32 version (1), layers, experts, top_k; u64
//   records; then per record u32 sequence, u32 step, layers x top_k u16 ids; then the XXH3-64 of
//   every byte before it (u64). Experts up to 65535.
// - JSON lines (".jsonl"): a header {"format": "kjit-routing-trace", "version": 1, "layers": L,
//   "experts": E, "top_k": K}, then one {"sequence": s, "step": t, "experts": [[ids of layer 0],
//   ...]} a record.
// A record's ids are distinct and below `experts`; steps do not decrease. Reading checks all of
// it and throws InvalidArgument naming the file, the record and what is wrong (truncated,
// corrupt, out of range).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit::moe {

class RoutingTrace {
 public:
  RoutingTrace(int layers, int experts, int top_k);

  int layers() const { return layers_; }
  int experts() const { return experts_; }
  int top_k() const { return top_k_; }
  std::int64_t records() const { return static_cast<std::int64_t>(steps_.size()); }

  // Appends a token: ids[layer * top_k + j]. Throws InvalidArgument for a bad record.
  void add(std::uint32_t sequence, std::uint32_t step, const std::vector<int>& ids);
  std::uint32_t sequence(std::int64_t record) const { return sequences_[record]; }
  std::uint32_t step(std::int64_t record) const { return steps_[record]; }
  // The top_k ids of `record` at `layer`.
  const std::uint16_t* choice(std::int64_t record, int layer) const {
    return &ids_[(record * layers_ + layer) * top_k_];
  }

  void write_binary(const std::string& path) const;
  void write_json_lines(const std::string& path) const;
  // By content: the binary magic, else JSON lines.
  static RoutingTrace read(const std::string& path);

 private:
  int layers_, experts_, top_k_;
  std::vector<std::uint32_t> sequences_, steps_;
  std::vector<std::uint16_t> ids_;
};

// A serving stack's recent routing, layer by layer: each layer keeps its last `capacity` records
// (a bounded ring), appended as the layer's router output reaches the host. trace() gives the
// records every layer still holds (a token's choices at all layers), in the order they came, for
// `kjit moe analyze` or a predictor.
class RoutingHistory {
 public:
  RoutingHistory(int layers, int experts, int top_k, std::int64_t capacity);

  // A step's tokens at `layer`: ids[t * top_k + j] for sequences.size() tokens. Throws
  // InvalidArgument for a bad layer or id (nothing recorded then).
  void record(int layer, std::uint32_t step, const std::vector<std::uint32_t>& sequences,
              const int* ids);
  // Records `layer` has taken in all (the ring holds the last `capacity` of them).
  std::int64_t recorded(int layer) const { return written_[layer]; }
  RoutingTrace trace() const;

 private:
  int layers_, experts_, top_k_;
  std::int64_t capacity_;
  std::vector<std::int64_t> written_;                          // [layers]
  std::vector<std::vector<std::uint32_t>> sequences_, steps_;  // [layers][capacity]
  std::vector<std::vector<std::uint16_t>> ids_;                // [layers][capacity * top_k]
};

}  // namespace kjit::moe
#pragma GCC visibility pop

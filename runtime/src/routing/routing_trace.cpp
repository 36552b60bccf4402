#include "kjit/routing_trace.hpp"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "kjit/error.hpp"
#include "util/private_files.hpp"

namespace kjit::moe {
namespace {

constexpr char kMagic[8] = {'K', 'J', 'I', 'T', 'R', 'T', '0', '1'};
constexpr std::uint32_t kVersion = 1;
constexpr std::size_t kHeaderBytes = 8 + 4 * 4 + 8;

template <class T>
void put(std::string& out, T value) {  // little-endian hosts only (x86-64, aarch64)
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

// Reads little-endian values from a file's bytes, refusing to run past the end.
class Reader {
 public:
  Reader(const std::string& bytes, const std::string& path) : bytes_(bytes), path_(path) {}
  template <class T>
  T get(const char* what) {
    if (at_ + sizeof(T) > bytes_.size()) {
      throw InvalidArgument(fmt::format("routing trace {}: truncated: {} at byte {} of {}", path_,
                                        what, at_, bytes_.size()));
    }
    T value;
    std::memcpy(&value, bytes_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return value;
  }
  std::size_t at() const { return at_; }

 private:
  const std::string& bytes_;
  const std::string& path_;
  std::size_t at_ = 0;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InvalidArgument(fmt::format("routing trace {}: cannot open it", path));
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, const std::string& bytes) {
  const std::string why = detail::write_atomically(path, bytes, 0644);
  if (!why.empty()) throw Error(fmt::format("routing trace {}: {}", path, why));
}

RoutingTrace read_binary(const std::string& bytes, const std::string& path) {
  Reader r(bytes, path);
  r.get<std::uint64_t>("magic");  // checked by the caller
  const auto version = r.get<std::uint32_t>("version");
  if (version != kVersion) {
    throw InvalidArgument(fmt::format("routing trace {}: format version {}, this kjit reads {}",
                                      path, version, kVersion));
  }
  const auto layers = r.get<std::uint32_t>("layers"), experts = r.get<std::uint32_t>("experts"),
             top_k = r.get<std::uint32_t>("top_k");
  const auto records = r.get<std::uint64_t>("records");
  if (layers == 0 || top_k == 0 || experts == 0 || layers > 4096 || top_k > experts ||
      experts > 65535) {
    throw InvalidArgument(
        fmt::format("routing trace {}: corrupt header: {} layers, {} experts, top_k {}", path,
                    layers, experts, top_k));
  }
  const std::uint64_t record_bytes = 8 + 2ull * layers * top_k;
  const std::uint64_t expected = kHeaderBytes + records * record_bytes + 8;
  if (records > (bytes.size() / record_bytes) + 1 || bytes.size() != expected) {
    throw InvalidArgument(
        fmt::format("routing trace {}: {}: the header's {} records need {} bytes, the file has {}",
                    path, bytes.size() < expected ? "truncated" : "corrupt (bytes past the end)",
                    records, expected, bytes.size()));
  }
  const std::uint64_t sum = XXH3_64bits(bytes.data(), bytes.size() - 8);
  std::uint64_t stored;
  std::memcpy(&stored, bytes.data() + bytes.size() - 8, 8);
  if (sum != stored)
    throw InvalidArgument(fmt::format("routing trace {}: corrupt: checksum mismatch", path));
  RoutingTrace trace(static_cast<int>(layers), static_cast<int>(experts), static_cast<int>(top_k));
  std::vector<int> ids(static_cast<std::size_t>(layers) * top_k);
  for (std::uint64_t i = 0; i < records; ++i) {
    const auto sequence = r.get<std::uint32_t>("sequence"), step = r.get<std::uint32_t>("step");
    for (int& id : ids)
      id = r.get<std::uint16_t>("ids");
    try {
      trace.add(sequence, step, ids);
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(fmt::format("routing trace {}: record {}: {}", path, i, e.what()));
    }
  }
  return trace;
}

RoutingTrace read_json_lines(const std::string& bytes, const std::string& path) {
  std::istringstream in(bytes);
  std::string line;
  std::int64_t line_number = 0;
  const auto parse = [&](const char* what) {
    try {
      return nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw InvalidArgument(fmt::format("routing trace {}: line {}: {} is not JSON: {}", path,
                                        line_number, what, e.what()));
    }
  };
  if (!std::getline(in, line)) throw InvalidArgument(fmt::format("routing trace {}: empty", path));
  ++line_number;
  const nlohmann::json header = parse("the header");
  if (!header.is_object() || header.value("format", "") != "kjit-routing-trace" ||
      header.value("version", 0) != static_cast<int>(kVersion)) {
    throw InvalidArgument(fmt::format(
        "routing trace {}: neither a binary trace (magic KJITRT01) nor a JSON-lines one (a "
        "header with \"format\": \"kjit-routing-trace\", \"version\": {})",
        path, kVersion));
  }
  const auto field = [&](const char* name) {
    if (!header.contains(name) || !header[name].is_number_integer())
      throw InvalidArgument(
          fmt::format("routing trace {}: the header has no integer {}", path, name));
    return header[name].get<int>();
  };
  RoutingTrace trace(field("layers"), field("experts"), field("top_k"));
  std::vector<int> ids;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.empty()) continue;
    const nlohmann::json record = parse("a record");
    try {
      const auto& layers = record.at("experts");
      ids.clear();
      if (!layers.is_array() || static_cast<int>(layers.size()) != trace.layers())
        throw InvalidArgument(fmt::format("experts must hold {} layers", trace.layers()));
      for (const auto& choice : layers) {
        if (!choice.is_array() || static_cast<int>(choice.size()) != trace.top_k())
          throw InvalidArgument(fmt::format("each layer must hold top_k = {} ids", trace.top_k()));
        for (const auto& id : choice)
          ids.push_back(id.get<int>());
      }
      trace.add(record.at("sequence").get<std::uint32_t>(), record.at("step").get<std::uint32_t>(),
                ids);
    } catch (const nlohmann::json::exception& e) {
      throw InvalidArgument(
          fmt::format("routing trace {}: line {}: {}", path, line_number, e.what()));
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(
          fmt::format("routing trace {}: line {}: {}", path, line_number, e.what()));
    }
  }
  return trace;
}

}  // namespace

RoutingTrace::RoutingTrace(int layers, int experts, int top_k)
    : layers_(layers), experts_(experts), top_k_(top_k) {
  if (layers < 1 || experts < 1 || experts > 65535 || top_k < 1 || top_k > experts) {
    throw InvalidArgument(fmt::format(
        "routing trace: need layers >= 1, 1 <= top_k <= experts <= 65535; got {} layers, {} "
        "experts, top_k {}",
        layers, experts, top_k));
  }
}

void RoutingTrace::add(std::uint32_t sequence, std::uint32_t step, const std::vector<int>& ids) {
  if (static_cast<std::int64_t>(ids.size()) != static_cast<std::int64_t>(layers_) * top_k_) {
    throw InvalidArgument(fmt::format("a record holds layers x top_k = {} ids, got {}",
                                      layers_ * top_k_, ids.size()));
  }
  if (!steps_.empty() && step < steps_.back())
    throw InvalidArgument(fmt::format("step {} comes after step {}", step, steps_.back()));
  for (int layer = 0; layer < layers_; ++layer) {
    const int* choice = ids.data() + layer * top_k_;
    for (int j = 0; j < top_k_; ++j) {
      if (choice[j] < 0 || choice[j] >= experts_) {
        throw InvalidArgument(
            fmt::format("layer {}: expert {} is outside 0..{}", layer, choice[j], experts_ - 1));
      }
      for (int i = 0; i < j; ++i) {
        if (choice[i] == choice[j])
          throw InvalidArgument(fmt::format("layer {}: expert {} chosen twice", layer, choice[j]));
      }
    }
  }
  sequences_.push_back(sequence);
  steps_.push_back(step);
  for (int id : ids)
    ids_.push_back(static_cast<std::uint16_t>(id));
}

void RoutingTrace::write_binary(const std::string& path) const {
  std::string out(kMagic, sizeof(kMagic));
  put(out, kVersion);
  put(out, static_cast<std::uint32_t>(layers_));
  put(out, static_cast<std::uint32_t>(experts_));
  put(out, static_cast<std::uint32_t>(top_k_));
  put(out, static_cast<std::uint64_t>(records()));
  for (std::int64_t i = 0; i < records(); ++i) {
    put(out, sequences_[i]);
    put(out, steps_[i]);
    for (int layer = 0; layer < layers_; ++layer) {
      for (int j = 0; j < top_k_; ++j)
        put(out, choice(i, layer)[j]);
    }
  }
  put(out, static_cast<std::uint64_t>(XXH3_64bits(out.data(), out.size())));
  write_file(path, out);
}

void RoutingTrace::write_json_lines(const std::string& path) const {
  std::string out = nlohmann::json{{"format", "kjit-routing-trace"},
                                   {"version", kVersion},
                                   {"layers", layers_},
                                   {"experts", experts_},
                                   {"top_k", top_k_}}
                        .dump() +
                    "\n";
  for (std::int64_t i = 0; i < records(); ++i) {
    nlohmann::json layers = nlohmann::json::array();
    for (int layer = 0; layer < layers_; ++layer)
      layers.push_back(std::vector<int>(choice(i, layer), choice(i, layer) + top_k_));
    out += nlohmann::json{{"sequence", sequences_[i]}, {"step", steps_[i]}, {"experts", layers}}
               .dump() +
           "\n";
  }
  write_file(path, out);
}

RoutingTrace RoutingTrace::read(const std::string& path) {
  const std::string bytes = read_file(path);
  if (bytes.size() >= sizeof(kMagic) && std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) == 0)
    return read_binary(bytes, path);
  return read_json_lines(bytes, path);
}

}  // namespace kjit::moe

namespace kjit::moe {

RoutingHistory::RoutingHistory(int layers, int experts, int top_k, std::int64_t capacity)
    : layers_(layers), experts_(experts), top_k_(top_k), capacity_(capacity) {
  RoutingTrace check(layers, experts, top_k);  // the same limits as a trace's
  if (capacity < 1)
    throw InvalidArgument(fmt::format("routing history: capacity must be >= 1, got {}", capacity));
  const auto l = static_cast<std::size_t>(layers), c = static_cast<std::size_t>(capacity);
  written_.assign(l, 0);
  sequences_.assign(l, std::vector<std::uint32_t>(c));
  steps_.assign(l, std::vector<std::uint32_t>(c));
  ids_.assign(l, std::vector<std::uint16_t>(c * static_cast<std::size_t>(top_k)));
}

void RoutingHistory::record(int layer, std::uint32_t step,
                            const std::vector<std::uint32_t>& sequences, const int* ids) {
  if (layer < 0 || layer >= layers_) {
    throw InvalidArgument(
        fmt::format("routing history: layer {} is outside 0..{}", layer, layers_ - 1));
  }
  const std::size_t tokens = sequences.size();
  for (std::size_t i = 0; i < tokens * top_k_; ++i) {
    if (ids[i] < 0 || ids[i] >= experts_) {
      throw InvalidArgument(
          fmt::format("routing history: token {} at layer {} chose expert {} "
                      "(outside 0..{})",
                      i / top_k_, layer, ids[i], experts_ - 1));
    }
  }
  for (std::size_t t = 0; t < tokens; ++t) {
    const auto at = static_cast<std::size_t>(written_[layer] % capacity_);
    sequences_[layer][at] = sequences[t];
    steps_[layer][at] = step;
    for (int j = 0; j < top_k_; ++j)
      ids_[layer][at * top_k_ + j] = static_cast<std::uint16_t>(ids[t * top_k_ + j]);
    ++written_[layer];
  }
}

RoutingTrace RoutingHistory::trace() const {
  RoutingTrace out(layers_, experts_, top_k_);
  // Record r is held by every layer when each layer has written past it and not yet over it.
  std::int64_t first = 0, end = written_[0];
  for (int l = 0; l < layers_; ++l) {
    first = std::max(first, written_[l] - capacity_);
    end = std::min(end, written_[l]);
  }
  std::vector<int> ids(static_cast<std::size_t>(layers_) * top_k_);
  for (std::int64_t r = first; r < end; ++r) {
    const auto at = static_cast<std::size_t>(r % capacity_);
    for (int l = 0; l < layers_; ++l) {
      for (int j = 0; j < top_k_; ++j)
        ids[static_cast<std::size_t>(l) * top_k_ + j] = ids_[l][at * top_k_ + j];
    }
    out.add(sequences_[0][at], steps_[0][at], ids);
  }
  return out;
}

}  // namespace kjit::moe

#include "cache/store/store_entry.hpp"

#include <cstdint>
#include <cstring>

#include <fmt/format.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace kjit::store {
namespace {

constexpr char kMagic[8] = {'k', 'j', 'i', 't', 'k', 'r', 'n', 'l'};
constexpr std::uint32_t kHeaderSize = 48;

class Writer {
 public:
  template <class T>
  void pod(T v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof(v));
  }
  void str(std::string_view s) {
    pod(static_cast<std::uint32_t>(s.size()));
    out.append(s);
  }
  std::string out;
};

// Bounds-checked reads; any overrun marks the reader failed instead of reading past the end.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  template <class T>
  T pod() {
    T v{};
    if (!take(sizeof(T))) return v;
    std::memcpy(&v, in_.data() + pos_ - sizeof(T), sizeof(T));
    return v;
  }
  std::string str() { return bytes(pod<std::uint32_t>()); }
  std::string bytes(std::uint64_t n) {
    if (!take(n)) return {};
    return std::string(in_.substr(pos_ - n, n));
  }
  bool ok() const { return ok_; }
  bool at_end() const { return pos_ == in_.size(); }

 private:
  bool take(std::uint64_t n) {
    if (!ok_ || n > in_.size() - pos_) {
      ok_ = false;
      return false;
    }
    pos_ += n;
    return true;
  }
  std::string_view in_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace

std::string serialize_entry(const CompiledProgram& p, int format_version) {
  Writer payload;
  payload.str(p.description);
  payload.str(p.arch);
  payload.pod(static_cast<std::uint32_t>(p.kernels.size()));
  for (const CompiledKernel& k : p.kernels) {
    payload.str(k.name_expression);
    payload.str(k.lowered_name);
    const ResourceUsage& r = k.resources;
    for (int v : {r.registers, r.static_shared_bytes, r.spill_store_bytes, r.spill_load_bytes,
                  r.stack_frame_bytes, r.barriers, r.serialized_wgmma, k.parameter_count}) {
      payload.pod(static_cast<std::int32_t>(v));
    }
  }
  payload.pod(static_cast<std::uint64_t>(p.cubin.size()));
  payload.out.append(p.cubin);

  Writer file;
  file.out.append(kMagic, sizeof(kMagic));
  file.pod(static_cast<std::uint32_t>(format_version));
  file.pod(kHeaderSize);
  file.pod(p.key.high);
  file.pod(p.key.low);
  file.pod(static_cast<std::uint64_t>(payload.out.size()));
  file.pod(static_cast<std::uint64_t>(XXH3_64bits(payload.out.data(), payload.out.size())));
  file.out.append(payload.out);
  return file.out;
}

std::variant<CompiledProgram, std::string> parse_entry(std::string_view bytes,
                                                       const CacheKey& expected,
                                                       int format_version) {
  if (bytes.size() < kHeaderSize) return fmt::format("truncated header ({} bytes)", bytes.size());
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0)
    return std::string("not a kjit entry");
  Reader h(bytes.substr(sizeof(kMagic)));
  const auto version = h.pod<std::uint32_t>();
  const auto header_size = h.pod<std::uint32_t>();
  CacheKey key;
  key.high = h.pod<std::uint64_t>();
  key.low = h.pod<std::uint64_t>();
  const auto payload_size = h.pod<std::uint64_t>();
  const auto checksum = h.pod<std::uint64_t>();
  if (version != static_cast<std::uint32_t>(format_version)) {
    return fmt::format("format version {} (this kjit reads {})", version, format_version);
  }
  if (header_size != kHeaderSize) return fmt::format("header size {}", header_size);
  if (key != expected) return fmt::format("holds key {}, not {}", key.hex(), expected.hex());
  const std::string_view payload = bytes.substr(kHeaderSize);
  if (payload.size() != payload_size) {
    return fmt::format("payload is {} bytes, header says {}", payload.size(), payload_size);
  }
  if (XXH3_64bits(payload.data(), payload.size()) != checksum) return std::string("bad checksum");

  Reader r(payload);
  CompiledProgram p;
  p.key = key;
  p.description = r.str();
  p.arch = r.str();
  const auto count = r.pod<std::uint32_t>();
  for (std::uint32_t i = 0; i < count && r.ok(); ++i) {
    CompiledKernel k;
    k.name_expression = r.str();
    k.lowered_name = r.str();
    ResourceUsage& u = k.resources;
    for (int* v : {&u.registers, &u.static_shared_bytes, &u.spill_store_bytes, &u.spill_load_bytes,
                   &u.stack_frame_bytes, &u.barriers, &u.serialized_wgmma, &k.parameter_count}) {
      *v = r.pod<std::int32_t>();
    }
    p.kernels.push_back(std::move(k));
  }
  p.cubin = r.bytes(r.pod<std::uint64_t>());
  if (!r.ok() || !r.at_end()) return std::string("malformed payload");
  return p;
}

}  // namespace kjit::store

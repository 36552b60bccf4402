// The self-describing file format of one kernel-store entry:
//   header (48 bytes): magic "kjitkrnl", u32 format version, u32 header size, u64 key high,
//                      u64 key low, u64 payload size, u64 XXH3-64 of the payload
//   payload: description, arch, kernels (name expression, lowered name, resource usage,
//            parameter count), cubin
// Integers are little-endian; strings are u32 length + bytes; the cubin is u64 length + bytes.
#pragma once

#include <string>
#include <string_view>
#include <variant>

#include "kjit/jit.hpp"

namespace kjit::store {

// Bumped whenever the layout of a stored entry or the meaning of a key changes.
inline constexpr int kFormatVersion = 2;  // 2: serialized_wgmma

std::string serialize_entry(const CompiledProgram& program, int format_version);

// The program, or why the bytes are not a valid entry for `expected` (truncated, bad checksum,
// wrong magic, version or key).
std::variant<CompiledProgram, std::string> parse_entry(std::string_view bytes,
                                                       const CacheKey& expected,
                                                       int format_version);

}  // namespace kjit::store

#include "cache/store/kernel_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "cache/store/store_entry.hpp"
#include "util/log.hpp"
#include "util/private_files.hpp"

namespace kjit::store {
namespace fs = std::filesystem;
namespace {

constexpr const char* kEntrySuffix = ".kjit";
constexpr const char* kTempPrefix = ".tmp-";
// A temp file this old belongs to a writer that died before publishing.
constexpr auto kStaleTempAge = std::chrono::hours(1);

// An entry is a cubin and its description: nothing near this size is an entry.
constexpr std::uint64_t kMaxEntryBytes = 256ull << 20;

bool is_temp(const fs::path& p) {
  return p.filename().string().rfind(kTempPrefix, 0) == 0;
}
bool is_entry(const fs::path& p) {
  return p.extension() == kEntrySuffix && !is_temp(p);
}

}  // namespace

KernelStore::KernelStore(fs::path root, std::uint64_t max_bytes, int format_version, bool read_only)
    : folder_(std::move(root) / fmt::format("v{}", format_version)),
      max_bytes_(max_bytes),
      format_version_(format_version),
      read_only_(read_only) {}

fs::path KernelStore::entry_path(const CacheKey& key) const {
  const std::string hex = key.hex();
  return folder_ / hex.substr(0, 2) / (hex + kEntrySuffix);
}

std::optional<CompiledProgram> KernelStore::read(const CacheKey& key) const {
  const fs::path path = entry_path(key);
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(path, ec))) return std::nullopt;
  if (!folders_private(path.parent_path(), false)) return std::nullopt;
  std::string why;
  const std::optional<std::string> bytes = detail::read_trusted_file(path, kMaxEntryBytes, &why);
  if (!bytes) {
    if (!why.empty())
      detail::warn(fmt::format("ignoring cache entry {}: {}; recompiling", path.string(), why));
    return std::nullopt;
  }
  auto parsed = parse_entry(*bytes, key, format_version_);
  if (auto* problem = std::get_if<std::string>(&parsed)) {
    detail::warn(fmt::format("ignoring cache entry {}: {}; recompiling", path.string(), *problem));
    return std::nullopt;
  }
  // LRU: a hit is a use (fails harmlessly where the store cannot be written).
  if (!read_only_) ::utimensat(AT_FDCWD, path.c_str(), nullptr, AT_SYMLINK_NOFOLLOW);
  return std::get<CompiledProgram>(std::move(parsed));
}

bool KernelStore::folders_private(const fs::path& shard, bool create) const {
  for (const fs::path& dir : {folder_.parent_path(), folder_, shard}) {
    if (std::string problem = detail::private_dir_problem(dir, create); !problem.empty()) {
      detail::warn_once("store|" + problem,
                        fmt::format("kernel store {}: {}; fix it with chmod 700 (as its owner) "
                                    "or point KJIT_CACHE_DIR elsewhere",
                                    create ? "not written" : "not read", problem));
      return false;
    }
  }
  return true;
}

bool KernelStore::write(const CompiledProgram& program) const {
  if (read_only_) return false;
  const fs::path final_path = entry_path(program.key);
  if (!folders_private(final_path.parent_path(), true)) return false;
  const std::string bytes = serialize_entry(program, format_version_);
  if (std::string why = detail::write_atomically(final_path, bytes, 0600); !why.empty()) {
    detail::warn(fmt::format("cannot publish cache entry {}: {}", final_path.string(), why));
    return false;
  }
  evict(max_bytes_);
  if (bytes.size() > max_bytes_) {
    detail::warn_once("store|cap", fmt::format("KJIT_CACHE_MAX_BYTES ({} bytes) is smaller than "
                                               "one entry ({} bytes): the kernel store keeps "
                                               "nothing",
                                               max_bytes_, bytes.size()));
  }
  return true;
}

std::vector<fs::path> KernelStore::older_format_folders() const {
  std::vector<fs::path> out;
  std::error_code ec;
  for (int v = 1; v < format_version_; ++v) {
    const fs::path folder = folder_.parent_path() / fmt::format("v{}", v);
    if (fs::is_directory(folder, ec)) out.push_back(folder);
  }
  return out;
}

namespace {

// Entries under `folder`: how many, and their bytes.
std::pair<std::uint64_t, std::uint64_t> count_entries(const fs::path& folder) {
  std::uint64_t entries = 0, bytes = 0;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec) || !is_entry(it->path())) continue;
    ++entries;
    bytes += it->file_size(ec);
  }
  return {entries, bytes};
}

// Removes the entries and temp files under `folder` (nothing else a user may have put there);
// returns how many entries.
std::uint64_t remove_entries(const fs::path& folder) {
  std::uint64_t removed = 0;
  std::error_code ec;
  std::vector<fs::path> doomed;
  for (fs::recursive_directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec) && (is_entry(it->path()) || is_temp(it->path()))) {
      doomed.push_back(it->path());
    }
  }
  for (const fs::path& p : doomed) {
    if (fs::remove(p, ec) && is_entry(p)) ++removed;
  }
  return removed;
}

}  // namespace

KernelStore::Stats KernelStore::stats() const {
  Stats s;
  std::tie(s.entries, s.bytes) = count_entries(folder_);
  for (const fs::path& folder : older_format_folders()) {
    const auto [entries, bytes] = count_entries(folder);
    s.older_format_entries += entries;
    s.older_format_bytes += bytes;
  }
  return s;
}

std::uint64_t KernelStore::clear() const {
  std::uint64_t removed = remove_entries(folder_);
  for (const fs::path& folder : older_format_folders()) {
    removed += remove_entries(folder);
    // Then its shard folders and itself, where nothing else is left in them.
    std::error_code ec;
    for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec))
      fs::remove(it->path(), ec);
    fs::remove(folder, ec);
  }
  return removed;
}

void KernelStore::evict(std::uint64_t max_bytes) const {
  struct Item {
    fs::path path;
    std::uint64_t bytes;
    fs::file_time_type used;
  };
  std::vector<Item> items;
  std::uint64_t total = 0;
  std::error_code ec;
  const auto now = fs::file_time_type::clock::now();
  for (fs::recursive_directory_iterator it(folder_, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const fs::file_time_type used = it->last_write_time(ec);
    if (is_temp(it->path())) {
      if (now - used > kStaleTempAge) fs::remove(it->path(), ec);
      continue;
    }
    if (!is_entry(it->path())) continue;
    items.push_back({it->path(), it->file_size(ec), used});
    total += items.back().bytes;
  }
  if (total <= max_bytes) return;
  std::sort(items.begin(), items.end(),
            [](const Item& a, const Item& b) { return a.used < b.used; });
  for (const Item& item : items) {
    if (total <= max_bytes) break;
    if (fs::remove(item.path, ec)) total -= item.bytes;
  }
}

}  // namespace kjit::store

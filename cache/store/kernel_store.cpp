#include "cache/store/kernel_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>
#include <vector>

#include <fmt/format.h>

#include "cache/store/store_entry.hpp"
#include "util/log.hpp"

namespace kjit::store {
namespace fs = std::filesystem;
namespace {

constexpr const char* kEntrySuffix = ".kjit";
constexpr const char* kTempPrefix = ".tmp-";
// A temp file this old belongs to a writer that died before publishing.
constexpr auto kStaleTempAge = std::chrono::hours(1);

// Closes a descriptor on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

bool written_by_others(const struct stat& st) {
  return st.st_uid != ::geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0;
}

// Creates `dir` with mode 0700 when missing; refuses an existing one that others can write.
std::string ensure_private_dir(const fs::path& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    std::error_code ec;
    fs::create_directories(dir.parent_path(), ec);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return fmt::format("cannot create {}: {}", dir.string(), std::strerror(errno));
    }
    if (::stat(dir.c_str(), &st) != 0) {
      return fmt::format("cannot stat {}: {}", dir.string(), std::strerror(errno));
    }
  }
  if (!S_ISDIR(st.st_mode)) return fmt::format("{} is not a folder", dir.string());
  if (written_by_others(st)) {
    return fmt::format(
        "{} is writable by other users or not owned by this user (mode {:o}, owner "
        "{}); fix it with chmod 700 or point KJIT_CACHE_DIR elsewhere",
        dir.string(), st.st_mode & 07777, st.st_uid);
  }
  return {};
}

bool write_all(int fd, const std::string& bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

std::string temp_name() {
  static std::atomic<unsigned> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{}{}-{}-{:x}{}", kTempPrefix, ::getpid(), counter++, rng(), kEntrySuffix);
}

bool is_temp(const fs::path& p) {
  return p.filename().string().rfind(kTempPrefix, 0) == 0;
}
bool is_entry(const fs::path& p) {
  return p.extension() == kEntrySuffix && !is_temp(p);
}

}  // namespace

KernelStore::KernelStore(fs::path root, std::uint64_t max_bytes, int format_version)
    : folder_(std::move(root) / fmt::format("v{}", format_version)),
      max_bytes_(max_bytes),
      format_version_(format_version) {}

fs::path KernelStore::entry_path(const CacheKey& key) const {
  const std::string hex = key.hex();
  return folder_ / hex.substr(0, 2) / (hex + kEntrySuffix);
}

std::optional<CompiledProgram> KernelStore::read(const CacheKey& key) const {
  const fs::path path = entry_path(key);
  Fd f{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  if (f.fd < 0) {
    if (errno != ENOENT) {
      detail::warn(
          fmt::format("cannot open cache entry {}: {}", path.string(), std::strerror(errno)));
    }
    return std::nullopt;
  }
  struct stat st {};
  if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
  if (written_by_others(st)) {
    detail::warn(
        fmt::format("refusing cache entry {}: writable by other users or not owned by "
                    "this user (mode {:o}, owner {}); recompiling",
                    path.string(), st.st_mode & 07777, st.st_uid));
    return std::nullopt;
  }
  std::string bytes(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(f.fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  bytes.resize(done);
  auto parsed = parse_entry(bytes, key, format_version_);
  if (auto* why = std::get_if<std::string>(&parsed)) {
    detail::warn(fmt::format("ignoring cache entry {}: {}; recompiling", path.string(), *why));
    return std::nullopt;
  }
  ::futimens(f.fd, nullptr);  // LRU: a hit is a use (fails harmlessly on a read-only store)
  return std::get<CompiledProgram>(std::move(parsed));
}

bool KernelStore::usable_for_write() const {
  for (const fs::path& dir : {folder_.parent_path(), folder_}) {
    if (std::string problem = ensure_private_dir(dir); !problem.empty()) {
      detail::warn("kernel store not written: " + problem);
      return false;
    }
  }
  return true;
}

bool KernelStore::write(const CompiledProgram& program) const {
  if (!usable_for_write()) return false;
  const fs::path final_path = entry_path(program.key);
  const fs::path shard = final_path.parent_path();
  if (std::string problem = ensure_private_dir(shard); !problem.empty()) {
    detail::warn("kernel store not written: " + problem);
    return false;
  }
  const fs::path temp = shard / temp_name();
  const std::string bytes = serialize_entry(program, format_version_);
  bool ok = false;
  {
    Fd f{::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)};
    ok = f.fd >= 0 && write_all(f.fd, bytes) && ::fsync(f.fd) == 0;
  }
  if (ok) ok = ::rename(temp.c_str(), final_path.c_str()) == 0;
  if (!ok) {
    detail::warn(fmt::format("cannot publish cache entry {}: {}", final_path.string(),
                             std::strerror(errno)));
    ::unlink(temp.c_str());
    return false;
  }
  evict(max_bytes_);
  return true;
}

KernelStore::Stats KernelStore::stats() const {
  Stats s;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(folder_, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec) || !is_entry(it->path())) continue;
    ++s.entries;
    s.bytes += it->file_size(ec);
  }
  return s;
}

std::uint64_t KernelStore::clear() const {
  std::uint64_t removed = 0;
  std::error_code ec;
  std::vector<fs::path> doomed;
  for (fs::recursive_directory_iterator it(folder_, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file(ec) && (is_entry(it->path()) || is_temp(it->path()))) {
      doomed.push_back(it->path());
    }
  }
  for (const fs::path& p : doomed) {
    if (fs::remove(p, ec) && is_entry(p)) ++removed;
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

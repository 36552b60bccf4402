#include "util/private_files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>

#include <fmt/format.h>

namespace kjit::detail {
namespace fs = std::filesystem;
namespace {

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::string temp_name() {
  static std::atomic<unsigned> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format(".tmp-{}-{}-{:x}", ::getpid(), counter++, rng());
}

}  // namespace

bool trusted_owner_and_mode(uid_t owner, mode_t mode, bool root_ok) {
  return (owner == ::geteuid() || (root_ok && owner == 0)) && (mode & (S_IWGRP | S_IWOTH)) == 0;
}

std::string private_dir_problem(const fs::path& dir, bool create) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    if (!create) return fmt::format("{} does not exist", dir.string());
    std::error_code ec;
    if (dir.has_parent_path()) fs::create_directories(dir.parent_path(), ec);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
      return fmt::format("cannot create {}: {}", dir.string(), std::strerror(errno));
    if (::lstat(dir.c_str(), &st) != 0)
      return fmt::format("cannot stat {}: {}", dir.string(), std::strerror(errno));
  }
  if (S_ISLNK(st.st_mode)) return fmt::format("{} is a symbolic link", dir.string());
  if (!S_ISDIR(st.st_mode)) return fmt::format("{} is not a folder", dir.string());
  if (!trusted_owner_and_mode(st.st_uid, st.st_mode)) {
    return fmt::format(
        "{} is writable by other users or not owned by this user (mode {:o}, owner {})",
        dir.string(), st.st_mode & 07777, st.st_uid);
  }
  return {};
}

std::string write_atomically(const fs::path& path, std::string_view bytes, mode_t mode) {
  const fs::path temp = path.parent_path() / temp_name();
  bool ok = false;
  {
    Fd f{::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)};
    if (f.fd >= 0) {
      std::size_t done = 0;
      while (done < bytes.size()) {
        const ssize_t n = ::write(f.fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += static_cast<std::size_t>(n);
      }
      ok = done == bytes.size() && ::fchmod(f.fd, mode) == 0 && ::fsync(f.fd) == 0;
    }
  }
  if (ok) ok = ::rename(temp.c_str(), path.c_str()) == 0;
  if (ok) return {};
  const std::string why = std::strerror(errno);
  ::unlink(temp.c_str());
  return why;
}

std::optional<std::string> read_trusted_file(const fs::path& path, std::uint64_t max_bytes,
                                             std::string* why) {
  why->clear();
  // O_NONBLOCK: a FIFO planted at the path must not hang the open; O_NOFOLLOW: nor may a link
  // lead elsewhere.
  Fd f{::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC)};
  if (f.fd < 0) {
    if (errno != ENOENT) *why = std::strerror(errno);
    return std::nullopt;
  }
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) {
    *why = std::strerror(errno);
    return std::nullopt;
  }
  if (!S_ISREG(st.st_mode)) {
    *why = "not a regular file";
    return std::nullopt;
  }
  if (!trusted_owner_and_mode(st.st_uid, st.st_mode)) {
    *why = fmt::format("writable by other users or not owned by this user (mode {:o}, owner {})",
                       st.st_mode & 07777, st.st_uid);
    return std::nullopt;
  }
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes) {
    *why = fmt::format("{} bytes, more than any entry holds", st.st_size);
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
  return bytes;
}

}  // namespace kjit::detail

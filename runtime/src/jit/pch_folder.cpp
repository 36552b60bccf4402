#include "jit/pch_folder.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <mutex>

#include "util/log.hpp"
#include "util/private_files.hpp"

namespace kjit::detail {
namespace fs = std::filesystem;
namespace {

bool process_alive(const std::string& name) {
  char* end = nullptr;
  const long pid = std::strtol(name.c_str(), &end, 10);
  if (!end || *end || pid <= 0) return true;  // not ours to judge: leave it
  return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

// Removes this process's folder at exit (NVRTC deletes its files, not the folders).
struct OwnFolder {
  fs::path path;
  ~OwnFolder() {
    std::error_code ec;
    if (!path.empty()) fs::remove_all(path, ec);
  }
};

}  // namespace

std::string pch_folder(const std::string& cache_dir, const CacheKey& closure) {
  if (cache_dir.empty()) return {};
  const fs::path root = fs::path(cache_dir) / "pch";
  const fs::path mine = root / std::to_string(::getpid());
  static std::mutex mutex;
  static OwnFolder own;
  std::lock_guard<std::mutex> lock(mutex);
  if (own.path != mine) {  // first use in this process (or after a fork, or another cache dir)
    for (const fs::path& dir : {fs::path(cache_dir), root, mine}) {
      if (std::string problem = private_dir_problem(dir, true); !problem.empty()) {
        warn_once("pch|" + problem, "NVRTC precompiled headers off: " + problem);
        return {};
      }
    }
    std::error_code ec;
    for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
      if (!process_alive(it->path().filename().string())) fs::remove_all(it->path(), ec);
    }
    own.path = mine;
  }
  const fs::path dir = mine / closure.hex();
  if (std::string problem = private_dir_problem(dir, true); !problem.empty()) {
    warn_once("pch|" + problem, "NVRTC precompiled headers off: " + problem);
    return {};
  }
  return dir.string();
}

}  // namespace kjit::detail

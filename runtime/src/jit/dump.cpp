#include "jit/dump.hpp"

#include <filesystem>
#include <stdexcept>

#include <fmt/format.h>

#include "util/log.hpp"
#include "util/private_files.hpp"

namespace kjit::detail {
namespace fs = std::filesystem;
namespace {

// Keeps names inside the dump folder: "../x" or "/abs" must not escape it.
fs::path safe_relative(const std::string& name) {
  fs::path out;
  for (const fs::path& part : fs::path(name).relative_path()) {
    if (part != ".." && part != ".") out /= part;
  }
  return out.empty() ? fs::path("unnamed") : out;
}

// Every folder on the way is private (0700, this user's); the file replaces whatever sat at
// its path (a planted symlink included) by rename, never by writing through it.
void write_file(const fs::path& root, const fs::path& relative, const std::string& bytes) {
  fs::path dir = root;
  for (const fs::path& part : relative.parent_path()) {
    dir /= part;
    if (std::string problem = private_dir_problem(dir, true); !problem.empty())
      throw std::runtime_error(problem);
  }
  if (std::string why = write_atomically(root / relative, bytes, 0600); !why.empty())
    throw std::runtime_error(fmt::format("cannot write {}: {}", (root / relative).string(), why));
}

void warn_dump(const std::string& problem) {
  warn_once("dump|" + problem, "KJIT_DUMP_DIR: " + problem);
}

}  // namespace

void dump_compile(const std::string& dump_dir, const CacheKey& key, const CompilePlan& plan,
                  const nvrtc::Result* result, const std::string& log) {
  try {
    const fs::path root(dump_dir);
    if (std::string problem = private_dir_problem(root, true); !problem.empty()) {
      warn_dump(problem + "; nothing dumped");
      return;
    }
    const fs::path dir = key.hex();
    const nvrtc::Request& req = plan.request;
    write_file(root, dir / "description.txt", plan.description + "\n");
    std::string options;
    for (const std::string& o : req.options)
      options += o + "\n";
    write_file(root, dir / "options.txt", options);
    write_file(root, dir / "source" / safe_relative(req.program_name), req.source);
    for (const nvrtc::Header& h : req.headers)
      write_file(root, dir / "source" / safe_relative(h.include_name), h.text);
    write_file(root, dir / "log.txt", log);
    if (result) {
      if (!result->ptx.empty()) write_file(root, dir / "kernel.ptx", result->ptx);
      write_file(root, dir / "kernel.cubin", result->cubin);
    }
  } catch (const std::exception& e) {
    warn_dump(e.what());
  }
}

}  // namespace kjit::detail

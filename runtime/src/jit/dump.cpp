#include "jit/dump.hpp"

#include <filesystem>
#include <fstream>

#include "util/log.hpp"

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

void write_file(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  if (!out) throw fs::filesystem_error("cannot write", path, std::error_code());
}

}  // namespace

void dump_compile(const std::string& dump_dir, const CacheKey& key, const CompilePlan& plan,
                  const nvrtc::Result* result, const std::string& log) {
  try {
    const fs::path dir = fs::path(dump_dir) / key.hex();
    const nvrtc::Request& req = plan.request;
    write_file(dir / "description.txt", plan.description + "\n");
    std::string options;
    for (const std::string& o : req.options)
      options += o + "\n";
    write_file(dir / "options.txt", options);
    write_file(dir / "source" / safe_relative(req.program_name), req.source);
    for (const nvrtc::Header& h : req.headers) {
      write_file(dir / "source" / safe_relative(h.include_name), h.text);
    }
    write_file(dir / "log.txt", log);
    if (result) {
      if (!result->ptx.empty()) write_file(dir / "kernel.ptx", result->ptx);
      write_file(dir / "kernel.cubin", result->cubin);
    }
  } catch (const std::exception& e) {
    warn(std::string("KJIT_DUMP_DIR: ") + e.what());
  }
}

}  // namespace kjit::detail

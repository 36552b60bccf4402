#include "nvrtc/include_paths.hpp"

#include <dlfcn.h>
#include <nvrtc.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <fmt/format.h>

#include "kjit/error.hpp"

namespace kjit::nvrtc {
namespace fs = std::filesystem;
namespace {

bool has_headers(const fs::path& dir) {
  std::error_code ec;
  return fs::exists(dir / "cuda_fp16.h", ec);
}

std::vector<std::string> discover() {
  std::vector<fs::path> candidates;
  for (const char* var : {"CUDA_HOME", "CUDA_PATH"}) {
    if (const char* v = std::getenv(var); v && *v) candidates.push_back(fs::path(v) / "include");
  }
  candidates.push_back(KJIT_BUILD_CUDA_INCLUDE_DIR);
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&nvrtcVersion), &info) && info.dli_fname) {
    // lib64/libnvrtc.so -> include; targets/x86_64-linux/lib -> targets/x86_64-linux/include
    const fs::path lib_dir = fs::path(info.dli_fname).parent_path();
    candidates.push_back(lib_dir.parent_path() / "include");
    candidates.push_back(lib_dir.parent_path().parent_path() / "include");
  }
  std::string tried;
  for (const fs::path& dir : candidates) {
    if (has_headers(dir)) {
      std::vector<std::string> dirs{dir.string()};
      std::error_code ec;
      if (fs::is_directory(dir / "cccl", ec)) dirs.push_back((dir / "cccl").string());
      return dirs;
    }
    tried += "\n  " + dir.string();
  }
  throw Error("CUDA headers not found (no cuda_fp16.h); set CUDA_HOME to the toolkit. Tried:" +
              tried);
}

std::string read_define(const fs::path& file, const std::string& macro) {
  std::ifstream in(file);
  std::string line;
  const std::regex re("^\\s*#\\s*define\\s+" + macro + "\\s+(\\S+)");
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, re)) return m[1].str();
  }
  return "none";
}

}  // namespace

const std::vector<std::string>& cuda_include_dirs() {
  static const std::vector<std::string> dirs = discover();
  return dirs;
}

const std::string& toolkit_fingerprint() {
  static const std::string fingerprint = [] {
    const fs::path inc = cuda_include_dirs().front();
    const fs::path cccl = cuda_include_dirs().size() > 1 ? fs::path(cuda_include_dirs()[1]) : inc;
    return fmt::format("cuda={} cccl={}", read_define(inc / "cuda.h", "CUDA_VERSION"),
                       read_define(cccl / "cuda" / "std" / "__cccl" / "version.h", "CCCL_VERSION"));
  }();
  return fingerprint;
}

}  // namespace kjit::nvrtc

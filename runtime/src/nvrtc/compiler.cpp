#include "nvrtc/compiler.hpp"

#include <nvrtc.h>

#include <chrono>
#include <memory>
#include <regex>
#include <sstream>

#include <fmt/format.h>

#include "kjit/error.hpp"
#include "nvrtc/ptxas_report.hpp"

namespace kjit::nvrtc {
namespace {

void check(nvrtcResult r, const char* what) {
  if (r != NVRTC_SUCCESS) throw Error(fmt::format("{} failed: {}", what, nvrtcGetErrorString(r)));
}

struct ProgramDeleter {
  void operator()(_nvrtcProgram* p) const { nvrtcDestroyProgram(&p); }
};
using ProgramPtr = std::unique_ptr<_nvrtcProgram, ProgramDeleter>;

std::string get_log(nvrtcProgram prog) {
  std::size_t size = 0;
  if (nvrtcGetProgramLogSize(prog, &size) != NVRTC_SUCCESS || size <= 1) return {};
  std::string log(size, '\0');
  if (nvrtcGetProgramLog(prog, log.data()) != NVRTC_SUCCESS) return {};
  log.resize(size - 1);  // drop the terminating NUL
  return log;
}

// Finds the first "file(line): error" in the log and shows that file's lines around it.
std::string excerpt_for_first_error(const Request& req, const std::string& log) {
  static const std::regex first_error(R"(^(.*)\((\d+)\): (catastrophic )?error)");
  std::istringstream in(log);
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (!std::regex_search(line, m, first_error)) continue;
    const std::string file = m[1].str();
    const int lineno = std::stoi(m[2].str());
    auto ends_with = [&](const std::string& name) {
      return file.size() >= name.size() &&
             file.compare(file.size() - name.size(), name.size(), name) == 0;
    };
    if (ends_with(req.program_name)) {
      return fmt::format("{}:\n{}", req.program_name, numbered_excerpt(req.source, lineno));
    }
    for (const Header& h : req.headers) {
      if (ends_with(h.include_name)) {
        return fmt::format("{}:\n{}", h.include_name, numbered_excerpt(h.text, lineno));
      }
    }
    return fmt::format("{} (line {}: source not held by kjit)", file, lineno);
  }
  return "(no file:line error in the log)";
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (std::size_t i = 0; i < v.size(); ++i)
    out += (i ? sep : "") + v[i];
  return out;
}

}  // namespace

std::pair<int, int> version() {
  static const std::pair<int, int> v = [] {
    int major = 0, minor = 0;
    nvrtcVersion(&major, &minor);
    return std::pair<int, int>{major, minor};
  }();
  return v;
}

std::string version_text() {
  return fmt::format("{}.{}", version().first, version().second);
}

const std::vector<int>& supported_archs() {
  static const std::vector<int> archs = [] {
    int n = 0;
    std::vector<int> out;
    if (nvrtcGetNumSupportedArchs(&n) == NVRTC_SUCCESS && n > 0) {
      out.resize(static_cast<std::size_t>(n));
      if (nvrtcGetSupportedArchs(out.data()) != NVRTC_SUCCESS) out.clear();
    }
    return out;
  }();
  return archs;
}

std::string numbered_excerpt(const std::string& text, int line, int context) {
  std::istringstream in(text);
  std::string s;
  std::string out;
  for (int n = 1; std::getline(in, s); ++n) {
    if (n < line - context) continue;
    if (n > line + context) break;
    out += fmt::format("{} {:>5} | {}\n", n == line ? '>' : ' ', n, s);
  }
  return out;
}

Result compile(const Request& req) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<const char*> header_texts, header_names;
  for (const Header& h : req.headers) {
    header_texts.push_back(h.text.c_str());
    header_names.push_back(h.include_name.c_str());
  }
  nvrtcProgram raw = nullptr;
  check(nvrtcCreateProgram(&raw, req.source.c_str(), req.program_name.c_str(),
                           static_cast<int>(req.headers.size()), header_texts.data(),
                           header_names.data()),
        "nvrtcCreateProgram");
  ProgramPtr prog(raw);
  for (const std::string& expr : req.name_expressions) {
    check(nvrtcAddNameExpression(raw, expr.c_str()), "nvrtcAddNameExpression");
  }
  std::vector<const char*> opts;
  for (const std::string& o : req.options)
    opts.push_back(o.c_str());

  const nvrtcResult compiled = nvrtcCompileProgram(raw, static_cast<int>(opts.size()), opts.data());
  Result out;
  out.log = get_log(raw);
  if (compiled != NVRTC_SUCCESS) {
    std::string excerpt = excerpt_for_first_error(req, out.log);
    std::string message = fmt::format(
        "NVRTC could not compile {} ({}).\n--- log ---\n{}\n--- options ---\n{}\n--- source "
        "around the first error ---\n{}",
        req.program_name, nvrtcGetErrorString(compiled), out.log, join(req.options, " "), excerpt);
    throw CompileError(message, out.log, req.options, excerpt);
  }

  std::size_t size = 0;
  check(nvrtcGetCUBINSize(raw, &size), "nvrtcGetCUBINSize");
  if (size == 0) {
    throw Error(
        fmt::format("NVRTC produced no cubin for {}: the options must name a real "
                    "architecture (sm_XY), not a virtual one",
                    req.program_name));
  }
  out.cubin.resize(size);
  check(nvrtcGetCUBIN(raw, out.cubin.data()), "nvrtcGetCUBIN");
  if (nvrtcGetPTXSize(raw, &size) == NVRTC_SUCCESS && size > 1) {
    out.ptx.resize(size);
    if (nvrtcGetPTX(raw, out.ptx.data()) == NVRTC_SUCCESS) {
      out.ptx.resize(size - 1);
    } else {
      out.ptx.clear();
    }
  }
  for (const std::string& expr : req.name_expressions) {
    const char* lowered = nullptr;
    check(nvrtcGetLoweredName(raw, expr.c_str(), &lowered), "nvrtcGetLoweredName");
    out.lowered_names.emplace_back(lowered);
  }
  out.resources = parse_ptxas_report(out.log);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace kjit::nvrtc

#include "nvrtc/ptxas_report.hpp"

#include <regex>
#include <sstream>
#include <string>

#include <fmt/format.h>

namespace kjit {

std::string ResourceUsage::summary() const {
  return fmt::format("{} regs, {} B smem, {} B stack, {}/{} B spill st/ld{}", registers,
                     static_shared_bytes, stack_frame_bytes, spill_store_bytes, spill_load_bytes,
                     serialized_wgmma ? ", wgmma serialised" : "");
}

namespace nvrtc {

std::map<std::string, ResourceUsage> parse_ptxas_report(std::string_view log) {
  // ptxas info    : Compiling entry function '_Z5saxpyifPKfPf' for 'sm_90a'
  // ptxas info    : Function properties for _Z5saxpyifPKfPf
  //     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
  // ptxas info    : Used 10 registers, used 0 barriers, 4096 bytes smem, 380 bytes cmem[0]
  static const std::regex entry_re(R"(Compiling entry function '([^']+)')");
  static const std::regex props_re(R"(Function properties for (\S+))");
  static const std::regex frame_re(
      R"((\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads)");
  static const std::regex used_re(R"(Used (\d+) registers)");
  static const std::regex barriers_re(R"(used (\d+) barriers)");
  static const std::regex smem_re(R"((\d+) bytes smem)");
  // ptxas info    : (C7520) Potential Performance Loss: wgmma.mma_async instructions are
  // serialized due to ... in the function '_Z...'   (C7512 says "for the function")
  static const std::regex serialized_re(
      R"(wgmma\.mma_async instructions are serialized.*function '([^']+)')");

  std::map<std::string, ResourceUsage> out;
  std::string entry;       // the entry function the next "Used" line belongs to
  std::string properties;  // the function the next stack-frame line belongs to
  std::istringstream in{std::string(log)};
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    if (std::regex_search(line, m, serialized_re)) {
      // Printed before the function's "Compiling entry function" line.
      out[m[1].str()].serialized_wgmma = 1;
    } else if (std::regex_search(line, m, entry_re)) {
      entry = m[1].str();
      out[entry];
    } else if (std::regex_search(line, m, props_re)) {
      properties = m[1].str();
    } else if (std::regex_search(line, m, frame_re)) {
      // Only entry functions are reported; a non-inlined callee's frame is its caller's problem
      // and shows up in the caller's own line.
      auto it = out.find(properties);
      if (it != out.end()) {
        it->second.stack_frame_bytes = std::stoi(m[1].str());
        it->second.spill_store_bytes = std::stoi(m[2].str());
        it->second.spill_load_bytes = std::stoi(m[3].str());
      }
    } else if (std::regex_search(line, m, used_re)) {
      auto it = out.find(entry);
      if (it == out.end()) continue;
      it->second.registers = std::stoi(m[1].str());
      if (std::regex_search(line, m, barriers_re)) it->second.barriers = std::stoi(m[1].str());
      if (std::regex_search(line, m, smem_re)) {
        it->second.static_shared_bytes = std::stoi(m[1].str());
      }
    }
  }
  return out;
}

}  // namespace nvrtc
}  // namespace kjit

// `kjit info`: versions, devices, the kernel store and this process's counters. Works without a
// driver (it says so) so that it can diagnose a machine.
#include <cstdlib>
#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cache/store/kernel_store.hpp"
#include "jit/compile_plan.hpp"
#include "jit/settings.hpp"
#include "jit/template_tree.hpp"
#include "kjit/device.hpp"
#include "kjit/jit.hpp"
#include "nvrtc/include_paths.hpp"
#include "tools/commands.hpp"
#include "util/human_bytes.hpp"

namespace kjit::tools {
namespace {

const char* mode_name(detail::CacheMode m) {
  switch (m) {
    case detail::CacheMode::Off:
      return "off";
    case detail::CacheMode::Read:
      return "read";
    case detail::CacheMode::ReadWrite:
      return "readwrite";
  }
  return "?";
}

nlohmann::json gather() {
  nlohmann::json j;
  j["kjit"] = version();
  const auto [nv_major, nv_minor] = nvrtc_version();
  j["nvrtc"] = fmt::format("{}.{}", nv_major, nv_minor);
  try {
    j["cuda_include_dirs"] = nvrtc::cuda_include_dirs();
    j["toolkit"] = nvrtc::toolkit_fingerprint();
  } catch (const std::exception& e) {
    j["cuda_include_dirs"] = nlohmann::json::array();
    j["toolkit"] = std::string("not found: ") + e.what();
  }
  std::string reason;
  if (driver_available(&reason)) {
    const int v = driver_version();
    j["driver"] = {{"available", true}, {"version", fmt::format("{}.{}", v / 1000, v % 1000 / 10)}};
    nlohmann::json devices = nlohmann::json::array();
    for (int i = 0; i < device_count(); ++i) {
      const DeviceInfo d = device_info(i);
      devices.push_back({{"ordinal", i},
                         {"name", d.name},
                         {"arch", d.arch()},
                         {"sms", d.sm_count},
                         {"memory_bytes", d.total_memory},
                         {"shared_per_block_optin", d.max_shared_memory_per_block_optin},
                         {"l2_bytes", d.l2_bytes}});
    }
    j["devices"] = devices;
  } else {
    j["driver"] = {{"available", false}, {"reason", reason}};
    j["devices"] = nlohmann::json::array();
  }
  const detail::Settings s = detail::current_settings();
  const store::KernelStore store = detail::kernel_store(s);
  const store::KernelStore::Stats st = store.stats();
  j["kernel_store"] = {{"folder", store.folder().string()},
                       {"mode", mode_name(s.cache_mode)},
                       {"entries", st.entries},
                       {"bytes", st.bytes},
                       {"max_bytes", s.cache_max_bytes},
                       {"strict_no_jit", s.no_jit}};
  const char* template_dir = std::getenv("KJIT_TEMPLATE_DIR");
  j["templates"] = {{"embedded", detail::embedded_template_paths().size()},
                    {"override_dir", template_dir ? template_dir : ""}};
  const Counters c = counters();
  j["counters"] = {{"memory_hits", c.memory_hits},
                   {"disk_hits", c.disk_hits},
                   {"compiles", c.compiles},
                   {"compile_seconds", c.compile_seconds}};
  return j;
}

void print_text(const nlohmann::json& j) {
  std::cout << fmt::format("kjit {}\nNVRTC {}\n", j["kjit"].get<std::string>(),
                           j["nvrtc"].get<std::string>());
  std::string dirs;
  for (const auto& d : j["cuda_include_dirs"])
    dirs += " " + d.get<std::string>();
  std::cout << fmt::format("CUDA headers:{} ({})\n", dirs, j["toolkit"].get<std::string>());
  const auto& drv = j["driver"];
  if (drv["available"].get<bool>()) {
    std::cout << fmt::format("driver: CUDA {}, {} device(s)\n", drv["version"].get<std::string>(),
                             j["devices"].size());
    for (const auto& d : j["devices"]) {
      std::cout << fmt::format(
          "  device {}: {}, {}, {} SMs, {} memory, {} shared/block, {} L2\n",
          d["ordinal"].get<int>(), d["name"].get<std::string>(), d["arch"].get<std::string>(),
          d["sms"].get<int>(), detail::human_bytes(d["memory_bytes"].get<std::uint64_t>()),
          detail::human_bytes(d["shared_per_block_optin"].get<std::uint64_t>()),
          detail::human_bytes(d["l2_bytes"].get<std::uint64_t>()));
    }
  } else {
    std::cout << fmt::format("driver: none ({}); CPU features (compile, precompile, cache) work\n",
                             drv["reason"].get<std::string>());
  }
  const auto& ks = j["kernel_store"];
  std::cout << fmt::format("kernel store: {} (mode {}{})\n  entries: {}, size: {} of {} cap\n",
                           ks["folder"].get<std::string>(), ks["mode"].get<std::string>(),
                           ks["strict_no_jit"].get<bool>() ? ", KJIT_NO_JIT" : "",
                           ks["entries"].get<std::uint64_t>(),
                           detail::human_bytes(ks["bytes"].get<std::uint64_t>()),
                           detail::human_bytes(ks["max_bytes"].get<std::uint64_t>()));
  const std::string override_dir = j["templates"]["override_dir"].get<std::string>();
  std::cout << fmt::format("templates: {} embedded{}\n", j["templates"]["embedded"].get<int>(),
                           override_dir.empty() ? "" : ", overridden by " + override_dir);
  const auto& c = j["counters"];
  std::cout << fmt::format(
      "counters (this process): {} memory hits, {} disk hits, {} compiles, {:.3f} s compiling\n",
      c["memory_hits"].get<std::uint64_t>(), c["disk_hits"].get<std::uint64_t>(),
      c["compiles"].get<std::uint64_t>(), c["compile_seconds"].get<double>());
}

}  // namespace

void add_info_command(CLI::App& app, int* exit_code) {
  CLI::App* info = app.add_subcommand("info", "Versions, devices, kernel store and counters");
  auto json = std::make_shared<bool>(false);
  info->add_flag("--json", *json, "Print one JSON object");
  info->callback([exit_code, json] {
    const nlohmann::json j = gather();
    if (*json) {
      std::cout << j.dump(2) << "\n";
    } else {
      print_text(j);
    }
    *exit_code = 0;
  });
}

}  // namespace kjit::tools

#include "cache/cache_cli.hpp"

#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cache/kernel_store.hpp"
#include "jit/compile_plan.hpp"
#include "jit/settings.hpp"
#include "util/human_bytes.hpp"

namespace kjit::cache {
namespace {

KernelStore current_store() {
  const detail::Settings s = detail::current_settings();
  return KernelStore(s.cache_dir, s.cache_max_bytes, detail::kStoreFormatVersion);
}

}  // namespace

void add_cache_commands(CLI::App& app, int* exit_code) {
  CLI::App* cache = app.add_subcommand("cache", "Inspect and manage kjit's caches");
  cache->require_subcommand(1);

  CLI::App* stats = cache->add_subcommand("stats", "Kernel store folder, entry count and size");
  auto json = std::make_shared<bool>(false);
  stats->add_flag("--json", *json, "Print one JSON object");
  stats->callback([exit_code, json] {
    const detail::Settings s = detail::current_settings();
    const KernelStore store = current_store();
    const KernelStore::Stats st = store.stats();
    if (*json) {
      nlohmann::json j = {{"folder", store.folder().string()},
                          {"entries", st.entries},
                          {"bytes", st.bytes},
                          {"max_bytes", s.cache_max_bytes}};
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << fmt::format("kernel store: {}\nentries:      {}\nsize:         {} of {} cap\n",
                               store.folder().string(), st.entries, detail::human_bytes(st.bytes),
                               detail::human_bytes(s.cache_max_bytes));
    }
    *exit_code = 0;
  });

  CLI::App* clear = cache->add_subcommand("clear", "Remove every kernel store entry");
  clear->callback([exit_code] {
    const KernelStore store = current_store();
    const std::uint64_t removed = store.clear();
    std::cout << fmt::format("removed {} entr{} from {}\n", removed, removed == 1 ? "y" : "ies",
                             store.folder().string());
    *exit_code = 0;
  });
}

}  // namespace kjit::cache

// `kjit cache`: the kernel store (stats, clear) and the tuning database's results (ls, show,
// pin, unpin, invalidate, export, import, prune, misses).
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cache/store/kernel_store.hpp"
#include "cache/tuning/tuning_db.hpp"
#include "jit/settings.hpp"
#include "kjit/error.hpp"
#include "kjit/jit.hpp"
#include "ops/registry.hpp"
#include "tools/commands.hpp"
#include "util/environment.hpp"
#include "util/human_bytes.hpp"

namespace kjit::tools {
namespace {

using store::KernelStore;
using tuning::Best;
using tuning::TuningDb;

KernelStore current_store() {
  return detail::kernel_store(detail::current_settings());
}

// Reading commands never create a database that is not there.
std::unique_ptr<TuningDb> open_db(bool write) {
  const std::string path = tuning::default_database_path();
  if (!write && !std::filesystem::exists(path)) return nullptr;
  return std::make_unique<TuningDb>(path,
                                    write ? TuningDb::Mode::ReadWrite : TuningDb::Mode::ReadOnly);
}

nlohmann::json to_json(const Best& b) {
  nlohmann::json config = nlohmann::json::parse(b.config, nullptr, false);
  return {{"id", b.id},
          {"op", b.key.op},
          {"template_hash", b.key.template_hash},
          {"problem_key", b.key.problem_key},
          {"dtype", b.key.dtype},
          {"sm_arch", b.key.sm_arch},
          {"nvrtc", b.key.nvrtc},
          {"config", config.is_discarded() ? nlohmann::json(b.config) : config},
          {"median_us", b.median_us},
          {"runner_up_us", b.runner_up_us ? nlohmann::json(*b.runner_up_us) : nlohmann::json()},
          {"default_us", b.default_us ? nlohmann::json(*b.default_us) : nlohmann::json()},
          {"verified", b.verified},
          {"state", b.state},
          {"gpu_name", b.provenance.gpu_name},
          {"driver", b.provenance.driver},
          {"kjit_version", b.provenance.kjit_version},
          {"timing_policy", b.provenance.timing_policy},
          {"origin", b.provenance.origin},
          {"updated_at", b.updated_at}};
}

Best from_json(const nlohmann::json& j, const std::string& origin) {
  Best b;
  b.key = {j.at("op"),    j.at("template_hash"), j.at("problem_key"),
           j.at("dtype"), j.at("sm_arch"),       j.at("nvrtc")};
  b.config = j.at("config").is_string() ? j.at("config").get<std::string>()
                                        : tuning::config_json(j.at("config").get<tuning::Config>());
  b.median_us = j.at("median_us");
  if (!j.value("runner_up_us", nlohmann::json()).is_null()) b.runner_up_us = j.at("runner_up_us");
  if (!j.value("default_us", nlohmann::json()).is_null()) b.default_us = j.at("default_us");
  b.verified = j.value("verified", false);
  b.provenance = {j.value("gpu_name", ""), j.value("driver", ""), j.value("kjit_version", ""),
                  j.value("timing_policy", ""), origin};
  b.updated_at = j.value("updated_at", 0);
  return b;
}

std::string speedup(const Best& b) {
  return b.default_us && b.median_us > 0 ? fmt::format("{:.2f}x", *b.default_us / b.median_us)
                                         : "-";
}

void print_table(const std::vector<Best>& rows) {
  std::cout << fmt::format("{:>4}  {:<13} {:<5} {:<24} {:<7} {:<52} {:>9} {:>8}  {:<7} {}\n", "id",
                           "op", "dtype", "shape", "arch", "config", "us", "speedup", "state",
                           "origin");
  for (const Best& b : rows) {
    std::cout << fmt::format("{:>4}  {:<13} {:<5} {:<24} {:<7} {:<52} {:>9.2f} {:>8}  {:<7} {}\n",
                             b.id, b.key.op, b.key.dtype, b.key.problem_key, b.key.sm_arch,
                             b.config, b.median_us, speedup(b), b.state, b.provenance.origin);
  }
}

std::int64_t parse_id(const std::string& text) {
  try {
    std::size_t used = 0;
    const long long id = std::stoll(text, &used);
    if (used == text.size() && id > 0) return id;
  } catch (const std::exception&) {
  }
  throw InvalidArgument("\"" + text + "\" is not a result id (see kjit cache ls)");
}

}  // namespace

void add_cache_command(CLI::App& app, int* exit_code) {
  CLI::App* cache =
      app.add_subcommand("cache", "Inspect and manage the kernel store and the tuning database");
  cache->require_subcommand(1);

  auto json = std::make_shared<bool>(false);
  CLI::App* stats = cache->add_subcommand("stats", "Kernel store and tuning database summary");
  stats->add_flag("--json", *json, "Print one JSON object");
  stats->callback([exit_code, json] {
    const detail::Settings s = detail::current_settings();
    const KernelStore store = current_store();
    const KernelStore::Stats st = store.stats();
    nlohmann::json j = {{"folder", store.folder().string()},
                        {"entries", st.entries},
                        {"bytes", st.bytes},
                        {"max_bytes", s.cache_max_bytes}};
    nlohmann::json t = {{"path", tuning::default_database_path()}, {"exists", false}};
    if (auto db = open_db(false)) {
      const TuningDb::Stats ts = db->stats();
      t = {{"path", db->path()},
           {"exists", true},
           {"schema", db->schema_version()},
           {"results", ts.best},
           {"pinned", ts.pinned},
           {"stale", ts.stale},
           {"trials", ts.trials},
           {"failed_trials", ts.failed_trials},
           {"misses", ts.misses}};
    }
    j["tuning_db"] = t;
    if (*json) {
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << fmt::format("kernel store: {}\nentries:      {}\nsize:         {} of {} cap\n",
                               store.folder().string(), st.entries, detail::human_bytes(st.bytes),
                               detail::human_bytes(s.cache_max_bytes));
      if (t["exists"].get<bool>()) {
        std::cout << fmt::format(
            "tuning db:    {} (schema {})\nresults:      {} ({} pinned, {} stale)\ntrials:       "
            "{} ({} failed)\nmisses:       {}\n",
            t["path"].get<std::string>(), t["schema"].get<int>(), t["results"].get<int>(),
            t["pinned"].get<int>(), t["stale"].get<int>(), t["trials"].get<int>(),
            t["failed_trials"].get<int>(), t["misses"].get<int>());
      } else {
        std::cout << fmt::format("tuning db:    {} (none yet)\n", t["path"].get<std::string>());
      }
    }
    *exit_code = 0;
  });

  CLI::App* clear = cache->add_subcommand("clear", "Remove every kernel store entry");
  clear->callback([exit_code] {
    const detail::Settings settings = detail::current_settings();
    if (settings.cache_mode != detail::CacheMode::ReadWrite) {
      throw InvalidArgument(
          fmt::format("KJIT_CACHE={}: the kernel store is not written in this "
                      "mode, so `kjit cache clear` removes nothing",
                      detail::env("KJIT_CACHE")));
    }
    const KernelStore store = detail::kernel_store(settings);
    const std::uint64_t removed = store.clear();
    std::cout << fmt::format("removed {} entr{} from {}\n", removed, removed == 1 ? "y" : "ies",
                             store.folder().string());
    *exit_code = 0;
  });

  auto filter = std::make_shared<tuning::BestFilter>();
  auto ls_json = std::make_shared<bool>(false);
  CLI::App* ls = cache->add_subcommand("ls", "List tuned results");
  ls->add_option("--op", filter->op, "Only this op");
  ls->add_option("--arch", filter->sm_arch, "Only this arch, e.g. sm_90a");
  ls->add_option("--state", filter->state, "Only this state: valid, stale, pinned");
  ls->add_flag("--json", *ls_json, "Print a JSON array");
  ls->callback([exit_code, filter, ls_json] {
    std::vector<Best> rows;
    if (auto db = open_db(false)) rows = db->list(*filter);
    if (*ls_json) {
      nlohmann::json j = nlohmann::json::array();
      for (const Best& b : rows)
        j.push_back(to_json(b));
      std::cout << j.dump(2) << "\n";
    } else {
      print_table(rows);
    }
    *exit_code = 0;
  });

  auto id_text = std::make_shared<std::string>();
  CLI::App* show = cache->add_subcommand("show", "A result and every trial of its key");
  show->add_option("id", *id_text, "Result id (kjit cache ls)")->required();
  show->callback([exit_code, id_text] {
    auto db = open_db(false);
    const std::int64_t id = parse_id(*id_text);
    const std::optional<Best> b = db ? db->best_by_id(id) : std::nullopt;
    if (!b) throw InvalidArgument(fmt::format("no result with id {}", id));
    print_table({*b});
    std::cout << fmt::format(
        "\nmeasured on {} (driver {}, kjit {}), {}; runner-up {}, default {}\n\n",
        b->provenance.gpu_name, b->provenance.driver, b->provenance.kjit_version,
        b->provenance.timing_policy,
        b->runner_up_us ? fmt::format("{:.2f} us", *b->runner_up_us) : "-",
        b->default_us ? fmt::format("{:.2f} us", *b->default_us) : "-");
    std::cout << fmt::format("{:<52} {:<14} {:>9} {:>9} {:>9} {:>7}  {}\n", "config", "status",
                             "median", "p20", "p80", "samples", "error");
    auto us = [](const std::optional<double>& v) { return v ? fmt::format("{:.2f}", *v) : "-"; };
    for (const tuning::Trial& t : db->trials(b->key)) {
      std::cout << fmt::format("{:<52} {:<14} {:>9} {:>9} {:>9} {:>7}  {}\n", t.config, t.status,
                               us(t.median_us), us(t.p20_us), us(t.p80_us), t.samples,
                               t.error.substr(0, 80));
    }
    *exit_code = 0;
  });

  struct StateVerb {
    const char* verb;
    const char* state;
    const char* done;
    const char* help;
  };
  for (const StateVerb& v :
       {StateVerb{"pin", "pinned", "pinned", "Pin a result: tuning never replaces it"},
        StateVerb{"unpin", "valid", "unpinned", "Unpin a result"},
        StateVerb{"invalidate", "stale", "marked stale",
                  "Mark a result stale: lookups skip it, the next tune replaces it"}}) {
    auto id = std::make_shared<std::string>();
    CLI::App* cmd = cache->add_subcommand(v.verb, v.help);
    cmd->add_option("id", *id, "Result id (kjit cache ls)")->required();
    cmd->callback([exit_code, id, v] {
      auto db = open_db(true);
      const std::int64_t n = parse_id(*id);
      if (!db->set_state(n, v.state)) throw InvalidArgument(fmt::format("no result with id {}", n));
      std::cout << fmt::format("result {} {}\n", n, v.done);
      *exit_code = 0;
    });
  }

  auto file = std::make_shared<std::string>();
  CLI::App* exp =
      cache->add_subcommand("export", "Write every result, with its environment, as JSON");
  exp->add_option("file", *file, "Output file")->required();
  exp->callback([exit_code, file] {
    nlohmann::json rows = nlohmann::json::array();
    if (auto db = open_db(false)) {
      for (const Best& b : db->list({}))
        rows.push_back(to_json(b));
    }
    const nlohmann::json j = {
        {"format", "kjit-tuning-results"}, {"version", 1}, {"kjit", version()}, {"rows", rows}};
    std::ofstream out(*file);
    out << j.dump(2) << "\n";
    if (!out) throw InvalidArgument("cannot write " + *file);
    std::cout << fmt::format("exported {} result(s) to {}\n", rows.size(), *file);
    *exit_code = 0;
  });

  auto in_file = std::make_shared<std::string>();
  CLI::App* imp =
      cache->add_subcommand("import", "Merge exported results (they lose to local ones)");
  imp->add_option("file", *in_file, "A file written by kjit cache export")->required();
  imp->callback([exit_code, in_file] {
    std::ifstream in(*in_file);
    if (!in) throw InvalidArgument("cannot read " + *in_file);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
      if (j.value("format", "") != "kjit-tuning-results") {
        throw InvalidArgument(*in_file + " is not a kjit tuning export");
      }
    } catch (const nlohmann::json::exception& e) {
      throw InvalidArgument(fmt::format("{}: {}", *in_file, e.what()));
    }
    auto db = open_db(true);
    const std::string origin = "import:" + std::filesystem::path(*in_file).filename().string();
    int inserted = 0, replaced = 0, kept = 0;
    for (const nlohmann::json& row : j.at("rows")) {
      Best b;
      try {
        b = from_json(row, origin);
      } catch (const nlohmann::json::exception& e) {
        throw InvalidArgument(fmt::format("{}: a row is malformed: {}", *in_file, e.what()));
      }
      switch (db->import_best(b)) {
        case tuning::Upsert::Inserted:
          ++inserted;
          break;
        case tuning::Upsert::Replaced:
          ++replaced;
          break;
        default:
          ++kept;
      }
    }
    std::cout << fmt::format(
        "imported {} result(s): {} new, {} replacing older imports, {} kept "
        "(local, pinned or faster)\n",
        inserted + replaced + kept, inserted, replaced, kept);
    *exit_code = 0;
  });

  auto stale_only = std::make_shared<bool>(false);
  CLI::App* prune =
      cache->add_subcommand("prune", "Remove results of templates that changed since");
  prune->add_flag("--stale", *stale_only, "Remove results whose template hash is not current")
      ->required();
  prune->callback([exit_code, stale_only] {  // keeps the flag's storage alive
    auto db = open_db(true);
    int removed = 0;
    for (const ops::KernelFamily* f : ops::families())
      removed += db->prune_stale(f->name(), f->template_hash());
    std::cout << fmt::format("removed {} stale result(s)\n", removed);
    *exit_code = 0;
  });

  auto misses_json = std::make_shared<bool>(false);
  CLI::App* misses =
      cache->add_subcommand("misses", "Shapes served without an exact result at run time");
  misses->add_flag("--json", *misses_json, "Print a JSON array");
  misses->callback([exit_code, misses_json] {
    std::vector<tuning::Miss> rows;
    if (auto db = open_db(false)) rows = db->misses();
    if (*misses_json) {
      nlohmann::json j = nlohmann::json::array();
      for (const tuning::Miss& m : rows) {
        j.push_back({{"op", m.key.op},
                     {"problem_key", m.key.problem_key},
                     {"dtype", m.key.dtype},
                     {"sm_arch", m.key.sm_arch},
                     {"served_by", m.served_by},
                     {"hits", m.hits}});
      }
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << fmt::format("{:<13} {:<24} {:<5} {:<7} {:<8} {:>6}\n", "op", "shape", "dtype",
                               "arch", "served", "hits");
      for (const tuning::Miss& m : rows) {
        std::cout << fmt::format("{:<13} {:<24} {:<5} {:<7} {:<8} {:>6}\n", m.key.op,
                                 m.key.problem_key, m.key.dtype, m.key.sm_arch, m.served_by,
                                 m.hits);
      }
    }
    *exit_code = 0;
  });
}

}  // namespace kjit::tools

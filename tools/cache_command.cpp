// `kjit cache`: the kernel store (stats, clear) and the tuning database's results (ls, show,
// pin, unpin, invalidate, export, import, prune, misses). Reading commands never create a
// database; a database with no schema yet reads as empty.
#include <filesystem>
#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cache/store/kernel_store.hpp"
#include "cache/tuning/tuning_db.hpp"
#include "jit/settings.hpp"
#include "kjit/error.hpp"
#include "ops/registry.hpp"
#include "tools/commands.hpp"
#include "tools/tuning_export.hpp"
#include "util/environment.hpp"
#include "util/human_bytes.hpp"
#include "util/private_files.hpp"

namespace kjit::tools {
namespace {

using store::KernelStore;
using tuning::Best;
using tuning::TuningDb;

// JSON for a terminal or a pipe: invalid UTF-8 from an old database is replaced, not fatal.
std::string dump(const nlohmann::json& j) {
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::unique_ptr<TuningDb> open_for_reading() {
  return TuningDb::open_results(tuning::default_database_path());
}

// For commands that change results: there must be some to change.
std::unique_ptr<TuningDb> open_existing_for_writing() {
  const std::string path = tuning::default_database_path();
  std::error_code ec;
  if (path.empty() || !std::filesystem::exists(path, ec)) {
    throw InvalidArgument(fmt::format("no tuning database at {} (kjit tune creates one)",
                                      path.empty() ? "(no home folder)" : path));
  }
  return std::make_unique<TuningDb>(path, TuningDb::Mode::ReadWrite);
}

std::string state_of(const Best& b) {
  return b.pinned ? (b.state == "stale" ? "stale,pinned" : "pinned") : b.state;
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
                             b.id, printable(b.key.op), printable(b.key.dtype),
                             printable(b.key.problem_key), printable(b.key.sm_arch),
                             printable(b.config), b.median_us, speedup(b), state_of(b),
                             printable(b.provenance.origin));
  }
}

std::int64_t parse_id(const std::string& text) {
  if (!text.empty() && std::isdigit(static_cast<unsigned char>(text[0]))) {
    try {
      std::size_t used = 0;
      const long long id = std::stoll(text, &used);
      if (used == text.size() && id > 0) return id;
    } catch (const std::exception&) {
    }
  }
  throw InvalidArgument("\"" + printable(text) + "\" is not a result id (see kjit cache ls)");
}

void stats(bool json) {
  const detail::Settings s = detail::current_settings();
  const KernelStore store = detail::kernel_store(s);
  const KernelStore::Stats st = store.stats();
  nlohmann::json j = {{"folder", store.folder().string()},
                      {"entries", st.entries},
                      {"bytes", st.bytes},
                      {"older_format_entries", st.older_format_entries},
                      {"older_format_bytes", st.older_format_bytes},
                      {"max_bytes", s.cache_max_bytes}};
  nlohmann::json t = {{"path", tuning::default_database_path()}, {"exists", false}};
  if (auto db = open_for_reading()) {
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
  if (json) {
    std::cout << dump(j) << "\n";
    return;
  }
  std::cout << fmt::format("kernel store: {}\nentries:      {}\nsize:         {} of {} cap\n",
                           store.folder().string(), st.entries, detail::human_bytes(st.bytes),
                           detail::human_bytes(s.cache_max_bytes));
  if (st.older_format_entries > 0) {
    std::cout << fmt::format(
        "older format: {} entries, {} (never read by this kjit; `kjit cache clear` removes them)\n",
        st.older_format_entries, detail::human_bytes(st.older_format_bytes));
  }
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

void clear() {
  const detail::Settings settings = detail::current_settings();
  if (settings.cache_mode != detail::CacheMode::ReadWrite) {
    throw InvalidArgument(
        fmt::format("KJIT_CACHE={}: the kernel store is not written in this "
                    "mode, so `kjit cache clear` removes nothing",
                    detail::env("KJIT_CACHE")));
  }
  const KernelStore store = detail::kernel_store(settings);
  const std::uint64_t removed = store.clear();
  std::cout << fmt::format("removed {} entr{} from {} (and older formats beside it)\n", removed,
                           removed == 1 ? "y" : "ies", store.folder().string());
}

void ls(const tuning::BestFilter& filter, bool json) {
  if (!filter.state.empty() && filter.state != "valid" && filter.state != "stale" &&
      filter.state != "pinned") {
    throw InvalidArgument("--state \"" + printable(filter.state) +
                          "\" is not one of valid, stale, pinned");
  }
  std::vector<Best> rows;
  if (auto db = open_for_reading()) rows = db->list(filter);
  if (!json) {
    print_table(rows);
    return;
  }
  nlohmann::json j = nlohmann::json::array();
  for (const Best& b : rows)
    j.push_back(export_row(b));
  std::cout << dump(j) << "\n";
}

void show(const std::string& id_text) {
  const std::int64_t id = parse_id(id_text);
  auto db = open_for_reading();
  const std::optional<Best> b = db ? db->best_by_id(id) : std::nullopt;
  if (!b) throw InvalidArgument(fmt::format("no result with id {}", id));
  print_table({*b});
  std::cout << fmt::format(
      "\nmeasured on {} (driver {}, kjit {}), {}; runner-up {}, default {}\n\n",
      printable(b->provenance.gpu_name), printable(b->provenance.driver),
      printable(b->provenance.kjit_version), printable(b->provenance.timing_policy),
      b->runner_up_us ? fmt::format("{:.2f} us", *b->runner_up_us) : "-",
      b->default_us ? fmt::format("{:.2f} us", *b->default_us) : "-");
  std::cout << fmt::format("{:<52} {:<14} {:>9} {:>9} {:>9} {:>7}  {}\n", "config", "status",
                           "median", "p20", "p80", "samples", "error");
  auto us = [](const std::optional<double>& v) { return v ? fmt::format("{:.2f}", *v) : "-"; };
  for (const tuning::Trial& t : db->trials(b->key)) {
    std::cout << fmt::format("{:<52} {:<14} {:>9} {:>9} {:>9} {:>7}  {}\n", printable(t.config),
                             t.status, us(t.median_us), us(t.p20_us), us(t.p80_us), t.samples,
                             printable(t.error.substr(0, 80)));
  }
}

void export_to(const std::string& file) {
  std::vector<Best> rows;
  if (auto db = open_for_reading()) rows = db->list({});
  // A temp file beside the target, renamed over it: a failed export leaves the old file whole.
  const std::filesystem::path path = std::filesystem::absolute(file);
  if (std::string why = detail::write_atomically(path, dump(export_document(rows)) + "\n", 0644);
      !why.empty()) {
    throw InvalidArgument(fmt::format("cannot write {}: {}", file, why));
  }
  std::cout << fmt::format("exported {} result(s) to {}\n", rows.size(), file);
}

void import_from(const std::string& file) {
  const std::vector<Best> rows = import_document(file);  // every row checked before any write
  TuningDb db(tuning::default_database_path(), TuningDb::Mode::ReadWrite);
  int inserted = 0, replaced = 0, kept = 0;
  for (tuning::Upsert u : db.import_all(rows)) {
    inserted += u == tuning::Upsert::Inserted;
    replaced += u == tuning::Upsert::Replaced;
    kept += u != tuning::Upsert::Inserted && u != tuning::Upsert::Replaced;
  }
  std::cout << fmt::format(
      "imported {} result(s): {} new, {} replacing older imports, {} kept "
      "(local, pinned or faster)\n",
      inserted + replaced + kept, inserted, replaced, kept);
}

// Whether `key` names an op this kjit knows with a shape or dtype it cannot read: a row of
// another version of the op, which lookups skip with a warning. Other ops' rows are not this
// kjit's to judge.
bool unreadable_shape(const tuning::TuningKey& key) {
  if (!ops::find_family(key.op)) return false;
  try {
    const ops::StoredProblem stored = ops::stored_problem(key);
    stored.family->check(stored.problem);
    return false;
  } catch (const InvalidArgument&) {
    return true;
  }
}

// unreadable_shape, or a config that is not one of the op's.
bool unreadable(const tuning::Best& row) {
  const ops::KernelFamily* family = ops::find_family(row.key.op);
  if (!family) return false;
  const std::optional<tuning::Config> config = tuning::parse_config_json(row.config);
  return !config || !family->well_formed(*config) || unreadable_shape(row.key);
}

void prune_stale() {
  auto db = open_existing_for_writing();
  int removed = 0, unread = 0;
  for (const ops::KernelFamily* f : ops::families())
    removed += db->prune_stale(f->name(), f->template_hash());
  for (const tuning::Best& b : db->list({})) {
    if (unreadable(b)) unread += db->remove(b.key);
  }
  for (const tuning::Miss& m : db->misses()) {
    if (unreadable_shape(m.key)) db->remove(m.key);
  }
  std::cout << fmt::format("removed {} stale result(s) and {} this kjit cannot read\n", removed,
                           unread);
}

void misses(bool json) {
  std::vector<tuning::Miss> rows;
  if (auto db = open_for_reading()) rows = db->misses();
  if (json) {
    nlohmann::json j = nlohmann::json::array();
    for (const tuning::Miss& m : rows) {
      j.push_back({{"op", m.key.op},
                   {"problem_key", m.key.problem_key},
                   {"dtype", m.key.dtype},
                   {"sm_arch", m.key.sm_arch},
                   {"served_by", m.served_by},
                   {"hits", m.hits}});
    }
    std::cout << dump(j) << "\n";
    return;
  }
  std::cout << fmt::format("{:<13} {:<24} {:<5} {:<7} {:<8} {:>6}\n", "op", "shape", "dtype",
                           "arch", "served", "hits");
  for (const tuning::Miss& m : rows) {
    std::cout << fmt::format("{:<13} {:<24} {:<5} {:<7} {:<8} {:>6}\n", printable(m.key.op),
                             printable(m.key.problem_key), printable(m.key.dtype),
                             printable(m.key.sm_arch), m.served_by, m.hits);
  }
}

}  // namespace

void add_cache_command(CLI::App& app, int* exit_code) {
  CLI::App* cache =
      app.add_subcommand("cache", "Inspect and manage the kernel store and the tuning database");
  cache->require_subcommand(1);
  // Each subcommand runs its function; the options' storage lives as long as the app.
  auto done = [exit_code](auto body) {
    return [exit_code, body] {
      body();
      *exit_code = 0;
    };
  };

  auto stats_json = std::make_shared<bool>(false);
  CLI::App* stats_cmd = cache->add_subcommand("stats", "Kernel store and tuning database summary");
  stats_cmd->add_flag("--json", *stats_json, "Print one JSON object");
  stats_cmd->callback(done([stats_json] { stats(*stats_json); }));

  cache->add_subcommand("clear", "Remove every kernel store entry")->callback(done(clear));

  auto filter = std::make_shared<tuning::BestFilter>();
  auto ls_json = std::make_shared<bool>(false);
  CLI::App* ls_cmd = cache->add_subcommand("ls", "List tuned results");
  ls_cmd->add_option("--op", filter->op, "Only this op");
  ls_cmd->add_option("--arch", filter->sm_arch, "Only this arch, e.g. sm_90a");
  ls_cmd->add_option("--state", filter->state, "Only this state: valid, stale, pinned");
  ls_cmd->add_flag("--json", *ls_json, "Print a JSON array");
  ls_cmd->callback(done([filter, ls_json] { ls(*filter, *ls_json); }));

  auto id = std::make_shared<std::string>();
  CLI::App* show_cmd = cache->add_subcommand("show", "A result and every trial of its key");
  show_cmd->add_option("id", *id, "Result id (kjit cache ls)")->required();
  show_cmd->callback(done([id] { show(*id); }));

  struct Change {
    const char* verb;
    const char* help;
    const char* done;
    bool (*apply)(TuningDb&, std::int64_t);
  };
  for (const Change& c :
       {Change{"pin", "Pin a result: tuning never replaces it", "pinned",
               [](TuningDb&db, std::int64_t n) { return db.set_pinned(n, true); }},
        Change{"unpin", "Unpin a result (a stale one stays stale)", "unpinned",
               [](TuningDb&db, std::int64_t n) { return db.set_pinned(n, false); }},
        Change{"invalidate", "Mark a result stale: lookups skip it, the next tune replaces it",
               "marked stale", [](TuningDb&db, std::int64_t n) { return db.invalidate(n); }}}) {
    auto arg = std::make_shared<std::string>();
    CLI::App* cmd = cache->add_subcommand(c.verb, c.help);
    cmd->add_option("id", *arg, "Result id (kjit cache ls)")->required();
    cmd->callback(done([arg, c] {
      const std::int64_t n = parse_id(*arg);
      if (!c.apply(*open_existing_for_writing(), n))
        throw InvalidArgument(fmt::format("no result with id {}", n));
      std::cout << fmt::format("result {} {}\n", n, c.done);
    }));
  }

  auto out_file = std::make_shared<std::string>();
  CLI::App* export_cmd =
      cache->add_subcommand("export", "Write every result, with its environment, as JSON");
  export_cmd->add_option("file", *out_file, "Output file")->required();
  export_cmd->callback(done([out_file] { export_to(*out_file); }));

  auto in_file = std::make_shared<std::string>();
  CLI::App* import_cmd = cache->add_subcommand(
      "import", "Merge exported results, all or none (they lose to local ones)");
  import_cmd->add_option("file", *in_file, "A file written by kjit cache export")->required();
  import_cmd->callback(done([in_file] { import_from(*in_file); }));

  auto stale_only = std::make_shared<bool>(false);
  CLI::App* prune_cmd =
      cache->add_subcommand("prune", "Remove results of templates that changed since");
  prune_cmd
      ->add_flag("--stale", *stale_only,
                 "Remove results whose template hash is not current, and results and misses whose "
                 "shape or config this kjit cannot read")
      ->required();
  prune_cmd->callback(done([stale_only] { prune_stale(); }));  // keeps the flag's storage alive

  auto misses_json = std::make_shared<bool>(false);
  CLI::App* misses_cmd =
      cache->add_subcommand("misses", "Shapes served without an exact result at run time");
  misses_cmd->add_flag("--json", *misses_json, "Print a JSON array");
  misses_cmd->callback(done([misses_json] { misses(*misses_json); }));
}

}  // namespace kjit::tools

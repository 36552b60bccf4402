// The tuning database (SQLite): every measured trial, the winner per key with its margin over
// the runner-up and speedup over the default config, and the shapes that missed at run time.
// Schema versioned with PRAGMA user_version and migrated forward on open; WAL, busy_timeout and
// short BEGIN IMMEDIATE writes so several processes can tune into one file.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/tuning/sqlite.hpp"
#include "cache/tuning/tuning_key.hpp"

namespace kjit::tuning {

inline constexpr int kSchemaVersion = 3;

// The SQL of migration i (schema version i -> i + 1), for tests that build an older database.
const char* migration_sql(int step);

// One warning per process and database path: "unusable (why); using default configs". The op
// path's readers and the miss writer share it, so a broken file is reported once.
void warn_unusable(const std::string& path, const std::string& why);

// $KJIT_TUNING_DB, else $XDG_DATA_HOME/kjit/tuning.sqlite (when absolute), else
// ~/.local/share/kjit/tuning.sqlite; "" without a home folder (no database then).
std::string default_database_path();

struct Trial {
  TuningKey key;
  std::string config;  // canonical JSON
  std::string status;  // ok, compile_fail, resource_fail, launch_fail, verify_fail, slow
  std::optional<double> median_us, p20_us, p80_us;
  int samples = 0;
  std::string error;
};

struct Best {
  std::int64_t id = 0;
  TuningKey key;
  std::string config;
  double median_us = 0;
  std::optional<double> runner_up_us;
  std::optional<double> default_us;
  bool verified = false;
  std::string state = "valid";  // valid or stale (skipped by lookups, replaced by the next tune)
  bool pinned = false;          // never replaced by tuning
  Provenance provenance;
  std::int64_t updated_at = 0;  // unix seconds
};

struct Miss {
  TuningKey key;
  std::string served_by;  // bucket, nearest, default
  std::int64_t hits = 1;
};

struct BestFilter {
  std::string op, sm_arch, state;  // empty: any; state "pinned" selects pinned rows
};

enum class Upsert { Inserted, Replaced, KeptIncumbent, KeptPinned, KeptLocal };

class TuningDb {
 public:
  enum class Mode { ReadOnly, ReadWrite };
  // ReadWrite creates the file (0600) and its folder (0700) and migrates the schema; ReadOnly
  // never writes, reads a WAL database in a folder it cannot write as an immutable snapshot, and
  // refuses a schema newer than this kjit's. Both refuse files and folders other users can write
  // (reads accept root's) and a database that holds other tables than kjit's.
  TuningDb(const std::string& path, Mode mode, int busy_timeout_ms = 10000);

  // For readers: the database at `path` read-only, or null where there are no results to read
  // (no path, no file, or no schema yet: a new or 0-byte file). A broken file still throws.
  static std::unique_ptr<TuningDb> open_results(const std::string& path,
                                                int busy_timeout_ms = 10000);

  int schema_version();
  const std::string& path() const { return db_.path(); }

  // One transaction each: a killed tuning run keeps every trial committed before it died.
  void record_trial(const Trial& trial, const Provenance& provenance);
  std::vector<Trial> trials(const TuningKey& key);

  // Insert or replace the winner for best.key: a pinned row is never replaced, a stale or
  // imported row always is (by a local result), otherwise the new result must beat the old by
  // more than `margin` (relative).
  Upsert upsert_best(const Best& best, double margin);
  // Imported rows never replace a local row; they replace an older import only when faster.
  Upsert import_best(const Best& best);
  // All rows in one transaction: all are merged, or (on any failure) none.
  std::vector<Upsert> import_all(const std::vector<Best>& rows);

  std::optional<Best> best(const TuningKey& key);
  std::optional<Best> best_by_id(std::int64_t id);
  // Every result of one op's template for one arch and NVRTC version that is not stale.
  std::vector<Best> results(const std::string& op, const std::string& template_hash,
                            const std::string& sm_arch, const std::string& nvrtc);
  std::vector<Best> list(const BestFilter& filter);
  // False when no result has the id.
  bool set_pinned(std::int64_t id, bool pinned);
  bool invalidate(std::int64_t id);  // stale: lookups skip it, the next tune replaces it
  // Deletes results (and trials) of `op` whose template hash is not `current_hash`.
  int prune_stale(const std::string& op, const std::string& current_hash);
  // Deletes the result, the trials and the miss of exactly `key`; the results removed (0 or 1).
  int remove(const TuningKey& key);

  void record_misses(const std::vector<Miss>& misses);
  std::vector<Miss> misses();

  struct Stats {
    std::int64_t best = 0, pinned = 0, stale = 0, trials = 0, failed_trials = 0, misses = 0;
  };
  Stats stats();

 private:
  void migrate();
  bool has_tables();
  Upsert import_row(const Best& best);  // inside the caller's transaction
  bool update(std::int64_t id, const char* assignment);
  std::int64_t environment_id(const Provenance& p);
  sql::Database db_;
};

}  // namespace kjit::tuning

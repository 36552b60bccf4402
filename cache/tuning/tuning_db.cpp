#include "cache/tuning/tuning_db.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>

#include "kjit/error.hpp"
#include "util/environment.hpp"
#include "util/log.hpp"
#include "util/private_files.hpp"

namespace kjit::tuning {
namespace fs = std::filesystem;
namespace {

// Migration i takes the schema from version i to i + 1. Never edit a released step: add one.
const char* const kMigrations[] = {
    // 0 -> 1: trials, winners, environments.
    R"sql(
CREATE TABLE environment (
  env_id INTEGER PRIMARY KEY,
  gpu_name TEXT NOT NULL, driver TEXT NOT NULL, kjit_version TEXT NOT NULL,
  UNIQUE (gpu_name, driver, kjit_version));
CREATE TABLE trial (
  trial_id INTEGER PRIMARY KEY,
  op TEXT NOT NULL, template_hash TEXT NOT NULL, problem_key TEXT NOT NULL, dtype TEXT NOT NULL,
  sm_arch TEXT NOT NULL, nvrtc TEXT NOT NULL, config TEXT NOT NULL,
  status TEXT NOT NULL, median_us REAL, p20_us REAL, p80_us REAL,
  samples INTEGER NOT NULL DEFAULT 0, error TEXT,
  env_id INTEGER REFERENCES environment, timing_policy TEXT, origin TEXT,
  created_at INTEGER NOT NULL,
  UNIQUE (op, template_hash, problem_key, dtype, sm_arch, nvrtc, config));
CREATE TABLE best (
  best_id INTEGER PRIMARY KEY,
  op TEXT NOT NULL, template_hash TEXT NOT NULL, problem_key TEXT NOT NULL, dtype TEXT NOT NULL,
  sm_arch TEXT NOT NULL, nvrtc TEXT NOT NULL, config TEXT NOT NULL,
  median_us REAL NOT NULL, runner_up_us REAL, default_us REAL,
  verified INTEGER NOT NULL DEFAULT 0,
  state TEXT NOT NULL DEFAULT 'valid' CHECK (state IN ('valid', 'stale', 'pinned')),
  origin TEXT NOT NULL, env_id INTEGER REFERENCES environment, timing_policy TEXT,
  updated_at INTEGER NOT NULL,
  UNIQUE (op, template_hash, problem_key, dtype, sm_arch, nvrtc));
CREATE INDEX best_family ON best (op, template_hash, dtype, sm_arch, nvrtc);
)sql",
    // 1 -> 2: run-time misses, for offline tuning of the shapes a deployment actually sees.
    R"sql(
CREATE TABLE miss (
  op TEXT NOT NULL, template_hash TEXT NOT NULL, problem_key TEXT NOT NULL, dtype TEXT NOT NULL,
  sm_arch TEXT NOT NULL, nvrtc TEXT NOT NULL, served_by TEXT NOT NULL,
  hits INTEGER NOT NULL, first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL,
  PRIMARY KEY (op, template_hash, problem_key, dtype, sm_arch, nvrtc));
)sql",
    // 2 -> 3: pinned is a flag of its own, so that a stale result stays stale when unpinned.
    R"sql(
ALTER TABLE best ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
UPDATE best SET pinned = 1, state = 'valid' WHERE state = 'pinned';
)sql",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == kSchemaVersion);

std::int64_t now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

constexpr const char* kKeyColumns = "op, template_hash, problem_key, dtype, sm_arch, nvrtc";
constexpr const char* kKeyMatch =
    "op = ?1 AND template_hash = ?2 AND problem_key = ?3 AND dtype = ?4 AND sm_arch = ?5 AND "
    "nvrtc = ?6";

void bind_key(sql::Statement& s, const TuningKey& k, int first = 1) {
  s.bind(first, k.op)
      .bind(first + 1, k.template_hash)
      .bind(first + 2, k.problem_key)
      .bind(first + 3, k.dtype)
      .bind(first + 4, k.sm_arch)
      .bind(first + 5, k.nvrtc);
}

TuningKey read_key(const sql::Statement& s, int first) {
  return TuningKey{s.text(first),     s.text(first + 1), s.text(first + 2),
                   s.text(first + 3), s.text(first + 4), s.text(first + 5)};
}

constexpr const char* kBestSelect =
    "SELECT b.best_id, b.op, b.template_hash, b.problem_key, b.dtype, b.sm_arch, b.nvrtc, "
    "b.config, b.median_us, b.runner_up_us, b.default_us, b.verified, b.state, b.origin, "
    "b.timing_policy, b.updated_at, e.gpu_name, e.driver, e.kjit_version, b.pinned "
    "FROM best b LEFT JOIN environment e ON e.env_id = b.env_id ";

Best read_best(const sql::Statement& s) {
  Best b;
  b.id = s.integer(0);
  b.key = read_key(s, 1);
  b.config = s.text(7);
  b.median_us = s.real(8);
  b.runner_up_us = s.optional_real(9);
  b.default_us = s.optional_real(10);
  b.verified = s.integer(11) != 0;
  b.state = s.text(12);
  b.provenance.origin = s.text(13);
  b.provenance.timing_policy = s.text(14);
  b.updated_at = s.integer(15);
  b.provenance.gpu_name = s.text(16);
  b.provenance.driver = s.text(17);
  b.provenance.kjit_version = s.text(18);
  b.pinned = s.integer(19) != 0;
  return b;
}

bool is_import(const std::string& origin) {
  return origin.rfind("import", 0) == 0;
}

}  // namespace

const char* migration_sql(int step) {
  return kMigrations[step];
}

void warn_unusable(const std::string& path, const std::string& why) {
  detail::warn_once(
      "tuning|" + path,
      fmt::format("tuning database {} unusable ({}); using default configs", path, why));
}

std::string default_database_path() {
  if (std::string p = detail::env("KJIT_TUNING_DB"); !p.empty()) return p;
  const std::string dir = detail::user_dir("XDG_DATA_HOME", ".local/share");
  return dir.empty() ? dir : dir + "/kjit/tuning.sqlite";
}

namespace {

// The rules of util/private_files.hpp for the database: written only in a private folder of this
// user (created 0700) into a file of this user's (created 0600, so that SQLite's -wal and -shm
// files get 0600 too); read from a file of this user's or root's that others cannot write.
std::string checked_path(const std::string& path, TuningDb::Mode mode) {
  if (path.empty()) {
    throw Error(
        "no tuning database: $HOME is unset and the password database has no home; set "
        "KJIT_TUNING_DB");
  }
  const fs::path p(path);
  const bool write = mode == TuningDb::Mode::ReadWrite;
  if (write && p.has_parent_path()) {
    if (std::string problem = detail::private_dir_problem(p.parent_path(), true); !problem.empty())
      throw Error(fmt::format("tuning database {} not written: {}", path, problem));
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (!write) throw Error(fmt::format("no tuning database at {}", path));
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0) ::close(fd);
    return path;
  }
  if (S_ISLNK(st.st_mode) && ::stat(path.c_str(), &st) != 0)
    throw Error(fmt::format("tuning database {} is a dangling link", path));
  if (S_ISDIR(st.st_mode)) throw Error(fmt::format("tuning database {} is a folder", path));
  if (!detail::trusted_owner_and_mode(st.st_uid, st.st_mode, !write)) {
    throw Error(
        fmt::format("refusing tuning database {}: writable by other users or owned by "
                    "another user (mode {:o}, owner {})",
                    path, st.st_mode & 07777, st.st_uid));
  }
  return path;
}

bool folder_writable(const std::string& path) {
  const fs::path parent = fs::path(path).has_parent_path() ? fs::path(path).parent_path() : ".";
  return ::access(parent.c_str(), W_OK) == 0;
}

}  // namespace

TuningDb::TuningDb(const std::string& path, Mode mode, int busy_timeout_ms)
    : db_(checked_path(path, mode),
          mode == Mode::ReadOnly ? sql::Database::Access::ReadOnly
                                 : sql::Database::Access::ReadWrite,
          busy_timeout_ms) {
  int version = 0;
  try {
    version = schema_version();  // also the first read: a corrupt file fails here
  } catch (const sql::SqlError& e) {
    // A WAL database in a folder this process cannot write: SQLite cannot make its -shm file,
    // so read the file as the immutable snapshot it is (a database shipped read-only).
    if (mode == Mode::ReadWrite || !e.cannot_open_side_files() || folder_writable(path)) throw;
    db_.reopen(sql::Database::Access::Immutable);
    version = schema_version();
  }
  if (version > kSchemaVersion) {
    throw Error(
        fmt::format("tuning database {} has schema version {}, newer than this kjit's "
                    "{}: upgrade kjit or point KJIT_TUNING_DB elsewhere",
                    path, version, kSchemaVersion));
  }
  if (version == 0 && has_tables()) {
    throw Error(
        fmt::format("{} is not a kjit tuning database (it holds other tables); point "
                    "KJIT_TUNING_DB elsewhere",
                    path));
  }
  if (mode == Mode::ReadWrite) {
    db_.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;");
    migrate();
  }
}

bool TuningDb::has_tables() {
  sql::Statement s = db_.prepare("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'");
  s.step();
  return s.integer(0) > 0;
}

std::unique_ptr<TuningDb> TuningDb::open_results(const std::string& path, int busy_timeout_ms) {
  std::error_code ec;
  if (path.empty() || !fs::exists(path, ec)) return nullptr;
  auto db = std::make_unique<TuningDb>(path, Mode::ReadOnly, busy_timeout_ms);
  return db->schema_version() == 0 ? nullptr : std::move(db);
}

int TuningDb::schema_version() {
  sql::Statement s = db_.prepare("PRAGMA user_version");
  s.step();
  return static_cast<int>(s.integer(0));
}

void TuningDb::migrate() {
  sql::Transaction t(db_);
  // Re-read inside the write lock: another process may have migrated meanwhile.
  for (int v = schema_version(); v < kSchemaVersion; ++v) {
    db_.exec(kMigrations[v]);
    db_.exec(fmt::format("PRAGMA user_version = {}", v + 1));
  }
  t.commit();
}

std::int64_t TuningDb::environment_id(const Provenance& p) {
  sql::Statement insert = db_.prepare(
      "INSERT INTO environment (gpu_name, driver, kjit_version) VALUES (?1, ?2, ?3) "
      "ON CONFLICT DO NOTHING");
  insert.bind(1, p.gpu_name).bind(2, p.driver).bind(3, p.kjit_version).run();
  sql::Statement select = db_.prepare(
      "SELECT env_id FROM environment WHERE gpu_name = ?1 AND driver = ?2 AND kjit_version = ?3");
  select.bind(1, p.gpu_name).bind(2, p.driver).bind(3, p.kjit_version);
  select.step();
  return select.integer(0);
}

void TuningDb::record_trial(const Trial& trial, const Provenance& p) {
  sql::Transaction t(db_);
  const std::int64_t env_id = environment_id(p);
  sql::Statement s = db_.prepare(fmt::format(
      "INSERT INTO trial ({}, config, status, median_us, p20_us, p80_us, samples, error, env_id, "
      "timing_policy, origin, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, "
      "?12, ?13, ?14, ?15, ?16, ?17) ON CONFLICT ({}, config) DO UPDATE SET status = "
      "excluded.status, median_us = excluded.median_us, p20_us = excluded.p20_us, p80_us = "
      "excluded.p80_us, samples = excluded.samples, error = excluded.error, env_id = "
      "excluded.env_id, timing_policy = excluded.timing_policy, created_at = excluded.created_at",
      kKeyColumns, kKeyColumns));
  bind_key(s, trial.key);
  s.bind(7, trial.config)
      .bind(8, trial.status)
      .bind(9, trial.median_us)
      .bind(10, trial.p20_us)
      .bind(11, trial.p80_us)
      .bind(12, trial.samples)
      .bind(13, trial.error)
      .bind(14, env_id)
      .bind(15, p.timing_policy)
      .bind(16, p.origin)
      .bind(17, now())
      .run();
  t.commit();
}

std::vector<Trial> TuningDb::trials(const TuningKey& key) {
  sql::Statement s = db_.prepare(fmt::format(
      "SELECT config, status, median_us, p20_us, p80_us, samples, error FROM trial WHERE {} "
      "ORDER BY median_us IS NULL, median_us",
      kKeyMatch));
  bind_key(s, key);
  std::vector<Trial> out;
  while (s.step()) {
    Trial t;
    t.key = key;
    t.config = s.text(0);
    t.status = s.text(1);
    t.median_us = s.optional_real(2);
    t.p20_us = s.optional_real(3);
    t.p80_us = s.optional_real(4);
    t.samples = static_cast<int>(s.integer(5));
    t.error = s.text(6);
    out.push_back(std::move(t));
  }
  return out;
}

namespace {
void write_best(sql::Database& db, const Best& b, std::int64_t env_id) {
  sql::Statement s = db.prepare(fmt::format(
      "INSERT INTO best ({}, config, median_us, runner_up_us, default_us, verified, state, "
      "origin, env_id, timing_policy, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
      "?10, ?11, ?12, ?13, ?14, ?15, ?16) ON CONFLICT ({}) DO UPDATE SET config = "
      "excluded.config, median_us = excluded.median_us, runner_up_us = excluded.runner_up_us, "
      "default_us = excluded.default_us, verified = excluded.verified, state = excluded.state, "
      "origin = excluded.origin, env_id = excluded.env_id, timing_policy = "
      "excluded.timing_policy, updated_at = excluded.updated_at",
      kKeyColumns, kKeyColumns));
  bind_key(s, b.key);
  s.bind(7, b.config)
      .bind(8, b.median_us)
      .bind(9, b.runner_up_us)
      .bind(10, b.default_us)
      .bind(11, b.verified ? 1 : 0)
      .bind(12, b.state)
      .bind(13, b.provenance.origin)
      .bind(14, env_id)
      .bind(15, b.provenance.timing_policy)
      .bind(16, b.updated_at ? b.updated_at : now())
      .run();
}
}  // namespace

Upsert TuningDb::upsert_best(const Best& b, double margin) {
  sql::Transaction t(db_);
  Upsert result = Upsert::Inserted;
  if (std::optional<Best> old = best(b.key)) {
    if (old->pinned) return Upsert::KeptPinned;
    const bool replace = old->state == "stale" || is_import(old->provenance.origin) ||
                         b.config == old->config || b.median_us < old->median_us * (1 - margin);
    if (!replace) return Upsert::KeptIncumbent;
    result = Upsert::Replaced;
  }
  Best row = b;
  row.updated_at = now();
  write_best(db_, row, environment_id(b.provenance));
  t.commit();
  return result;
}

Upsert TuningDb::import_row(const Best& b) {
  if (std::optional<Best> old = best(b.key)) {
    if (!is_import(old->provenance.origin)) return Upsert::KeptLocal;
    if (old->pinned) return Upsert::KeptPinned;
    if (b.median_us >= old->median_us) return Upsert::KeptIncumbent;
    write_best(db_, b, environment_id(b.provenance));
    return Upsert::Replaced;
  }
  write_best(db_, b, environment_id(b.provenance));
  return Upsert::Inserted;
}

Upsert TuningDb::import_best(const Best& b) {
  sql::Transaction t(db_);
  const Upsert result = import_row(b);
  t.commit();
  return result;
}

std::vector<Upsert> TuningDb::import_all(const std::vector<Best>& rows) {
  sql::Transaction t(db_);
  std::vector<Upsert> out;
  for (const Best& b : rows)
    out.push_back(import_row(b));
  t.commit();
  return out;
}

std::optional<Best> TuningDb::best(const TuningKey& key) {
  sql::Statement s = db_.prepare(std::string(kBestSelect) + "WHERE " +
                                 "b.op = ?1 AND b.template_hash = ?2 AND b.problem_key = ?3 AND "
                                 "b.dtype = ?4 AND b.sm_arch = ?5 AND b.nvrtc = ?6");
  bind_key(s, key);
  if (!s.step()) return std::nullopt;
  return read_best(s);
}

std::optional<Best> TuningDb::best_by_id(std::int64_t id) {
  sql::Statement s = db_.prepare(std::string(kBestSelect) + "WHERE b.best_id = ?1");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return read_best(s);
}

std::vector<Best> TuningDb::results(const std::string& op, const std::string& template_hash,
                                    const std::string& sm_arch, const std::string& nvrtc) {
  sql::Statement s = db_.prepare(std::string(kBestSelect) +
                                 "WHERE b.op = ?1 AND b.template_hash = ?2 AND b.sm_arch = ?3 AND "
                                 "b.nvrtc = ?4 AND b.state != 'stale'");
  s.bind(1, op).bind(2, template_hash).bind(3, sm_arch).bind(4, nvrtc);
  std::vector<Best> out;
  while (s.step())
    out.push_back(read_best(s));
  return out;
}

std::vector<Best> TuningDb::list(const BestFilter& f) {
  // Empty filters match everything; values are bound, never spliced into the SQL.
  sql::Statement s = db_.prepare(
      std::string(kBestSelect) +
      "WHERE (?1 = '' OR b.op = ?1) AND (?2 = '' OR b.sm_arch = ?2) "
      "AND (?3 = '' OR (?3 = 'pinned' AND b.pinned) OR b.state = ?3) ORDER BY b.op, b.dtype, "
      "b.problem_key, b.sm_arch");
  s.bind(1, f.op).bind(2, f.sm_arch).bind(3, f.state);
  std::vector<Best> out;
  while (s.step())
    out.push_back(read_best(s));
  return out;
}

bool TuningDb::update(std::int64_t id, const char* assignment) {
  sql::Transaction t(db_);
  sql::Statement s = db_.prepare(
      fmt::format("UPDATE best SET {}, updated_at = ?1 WHERE best_id = ?2", assignment));
  s.bind(1, now()).bind(2, id).run();
  const bool changed = db_.changes() > 0;
  t.commit();
  return changed;
}

bool TuningDb::set_pinned(std::int64_t id, bool pinned) {
  return update(id, pinned ? "pinned = 1" : "pinned = 0");
}

bool TuningDb::invalidate(std::int64_t id) {
  return update(id, "state = 'stale'");
}

int TuningDb::prune_stale(const std::string& op, const std::string& current_hash) {
  sql::Transaction t(db_);
  sql::Statement best = db_.prepare("DELETE FROM best WHERE op = ?1 AND template_hash != ?2");
  best.bind(1, op).bind(2, current_hash).run();
  const int removed = db_.changes();
  for (const char* table : {"trial", "miss"}) {
    sql::Statement s =
        db_.prepare(fmt::format("DELETE FROM {} WHERE op = ?1 AND template_hash != ?2", table));
    s.bind(1, op).bind(2, current_hash).run();
  }
  t.commit();
  return removed;
}

int TuningDb::remove(const TuningKey& key) {
  sql::Transaction t(db_);
  const auto remove_from = [&](const char* table) {
    sql::Statement s = db_.prepare(fmt::format("DELETE FROM {} WHERE {}", table, kKeyMatch));
    bind_key(s, key);
    s.run();
    return db_.changes();
  };
  const int removed = remove_from("best");
  remove_from("trial");
  remove_from("miss");
  t.commit();
  return removed;
}

void TuningDb::record_misses(const std::vector<Miss>& misses) {
  if (misses.empty()) return;
  sql::Transaction t(db_);
  sql::Statement s = db_.prepare(fmt::format(
      "INSERT INTO miss ({}, served_by, hits, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, "
      "?6, ?7, ?8, ?9, ?9) ON CONFLICT ({}) DO UPDATE SET hits = hits + excluded.hits, "
      "served_by = excluded.served_by, last_seen = excluded.last_seen",
      kKeyColumns, kKeyColumns));
  for (const Miss& m : misses) {
    s.reset();
    bind_key(s, m.key);
    s.bind(7, m.served_by).bind(8, m.hits).bind(9, now()).run();
  }
  t.commit();
}

std::vector<Miss> TuningDb::misses() {
  sql::Statement s = db_.prepare(fmt::format(
      "SELECT {}, served_by, hits FROM miss ORDER BY hits DESC, op, problem_key", kKeyColumns));
  std::vector<Miss> out;
  while (s.step())
    out.push_back(Miss{read_key(s, 0), s.text(6), s.integer(7)});
  return out;
}

TuningDb::Stats TuningDb::stats() {
  Stats st;
  auto count = [&](const char* sql) {
    sql::Statement s = db_.prepare(sql);
    s.step();
    return s.integer(0);
  };
  st.best = count("SELECT COUNT(*) FROM best");
  st.pinned = count("SELECT COUNT(*) FROM best WHERE pinned");
  st.stale = count("SELECT COUNT(*) FROM best WHERE state = 'stale'");
  st.trials = count("SELECT COUNT(*) FROM trial");
  st.failed_trials = count("SELECT COUNT(*) FROM trial WHERE status != 'ok'");
  st.misses = count("SELECT COUNT(*) FROM miss");
  return st;
}

}  // namespace kjit::tuning

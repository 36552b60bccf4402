#include "cache/tuning/sqlite.hpp"

#include <sqlite3.h>

#include <atomic>
#include <cctype>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "kjit/error.hpp"

namespace kjit::sql {
namespace {
std::atomic<std::uint64_t> g_opens{0};
}  // namespace

std::uint64_t Database::opens() {
  return g_opens.load();
}

bool SqlError::cannot_open_side_files() const {
  return (code & 0xff) == SQLITE_CANTOPEN || (code & 0xff) == SQLITE_READONLY;
}

Database::Database(const std::string& path, Access access, int busy_timeout_ms)
    : path_(path), busy_timeout_ms_(busy_timeout_ms) {
  open(access);
}

void Database::reopen(Access access) {
  sqlite3_close_v2(db_);
  db_ = nullptr;
  open(access);
}

namespace {

// A file: URI for a path (RFC 3986 percent-encoding of what a path may hold but a URI may not).
std::string file_uri(const std::string& path, const char* query) {
  std::string uri = "file:";
  for (unsigned char c : path) {
    if (std::isalnum(c) || std::strchr("/-._~", c)) {
      uri += static_cast<char>(c);
    } else {
      uri += fmt::format("%{:02X}", c);
    }
  }
  return uri + "?" + query;
}

}  // namespace

void Database::open(Access access) {
  const bool write = access == Access::ReadWrite;
  const int flags = (write ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY) |
                    SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_URI;
  const std::string uri = file_uri(path_, access == Access::Immutable ? "mode=ro&immutable=1"
                                          : write                     ? "mode=rwc"
                                                                      : "mode=ro");
  const int rc = sqlite3_open_v2(uri.c_str(), &db_, flags, nullptr);
  g_opens.fetch_add(1, std::memory_order_relaxed);
  if (rc != SQLITE_OK) {
    const std::string message = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
    sqlite3_close(db_);
    db_ = nullptr;
    throw SqlError(fmt::format("cannot open tuning database {}: {}", path_, message), rc);
  }
  sqlite3_busy_timeout(db_, busy_timeout_ms_);
  sqlite3_extended_result_codes(db_, 1);
}

Database::~Database() {
  sqlite3_close_v2(db_);
}

void Database::exec(const std::string& sql) {
  char* error = nullptr;
  if (const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error); rc != SQLITE_OK) {
    const std::string message = error ? error : sqlite3_errmsg(db_);
    sqlite3_free(error);
    // The statement's first line only: a migration is many lines of SQL.
    throw SqlError(fmt::format("tuning database {}: {} (in: {})", path_, message,
                               sql.substr(0, sql.find('\n', 1))),
                   sqlite3_extended_errcode(db_));
  }
}

Statement Database::prepare(std::string_view sql) {
  return Statement(db_, sql);
}
int Database::changes() const {
  return sqlite3_changes(db_);
}

Statement::Statement(sqlite3* db, std::string_view sql) : db_(db) {
  check(sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt_, nullptr),
        "prepare");
}

Statement::~Statement() {
  sqlite3_finalize(stmt_);
}

Statement::Statement(Statement&& other) noexcept
    : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)) {}

void Statement::check(int rc, const char* what) const {
  if (rc == SQLITE_OK || rc == SQLITE_ROW || rc == SQLITE_DONE) return;
  throw SqlError(fmt::format("tuning database: {} failed: {}{}", what, sqlite3_errmsg(db_),
                             stmt_ ? fmt::format(" (in: {})", sqlite3_sql(stmt_)) : ""),
                 rc);
}

Statement& Statement::bind(int index, std::int64_t value) {
  check(sqlite3_bind_int64(stmt_, index, value), "bind");
  return *this;
}

Statement& Statement::bind(int index, double value) {
  check(sqlite3_bind_double(stmt_, index, value), "bind");
  return *this;
}

Statement& Statement::bind(int index, std::string_view value) {
  check(sqlite3_bind_text(stmt_, index, value.data(), static_cast<int>(value.size()),
                          SQLITE_TRANSIENT),
        "bind");
  return *this;
}

Statement& Statement::bind(int index, std::nullopt_t) {
  check(sqlite3_bind_null(stmt_, index), "bind");
  return *this;
}

bool Statement::step() {
  const int rc = sqlite3_step(stmt_);
  check(rc, "step");
  return rc == SQLITE_ROW;
}

void Statement::run() {
  while (step()) {
  }
}

void Statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

bool Statement::is_null(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}
std::int64_t Statement::integer(int column) const {
  return sqlite3_column_int64(stmt_, column);
}
double Statement::real(int column) const {
  return sqlite3_column_double(stmt_, column);
}
std::optional<double> Statement::optional_real(int column) const {
  if (is_null(column)) return std::nullopt;
  return real(column);
}

std::string Statement::text(int column) const {
  const unsigned char* t = sqlite3_column_text(stmt_, column);
  return t ? std::string(reinterpret_cast<const char*>(t),
                         static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column)))
           : std::string();
}

Transaction::Transaction(Database& db) : db_(db) {
  db_.exec("BEGIN IMMEDIATE");
}

Transaction::~Transaction() {
  if (!done_) {
    try {
      db_.exec("ROLLBACK");
    } catch (const Error&) {
      // Nothing to do: the connection already rolled back (e.g. after SQLITE_FULL).
    }
  }
}

void Transaction::commit() {
  db_.exec("COMMIT");
  done_ = true;
}

}  // namespace kjit::sql

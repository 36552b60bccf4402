// A thin RAII layer over sqlite3: a connection, prepared statements with bound parameters (the
// only way kjit puts values into SQL), and BEGIN IMMEDIATE transactions. Errors throw SqlError
// (a kjit::Error) carrying SQLite's message, the statement and the result code.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "kjit/error.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace kjit::sql {

class Statement;

// A failed SQLite call: SQLite's message and the statement, and its result code.
class SqlError : public Error {
 public:
  SqlError(const std::string& message, int code) : Error(message), code(code) {}
  // SQLITE_CANTOPEN / SQLITE_READONLY: what a read of a WAL database gets where its -shm file
  // cannot be created.
  bool cannot_open_side_files() const;
  int code;
};

class Database {
 public:
  // Immutable: read-only, and SQLite assumes nobody changes the file (no locks, no -shm).
  enum class Access { ReadOnly, ReadWrite, Immutable };
  // `busy_timeout_ms` bounds how long a call waits for another process's lock.
  Database(const std::string& path, Access access, int busy_timeout_ms);
  ~Database();
  void reopen(Access access);
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  void exec(const std::string& sql);  // statements without parameters or results
  Statement prepare(std::string_view sql);
  int changes() const;
  const std::string& path() const { return path_; }

  // Connections opened by this process (benchmarks count how often the launch path opens one).
  static std::uint64_t opens();

 private:
  void open(Access access);
  sqlite3* db_ = nullptr;
  std::string path_;
  int busy_timeout_ms_;
};

class Statement {
 public:
  Statement(sqlite3* db, std::string_view sql);
  ~Statement();
  Statement(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  // Parameters are 1-based, as in SQL's ?1, ?2, ...
  Statement& bind(int index, std::int64_t value);
  Statement& bind(int index, int value) { return bind(index, static_cast<std::int64_t>(value)); }
  Statement& bind(int index, double value);
  Statement& bind(int index, std::string_view value);
  Statement& bind(int index, const char* value) { return bind(index, std::string_view(value)); }
  Statement& bind(int index, const std::string& value) {
    return bind(index, std::string_view(value));
  }
  Statement& bind(int index, std::nullopt_t);
  template <class T>
  Statement& bind(int index, const std::optional<T>& value) {
    return value ? bind(index, *value) : bind(index, std::nullopt);
  }

  bool step();  // true while a row is available
  void run();   // step to completion
  void reset();

  bool is_null(int column) const;
  std::int64_t integer(int column) const;
  double real(int column) const;
  std::optional<double> optional_real(int column) const;
  std::string text(int column) const;

 private:
  void check(int rc, const char* what) const;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
};

// BEGIN IMMEDIATE on construction (takes the write lock up front, so two writers never
// deadlock upgrading read locks); ROLLBACK unless commit() was called.
class Transaction {
 public:
  explicit Transaction(Database& db);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  Database& db_;
  bool done_ = false;
};

}  // namespace kjit::sql

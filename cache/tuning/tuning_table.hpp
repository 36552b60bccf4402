// The tuned results of one kernel family for one arch and NVRTC version, read from the tuning
// database once and searched in memory: exact key -> bucketed key -> nearest tuned shape in log
// space (the caller's default comes last). After the first read a lookup never touches SQLite;
// the table reads the file again when it changed (checked at most once a second, on a lookup) or
// after reload(). A missing database means no results; a corrupt, unreadable or locked one means
// no results and one warning. Nothing here throws to the launch path.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "cache/tuning/tuning_key.hpp"

namespace kjit::tuning {

// How results are shared across values of a problem field. Exact: only the same value; Pow2:
// every value of one power-of-two bucket, and the nearest tuned value in log space; Pow2Only:
// every value of one power-of-two bucket, never a neighbour bucket's (where the best config
// follows the value, as a split count follows batch and length); Local: not part of the tuning
// key at all (a property of the call that validity rules read, such as the alignment of its
// rows).
enum class Bucket { Exact, Pow2, Pow2Only, Local };

constexpr bool rounds_to_pow2(Bucket b) {
  return b == Bucket::Pow2 || b == Bucket::Pow2Only;
}

struct Dimension {
  std::string name;
  Bucket bucket = Bucket::Exact;
};

std::int64_t next_pow2(std::int64_t v);  // 1 for v <= 1
Shape bucketed(const Shape& shape, const std::vector<Dimension>& dims);

struct Choice {
  Config config;
  std::string source;  // exact, bucket, nearest (or the caller's "default")
};

// What identifies a version of the database file: device, inode, size and mtime of the file and
// of its -wal.
struct FileStamp {
  static FileStamp of(const std::string& path);
  bool operator==(const FileStamp& o) const;
  std::int64_t values[8] = {};
};

// Which results a table holds.
struct TableKey {
  std::string op, template_hash, sm_arch, nvrtc;
};

class TuningTable {
 public:
  // `well_formed` tells a config with exactly the family's fields; other stored rows are
  // skipped with one warning (a row imported from another version, or edited by hand).
  TuningTable(TableKey key, std::vector<Dimension> dims,
              std::function<bool(const Config&)> well_formed);

  // The best stored config for `shape` that `usable` accepts (validity for this problem), or
  // nullopt when none applies.
  std::optional<Choice> find(const Shape& shape, const std::string& dtype,
                             const std::function<bool(const Config&)>& usable);

  void reload();  // the next find reads the database again
  // This process changed the file from `before` to `after` without touching results (the miss
  // log): a table that had read `before` takes `after` as read instead of reading again.
  void adopt(const std::string& path, const FileStamp& before, const FileStamp& after);
  std::size_t size();  // rows held (after reading the database if not yet read)
  const TableKey& key() const { return key_; }

 private:
  struct Row {
    Shape shape;
    Config config;
  };
  void refresh_locked();
  void read_locked(const std::string& path);
  void read_rows_locked(const std::string& path);
  std::string exact_signature(const Shape& shape, const std::string& dtype) const;

  TableKey key_;
  std::vector<Dimension> dims_;
  std::function<bool(const Config&)> well_formed_;
  std::mutex mutex_;
  bool loaded_ = false;
  std::string path_;
  FileStamp stamp_;
  std::chrono::steady_clock::time_point checked_{};
  std::vector<Row> rows_;
  std::unordered_map<std::string, std::size_t> by_key_;  // "dtype|problem key" -> row
  std::unordered_map<std::string, std::vector<std::size_t>> by_exact_dims_;
};

// The process's table for `key` (created on first use), so that every op and thread shares one
// copy of the rows.
std::shared_ptr<TuningTable> shared_table(const TableKey& key, std::vector<Dimension> dims,
                                          std::function<bool(const Config&)> well_formed);

// Bumped whenever a shared table's rows may have changed (a database change noticed, or
// reload_tables()): memos of choices made from the tables compare it and start over.
std::uint64_t generation();
void reload_tables();
// TuningTable::adopt for every shared table.
void adopt_own_write(const std::string& path, const FileStamp& before, const FileStamp& after);

}  // namespace kjit::tuning

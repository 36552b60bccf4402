#include "cache/tuning/tuning_table.hpp"

#include <sys/stat.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <map>

#include <fmt/format.h>

#include "cache/tuning/tuning_db.hpp"
#include "kjit/error.hpp"
#include "util/log.hpp"

namespace kjit::tuning {
namespace {

constexpr int kReadBusyMs = 50;  // a locked database costs a read at most this
constexpr auto kCheckInterval = std::chrono::seconds(1);

std::atomic<std::uint64_t> g_generation{1};

}  // namespace

std::int64_t next_pow2(std::int64_t v) {
  std::int64_t p = 1;
  while (p < v && p < (std::int64_t{1} << 62))
    p <<= 1;
  return p;
}

Shape bucketed(const Shape& shape, const std::vector<Dimension>& dims) {
  Shape out = shape;
  for (const Dimension& d : dims) {
    auto it = out.find(d.name);
    if (it != out.end() && rounds_to_pow2(d.bucket)) it->second = next_pow2(it->second);
  }
  return out;
}

bool FileStamp::operator==(const FileStamp& o) const {
  return std::equal(std::begin(values), std::end(values), std::begin(o.values));
}

FileStamp FileStamp::of(const std::string& path) {
  FileStamp s;
  int i = 0;
  for (const std::string& p : {path, path + "-wal"}) {
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0) {
      s.values[i] = static_cast<std::int64_t>(st.st_dev);
      s.values[i + 1] = static_cast<std::int64_t>(st.st_ino);
      s.values[i + 2] = static_cast<std::int64_t>(st.st_size);
      s.values[i + 3] =
          static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    }
    i += 4;
  }
  return s;
}

TuningTable::TuningTable(TableKey key, std::vector<Dimension> dims,
                         std::function<bool(const Config&)> well_formed)
    : key_(std::move(key)), dims_(std::move(dims)), well_formed_(std::move(well_formed)) {}

std::string TuningTable::exact_signature(const Shape& shape, const std::string& dtype) const {
  std::string s = dtype;
  for (const Dimension& d : dims_) {
    if (d.bucket != Bucket::Exact && d.bucket != Bucket::Pow2Only) continue;
    const auto it = shape.find(d.name);
    if (it == shape.end()) {
      s += fmt::format("|{}=?", d.name);
    } else {
      s += fmt::format("|{}={}", d.name,
                       d.bucket == Bucket::Pow2Only ? next_pow2(it->second) : it->second);
    }
  }
  return s;
}

void TuningTable::read_locked(const std::string& path) {
  rows_.clear();
  by_key_.clear();
  by_exact_dims_.clear();
  if (FileStamp::of(path) == FileStamp{}) {  // no database: no results, silently
    stamp_ = FileStamp{};
    return;
  }
  read_rows_locked(path);
  // Stamped after the read: a reader's own connection leaves an empty -wal behind, which must
  // not count as a change.
  stamp_ = FileStamp::of(path);
}

void TuningTable::read_rows_locked(const std::string& path) {
  try {
    const std::unique_ptr<TuningDb> db = TuningDb::open_results(path, kReadBusyMs);
    if (!db) return;
    int malformed = 0;
    for (const Best& b : db->results(key_.op, key_.template_hash, key_.sm_arch, key_.nvrtc)) {
      const std::optional<Shape> shape = parse_problem_key(b.key.problem_key);
      const std::optional<Config> config = parse_config_json(b.config);
      if (!shape || !config || !well_formed_(*config) || shape->size() != dims_.size()) {
        ++malformed;
        continue;
      }
      by_key_[b.key.dtype + "|" + b.key.problem_key] = rows_.size();
      by_exact_dims_[exact_signature(*shape, b.key.dtype)].push_back(rows_.size());
      rows_.push_back({*shape, *config});
    }
    if (malformed) {
      detail::warn(
          fmt::format("tuning database {}: skipped {} {} result(s) whose shape or "
                      "config this kjit does not read (see `kjit cache ls --op {}`; "
                      "`kjit cache prune --stale` removes them)",
                      path, malformed, key_.op, key_.op));
    }
  } catch (const Error& e) {
    rows_.clear();
    by_key_.clear();
    by_exact_dims_.clear();
    warn_unusable(path, e.what());
  }
}

void TuningTable::refresh_locked() {
  const auto now = std::chrono::steady_clock::now();
  const std::string path = default_database_path();
  if (loaded_ && path == path_ && now - checked_ < kCheckInterval) return;
  checked_ = now;
  if (loaded_ && path == path_ && FileStamp::of(path) == stamp_) return;
  const bool changed = loaded_;
  path_ = path;
  read_locked(path);
  loaded_ = true;
  if (changed) g_generation.fetch_add(1);
}

std::optional<Choice> TuningTable::find(const Shape& shape, const std::string& dtype,
                                        const std::function<bool(const Config&)>& usable) {
  std::lock_guard<std::mutex> lock(mutex_);
  refresh_locked();
  auto row_config = [&](std::size_t i) -> std::optional<Config> {
    if (usable(rows_[i].config)) return rows_[i].config;
    return std::nullopt;
  };
  const std::string exact_key = problem_key(shape);
  if (auto it = by_key_.find(dtype + "|" + exact_key); it != by_key_.end()) {
    if (auto c = row_config(it->second)) return Choice{*c, "exact"};
  }
  const std::string bucket_key = problem_key(bucketed(shape, dims_));
  if (bucket_key != exact_key) {
    if (auto it = by_key_.find(dtype + "|" + bucket_key); it != by_key_.end()) {
      if (auto c = row_config(it->second)) return Choice{*c, "bucket"};
    }
  }
  // Nearest among rows whose Exact dimensions match and whose Pow2Only ones share the bucket:
  // summed |log2 ratio| over the Pow2 ones.
  const auto same = by_exact_dims_.find(exact_signature(shape, dtype));
  if (same == by_exact_dims_.end()) return std::nullopt;
  double best_distance = std::numeric_limits<double>::infinity();
  std::optional<Config> nearest;
  for (std::size_t i : same->second) {
    const Shape& other = rows_[i].shape;
    double distance = 0;
    bool comparable = true;
    for (const Dimension& d : dims_) {
      const auto mine = shape.find(d.name);
      const auto theirs = other.find(d.name);
      if (mine == shape.end() || theirs == other.end()) {
        comparable = false;
        break;
      }
      if (d.bucket == Bucket::Pow2) {
        distance +=
            std::abs(std::log2(static_cast<double>(std::max<std::int64_t>(1, mine->second)) /
                               static_cast<double>(std::max<std::int64_t>(1, theirs->second))));
      }
    }
    if (!comparable || distance >= best_distance) continue;
    if (auto c = row_config(i)) {
      best_distance = distance;
      nearest = std::move(c);
    }
  }
  if (nearest) return Choice{*nearest, "nearest"};
  return std::nullopt;
}

void TuningTable::adopt(const std::string& path, const FileStamp& before, const FileStamp& after) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (loaded_ && path == path_ && stamp_ == before) stamp_ = after;
}

void TuningTable::reload() {
  std::lock_guard<std::mutex> lock(mutex_);
  loaded_ = false;
}

std::size_t TuningTable::size() {
  std::lock_guard<std::mutex> lock(mutex_);
  refresh_locked();
  return rows_.size();
}

namespace {

struct Tables {
  std::mutex mutex;
  std::map<std::string, std::shared_ptr<TuningTable>> by_key;
};

Tables& tables() {
  static Tables& t = *new Tables;  // outlives every static destructor that might look something up
  return t;
}

}  // namespace

std::shared_ptr<TuningTable> shared_table(const TableKey& key, std::vector<Dimension> dims,
                                          std::function<bool(const Config&)> well_formed) {
  const std::string id =
      fmt::format("{}|{}|{}|{}", key.op, key.template_hash, key.sm_arch, key.nvrtc);
  Tables& t = tables();
  std::lock_guard<std::mutex> lock(t.mutex);
  std::shared_ptr<TuningTable>& table = t.by_key[id];
  if (!table) table = std::make_shared<TuningTable>(key, std::move(dims), std::move(well_formed));
  return table;
}

void adopt_own_write(const std::string& path, const FileStamp& before, const FileStamp& after) {
  Tables& t = tables();
  std::lock_guard<std::mutex> lock(t.mutex);
  for (auto& [id, table] : t.by_key)
    table->adopt(path, before, after);
}

std::uint64_t generation() {
  return g_generation.load(std::memory_order_acquire);
}

void reload_tables() {
  Tables& t = tables();
  {
    std::lock_guard<std::mutex> lock(t.mutex);
    for (auto& [id, table] : t.by_key)
      table->reload();
  }
  g_generation.fetch_add(1);
}

}  // namespace kjit::tuning

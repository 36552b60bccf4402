#include "cache/config_lookup.hpp"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <set>

#include <fmt/format.h>

#include "kjit/error.hpp"
#include "kjit/jit.hpp"
#include "util/log.hpp"

namespace kjit::tuning {
namespace {

constexpr std::size_t kMissBatch = 16;
constexpr int kReadBusyMs = 50;    // a locked database costs a lookup at most this, once per shape
constexpr int kWriteBusyMs = 200;  // miss batches, off the per-launch path

// One warning per database path and problem, not one per lookup.
void warn_once(const std::string& path, const std::string& what) {
  static std::mutex mutex;
  static std::set<std::string> warned;
  std::lock_guard<std::mutex> lock(mutex);
  if (warned.insert(path).second) {
    detail::warn(
        fmt::format("tuning database {} unusable ({}); using default configs", path, what));
  }
}

bool print_config() {
  const char* v = std::getenv("KJIT_PRINT_CONFIG");
  return v && *v && std::string(v) != "0";
}

std::int64_t next_pow2(std::int64_t v) {
  std::int64_t p = 1;
  while (p < v)
    p <<= 1;
  return p;
}

// Misses go into an existing database only: running an op never creates one in the user's home
// (`kjit tune` does, and from then on the shapes a deployment misses are recorded).
void write_misses(const std::vector<Miss>& batch) {
  const std::string path = default_database_path();
  std::error_code ec;
  if (batch.empty() || !std::filesystem::exists(path, ec)) return;
  try {
    TuningDb(path, TuningDb::Mode::ReadWrite, kWriteBusyMs).record_misses(batch);
  } catch (const Error& e) {
    warn_once(path, e.what());
  }
}

}  // namespace

Shape bucketed(const Shape& shape, const std::vector<Dimension>& dims) {
  Shape out = shape;
  for (const Dimension& d : dims) {
    auto it = out.find(d.name);
    if (it != out.end() && d.bucket == Bucket::Pow2) it->second = next_pow2(it->second);
  }
  return out;
}

ConfigLookup::ConfigLookup(std::string op, std::string template_hash, std::vector<Dimension> dims)
    : op_(std::move(op)), template_hash_(std::move(template_hash)), dims_(std::move(dims)) {}

ConfigLookup::~ConfigLookup() {
  flush_misses();
}

Choice ConfigLookup::choose(const Shape& shape, const std::string& dtype, const std::string& arch,
                            const std::function<bool(const Config&)>& valid,
                            const std::function<Config()>& fallback) {
  const auto [nv_major, nv_minor] = nvrtc_version();
  const TuningKey key{op_,   template_hash_, problem_key(shape),
                      dtype, arch,           fmt::format("{}.{}", nv_major, nv_minor)};
  const std::string memo_key = key.problem_key + "|" + dtype + "|" + arch;
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto it = memo_.find(memo_key); it != memo_.end()) return it->second;
  Choice choice = lookup(key, shape, valid, fallback);
  if (print_config()) {
    std::fprintf(stderr, "kjit: %s %s %s %s -> %s (%s)\n", op_.c_str(), key.problem_key.c_str(),
                 dtype.c_str(), arch.c_str(), config_json(choice.config).c_str(),
                 choice.source.c_str());
  }
  if (choice.source != "exact") {
    pending_.push_back(Miss{key, choice.source, 1});
    if (pending_.size() >= kMissBatch) {
      std::vector<Miss> batch;
      batch.swap(pending_);
      write_misses(batch);
    }
  }
  return memo_.emplace(memo_key, std::move(choice)).first->second;
}

Choice ConfigLookup::lookup(const TuningKey& key, const Shape& shape,
                            const std::function<bool(const Config&)>& valid,
                            const std::function<Config()>& fallback) {
  const std::string path = default_database_path();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return Choice{fallback(), "default"};
  try {
    TuningDb db(path, TuningDb::Mode::ReadOnly, kReadBusyMs);
    auto usable = [&](const Best& b) -> std::optional<Config> {
      if (b.state == "stale") return std::nullopt;
      std::optional<Config> c = parse_config_json(b.config);
      if (c && valid(*c)) return c;
      return std::nullopt;
    };
    if (auto b = db.best(key)) {
      if (auto c = usable(*b)) return Choice{*c, "exact"};
    }
    TuningKey bucket_key = key;
    bucket_key.problem_key = problem_key(bucketed(shape, dims_));
    if (bucket_key.problem_key != key.problem_key) {
      if (auto b = db.best(bucket_key)) {
        if (auto c = usable(*b)) return Choice{*c, "bucket"};
      }
    }
    // Nearest: exact dimensions must match; distance is summed |log2 ratio| over the others.
    double best_distance = std::numeric_limits<double>::infinity();
    std::optional<Config> nearest;
    for (const Best& b : db.candidates(key)) {
      const std::optional<Shape> other = parse_problem_key(b.key.problem_key);
      if (!other || other->size() != shape.size()) continue;
      double distance = 0;
      bool comparable = true;
      for (const Dimension& d : dims_) {
        const auto mine = shape.find(d.name);
        const auto theirs = other->find(d.name);
        if (mine == shape.end() || theirs == other->end()) {
          comparable = false;
          break;
        }
        if (d.bucket == Bucket::Exact) {
          comparable &= mine->second == theirs->second;
        } else {
          distance +=
              std::abs(std::log2(static_cast<double>(std::max<std::int64_t>(1, mine->second)) /
                                 static_cast<double>(std::max<std::int64_t>(1, theirs->second))));
        }
      }
      if (!comparable || distance >= best_distance) continue;
      if (auto c = usable(b)) {
        best_distance = distance;
        nearest = c;
      }
    }
    if (nearest) return Choice{*nearest, "nearest"};
  } catch (const Error& e) {
    warn_once(path, e.what());
  }
  return Choice{fallback(), "default"};
}

void ConfigLookup::flush_misses() {
  std::vector<Miss> batch;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    batch.swap(pending_);
  }
  write_misses(batch);
}

void ConfigLookup::forget() {
  std::lock_guard<std::mutex> lock(mutex_);
  memo_.clear();
}

}  // namespace kjit::tuning

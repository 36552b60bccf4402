// Run-time choice of a tuned config: exact key -> bucketed key -> nearest tuned shape in log
// space -> the op's built-in default (valid for every shape). Memoised per (shape, dtype, arch),
// so the database is read once per shape; misses are recorded in batches for offline tuning.
// A missing database means defaults; a corrupt, unreadable or locked one means defaults with one
// warning. Nothing here throws to the launch path.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "cache/tuning_db.hpp"
#include "cache/tuning_key.hpp"

namespace kjit::tuning {

enum class Bucket { Exact, Pow2 };  // Pow2: round up to a power of two

struct Dimension {
  std::string name;
  Bucket bucket = Bucket::Exact;
};

Shape bucketed(const Shape& shape, const std::vector<Dimension>& dims);

struct Choice {
  Config config;
  std::string source;  // exact, bucket, nearest, default
};

class ConfigLookup {
 public:
  // `template_hash` is the op's current template hash: results for other kernel versions never
  // apply. Dimensions with Bucket::Exact must match for a nearest-neighbour result to apply.
  ConfigLookup(std::string op, std::string template_hash, std::vector<Dimension> dims);
  ~ConfigLookup();  // flushes pending misses

  // `valid` rejects tuned configs that cannot run this shape; `fallback` is the default.
  Choice choose(const Shape& shape, const std::string& dtype, const std::string& arch,
                const std::function<bool(const Config&)>& valid,
                const std::function<Config()>& fallback);

  void flush_misses();
  void forget();  // drops the memo (tests; after a tuning run in the same process)

 private:
  Choice lookup(const TuningKey& key, const Shape& shape,
                const std::function<bool(const Config&)>& valid,
                const std::function<Config()>& fallback);

  std::string op_, template_hash_;
  std::vector<Dimension> dims_;
  std::mutex mutex_;
  std::unordered_map<std::string, Choice> memo_;
  std::vector<Miss> pending_;
};

}  // namespace kjit::tuning

// The op path every kernel family shares: problem -> bucketed problem -> memo -> tuned table ->
// default -> kernel -> launch. The memo is keyed by the bucketed problem (the granularity the
// config is chosen at) and the arch, and bounded; a repeated bucket costs a memo lookup and the
// launch. The tuned table is read once per process (tuning_table.hpp) and a miss is queued,
// never written, here.
#pragma once

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "cache/tuning/miss_log.hpp"
#include "cache/tuning/tuning_table.hpp"
#include "driver/arch.hpp"
#include "kjit/jit.hpp"
#include "nvrtc/compiler.hpp"
#include "ops/kernel_family.hpp"
#include "ops/lru_memo.hpp"

namespace kjit::ops {

// KJIT_PRINT_CONFIG=1: log each new choice and where it came from.
bool print_config();

template <class F>
class Dispatcher {
 public:
  using Problem = typename F::Problem;
  using Config = typename F::Config;
  static constexpr std::size_t kMemoCapacity = 4096;

  static Dispatcher& instance() {
    static Dispatcher d;
    return d;
  }

  // The config for `problem` on `arch`: memo, else the tuned table, else the family's default.
  // Needs no GPU.
  Config choose(const Problem& problem, const Arch& arch) {
    return entry(bucketed<F>(problem), arch, false).config;
  }

  // Validated call -> launch on the current device.
  void run(const Call<F>& call, StreamHandle stream) {
    const Entry e = entry(bucketed<F>(call.problem), arch::current(), true);
    F::launch(*e.program, e.config, call.problem, call.args, stream);
  }

  std::size_t memo_size() { return memo_.size(); }

 private:
  struct Entry {
    Config config;
    std::optional<Program> program;  // loaded on the first run of the bucket
  };
  using MemoKey = std::array<std::int64_t, std::size(F::kShape) + 2>;
  struct MemoHash {
    std::size_t operator()(const MemoKey& k) const {
      std::size_t h = 0;
      for (std::int64_t v : k)
        h = h * 1000003u ^ std::hash<std::int64_t>()(v);
      return h;
    }
  };

  // The memo's entry for a bucket; on a miss its config is decided (and its kernel loaded, when
  // `with_kernel`), outside the memo's lock: loading may compile.
  Entry entry(const Problem& b, const Arch& arch, bool with_kernel) {
    const MemoKey key = memo_key(b, arch);
    forget_if_stale();
    std::optional<Entry> e = memo_.get(key);
    if (e && (e->program || !with_kernel)) return *e;
    Entry fresh{e ? e->config : decide(b, arch), std::nullopt};
    if (with_kernel) fresh.program = load(F::spec(fresh.config, b, arch));
    memo_.put(key, fresh);
    return fresh;
  }

  static MemoKey memo_key(const Problem& b, const Arch& arch) {
    MemoKey k{};
    std::size_t i = 0;
    for (const auto& f : F::kShape)
      k[i++] = f.get(b);
    k[i++] = static_cast<std::int64_t>(b.dtype);
    k[i] = arch.id();
    return k;
  }

  // A reload (or a database change a table noticed) makes every memoised choice suspect.
  void forget_if_stale() {
    const std::uint64_t g = tuning::generation();
    if (generation_.load(std::memory_order_relaxed) != g) {
      memo_.clear();
      generation_.store(g, std::memory_order_relaxed);
    }
  }

  Config decide(const Problem& b, const Arch& arch) {
    const tuning::TableKey table_key{F::kName, template_hash<F>(), arch.name(),
                                     nvrtc::version_text()};
    const tuning::Shape shape = shape_of<F>(b);
    const std::string dtype = dtype_name(b.dtype);
    const std::optional<tuning::Choice> tuned =
        tuning::shared_table(table_key, dimensions<F>(), [](const tuning::Config& m) {
          return config_of<F>(m).has_value();
        })->find(shape, dtype, [&](const tuning::Config& m) {
          const std::optional<Config> c = config_of<F>(m);
          return c && F::valid(*c, b, arch);
        });
    const Config c = tuned ? *config_of<F>(tuned->config) : F::default_config(b, arch);
    const std::string source = tuned ? tuned->source : "default";
    const std::string key = tuning::problem_key(shape);
    // A default no config of the family can run on this arch (shared memory it does not have):
    // refused here, once per bucket, rather than by the driver at launch.
    if (!F::valid(c, b, arch)) {
      throw InvalidArgument(
          fmt::format("{} {} {}: no config of the family runs on {} (the default {} does not)",
                      F::kName, key, dtype, arch.name(), tuning::config_json(config_map<F>(c))));
    }
    if (print_config()) {
      std::fprintf(stderr, "kjit: %s %s %s %s -> %s (%s)\n", F::kName, key.c_str(), dtype.c_str(),
                   arch.name().c_str(), tuning::config_json(config_map<F>(c)).c_str(),
                   source.c_str());
    }
    if (source != "exact") {
      tuning::record_miss(
          {{F::kName, table_key.template_hash, key, dtype, arch.name(), table_key.nvrtc},
           source,
           1});
    }
    return c;
  }

  std::atomic<std::uint64_t> generation_{0};
  LruMemo<MemoKey, Entry, MemoHash> memo_{kMemoCapacity};
};

// The op path of a validated call.
template <class F>
void run(const Call<F>& call, StreamHandle stream) {
  Dispatcher<F>::instance().run(call, stream);
}

}  // namespace kjit::ops

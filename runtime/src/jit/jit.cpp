// The lookup chain behind kjit::load and kjit::compile: memory -> disk store -> NVRTC.
#include "kjit/jit.hpp"

#include <atomic>
#include <chrono>
#include <thread>

#include <fmt/format.h>

#include "cache/store/kernel_store.hpp"
#include "jit/compile_plan.hpp"
#include "jit/dump.hpp"
#include "jit/loaded_program.hpp"
#include "jit/settings.hpp"
#include "jit/single_flight.hpp"
#include "kjit/error.hpp"
#include "nvrtc/compiler.hpp"
#include "nvrtc/ptx_entry.hpp"

namespace kjit {
namespace {

struct State {
  std::atomic<std::uint64_t> memory_hits{0};
  std::atomic<std::uint64_t> disk_hits{0};
  std::atomic<std::uint64_t> compiles{0};
  std::atomic<std::uint64_t> compile_nanoseconds{0};
  // Loaded programs stay for the process; compiles are only deduplicated while in flight.
  detail::SingleFlight<CacheKey, detail::LoadedProgram, CacheKeyHash> loaded{true};
  detail::SingleFlight<CacheKey, CompiledProgram, CacheKeyHash> compiling{false};
};

State& state() {
  static State s;
  return s;
}

CompiledProgram compile_now(const KernelSpec& spec, const detail::PlannedKey& planned,
                            const detail::Settings& settings) {
  detail::CompilePlan plan = detail::make_plan(spec, planned, settings.cache_dir);
  nvrtc::Result result;
  try {
    result = nvrtc::compile(plan.request);
  } catch (const CompileError& e) {
    if (!settings.dump_dir.empty()) {
      detail::dump_compile(settings.dump_dir, planned.key, plan, nullptr, e.log);
    }
    throw;
  }
  state().compiles.fetch_add(1);
  state().compile_nanoseconds.fetch_add(static_cast<std::uint64_t>(result.seconds * 1e9));
  if (!settings.dump_dir.empty()) {
    detail::dump_compile(settings.dump_dir, planned.key, plan, &result, result.log);
  }
  CompiledProgram p;
  p.key = planned.key;
  p.description = plan.description;
  p.arch = planned.arch;
  for (std::size_t i = 0; i < spec.name_expressions.size(); ++i) {
    CompiledKernel k;
    k.name_expression = spec.name_expressions[i];
    k.lowered_name = result.lowered_names[i];
    if (auto it = result.resources.find(k.lowered_name); it != result.resources.end()) {
      k.resources = it->second;
    }
    k.parameter_count = nvrtc::entry_parameter_count(result.ptx, k.lowered_name);
    p.kernels.push_back(std::move(k));
  }
  p.cubin = std::move(result.cubin);
  return p;
}

std::shared_ptr<const CompiledProgram> fetch(const KernelSpec& spec,
                                             const detail::PlannedKey& planned, Origin* origin) {
  bool joined = false;
  Origin served = Origin::Compiled;
  auto program = state().compiling.get(
      planned.key,
      [&]() -> std::shared_ptr<const CompiledProgram> {
        const detail::Settings settings = detail::current_settings();
        const store::KernelStore store = detail::kernel_store(settings);
        if (settings.cache_mode != detail::CacheMode::Off) {
          if (auto hit = store.read(planned.key)) {
            state().disk_hits.fetch_add(1);
            served = Origin::Disk;
            return std::make_shared<const CompiledProgram>(std::move(*hit));
          }
        }
        if (settings.no_jit) {
          throw MissingKernelError(fmt::format(
              "KJIT_NO_JIT=1 and this specialisation is in neither the memory nor the disk cache "
              "({}): {} (key {}, arch {}). Precompile it (`kjit precompile`, without KJIT_NO_JIT) "
              "or unset "
              "KJIT_NO_JIT.",
              store.folder().string(), spec.describe(), planned.key.hex(), planned.arch));
        }
        auto compiled =
            std::make_shared<const CompiledProgram>(compile_now(spec, planned, settings));
        if (settings.cache_mode == detail::CacheMode::ReadWrite) store.write(*compiled);
        served = Origin::Compiled;
        return compiled;
      },
      &joined);
  if (origin) *origin = joined ? Origin::Memory : served;
  return program;
}

}  // namespace

std::pair<int, int> nvrtc_version() {
  return nvrtc::version();
}

std::string version() {
  return KJIT_VERSION_STRING;
}

Program load(const KernelSpec& spec) {
  return load(spec, nullptr);
}

Program load(const KernelSpec& spec, Origin* origin) {
  const detail::PlannedKey planned = detail::plan_key(spec);
  bool joined = false;
  auto loaded = state().loaded.get(
      planned.key, [&] { return detail::load_into_driver(*fetch(spec, planned, origin)); },
      &joined);
  if (joined) {
    state().memory_hits.fetch_add(1, std::memory_order_relaxed);
    if (origin) *origin = Origin::Memory;
  }
  return Program(std::move(loaded));
}

CompiledProgram compile(const KernelSpec& spec, Origin* origin) {
  return *fetch(spec, detail::plan_key(spec), origin);
}

CacheKey cache_key(const KernelSpec& spec) {
  return detail::plan_key(spec).key;
}

std::vector<PrecompileResult> precompile(const std::vector<KernelSpec>& specs, int threads) {
  std::vector<PrecompileResult> results;
  for (const KernelSpec& s : specs)
    results.emplace_back(s);
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = std::min<int>(threads, static_cast<int>(specs.size()));
  std::atomic<std::size_t> next{0};
  auto worker = [&] {
    for (std::size_t i; (i = next.fetch_add(1)) < results.size();) {
      PrecompileResult& r = results[i];
      try {
        r.program = compile(r.spec, &r.origin);
        r.ok = true;
      } catch (const std::exception& e) {
        r.error = e.what();
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back(worker);
  for (std::thread& t : pool)
    t.join();
  return results;
}

Counters counters() {
  const State& s = state();
  Counters c;
  c.memory_hits = s.memory_hits.load();
  c.disk_hits = s.disk_hits.load();
  c.compiles = s.compiles.load();
  c.compile_seconds = static_cast<double>(s.compile_nanoseconds.load()) * 1e-9;
  return c;
}

void clear_memory_cache() {
  state().loaded.clear();
}

}  // namespace kjit

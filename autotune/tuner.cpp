#include "autotune/tuner.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>

#include <fmt/format.h>

#include "kjit/error.hpp"
#include "kjit/jit.hpp"
#include "nvrtc/compiler.hpp"

namespace kjit::autotune {
namespace {

constexpr int kWarmupRuns = 3;
constexpr int kMinSamples = 5;
constexpr int kMaxSamples = 200;
constexpr double kEarlyDrop = 1.5;  // stop timing a candidate this much slower than the best

struct Stats {
  double median = 0, p20 = 0, p80 = 0;
  int samples = 0;
};

Stats summarize(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  auto at = [&](double q) { return us[static_cast<std::size_t>(q * (us.size() - 1) + 0.5)]; };
  return Stats{at(0.5), at(0.2), at(0.8), static_cast<int>(us.size())};
}

// Times single runs with CUDA events until the budget is spent, rotating input sets; stops
// early when the candidate is clearly slower than `best_us`.
Stats measure(ops::Workload& w, const Program& k, const tuning::Config& c, double budget_s,
              double best_us, StreamHandle stream) {
  for (int i = 0; i < kWarmupRuns; ++i)
    w.run(k, c, i, stream);
  std::vector<double> us;
  double spent_s = 0;
  Event start, stop;
  for (int i = 0;
       i < kMaxSamples && (spent_s < budget_s || static_cast<int>(us.size()) < kMinSamples); ++i) {
    start.record(stream);
    w.run(k, c, i, stream);
    stop.record(stream);
    stop.synchronize();
    const double ms = stop.elapsed_ms_since(start);
    us.push_back(ms * 1e3);
    spent_s += ms * 1e-3 + 20e-6;  // plus the host round trip of a synchronised sample
    if (static_cast<int>(us.size()) == kMinSamples && summarize(us).median > kEarlyDrop * best_us) {
      break;
    }
  }
  return summarize(us);
}

// max|a - b| / max|b| against the reference b; a NaN or infinity where b has none fails.
bool agrees(const std::vector<double>& a, const std::vector<double>& b, double tolerance,
            std::string* why) {
  if (a.size() != b.size()) {
    *why = fmt::format("output has {} values, the reference {}", a.size(), b.size());
    return false;
  }
  double max_diff = 0, max_ref = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const bool a_finite = std::isfinite(a[i]), b_finite = std::isfinite(b[i]);
    if (!a_finite || !b_finite) {
      if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) {
        *why = fmt::format("value {} is {} where the default config gives {}", i, a[i], b[i]);
        return false;
      }
      continue;
    }
    max_diff = std::max(max_diff, std::abs(a[i] - b[i]));
    max_ref = std::max(max_ref, std::abs(b[i]));
  }
  const double error = max_ref > 0 ? max_diff / max_ref : max_diff;
  *why = fmt::format("differs from the default config's output by {:.3g} (relative to its max)",
                     error);
  return error <= tolerance;
}

}  // namespace

Candidates enumerate(const ops::KernelFamily& family, const ops::TuneCase& c, const Arch& arch) {
  Candidates out;
  const tuning::Config fallback = family.default_config(c, arch);
  out.configs.push_back(fallback);
  for (const tuning::Config& config : family.space(c, arch)) {
    ++out.space;
    if (family.valid(config, c, arch)) {
      ++out.valid;
      if (config != fallback) out.configs.push_back(config);
    }
  }
  return out;
}

TuneOutcome tune(const ops::KernelFamily& family, const ops::TuneCase& c,
                 const TuneOptions& options, tuning::TuningDb& db,
                 const std::function<void(int, int)>& progress) {
  const auto started = std::chrono::steady_clock::now();
  const DeviceInfo device = device_info(current_device());
  const Arch arch(device.arch());
  TuneOutcome out;
  out.tune_case = c;
  out.key = {
      family.name(), family.template_hash(), tuning::problem_key(c.shape), dtype_name(c.dtype),
      arch.name(),   nvrtc::version_text()};
  const Candidates space = enumerate(family, c, arch);
  out.space = space.space;
  out.valid = space.valid;
  const tuning::Provenance provenance{
      device.name, fmt::format("{}", driver_version()), version(),
      fmt::format("cuda-events;warmup={};budget={:.0f}ms;min-samples={};rotating-inputs;median",
                  kWarmupRuns, options.seconds_per_candidate * 1e3, kMinSamples),
      "tune"};

  // Resume: configs with a trial already recorded for this key are not measured again.
  std::map<std::string, tuning::Trial> done;
  if (options.resume) {
    for (tuning::Trial& t : db.trials(out.key))
      done.emplace(t.config, std::move(t));
  }
  out.resumed = static_cast<int>(done.size());
  auto record = [&](tuning::Trial t) {
    t.key = out.key;
    db.record_trial(t, provenance);
    done[t.config] = std::move(t);
  };

  // Compile every candidate not yet tried (and the default, which is the reference) in
  // parallel; failures and spilling kernels are recorded and pruned.
  std::vector<KernelSpec> specs;
  std::vector<const tuning::Config*> to_compile;
  for (const tuning::Config& config : space.configs) {
    if (&config == &space.configs.front() || !done.count(tuning::config_json(config))) {
      specs.push_back(family.spec(config, c, arch));
      to_compile.push_back(&config);
    }
  }
  std::map<std::string, bool> compiled_ok;
  const std::vector<PrecompileResult> compiled = precompile(specs, options.compile_threads);
  for (std::size_t i = 0; i < compiled.size(); ++i) {
    const std::string json = tuning::config_json(*to_compile[i]);
    const PrecompileResult& r = compiled[i];
    std::string problem;
    if (!r.ok) {
      problem = "compile_fail";
    } else {
      for (const CompiledKernel& k : r.program.kernels) {
        if (k.resources.spills() || k.resources.stack_frame_bytes > 0) problem = "resource_fail";
      }
    }
    compiled_ok[json] = problem.empty();
    if (!problem.empty()) {
      ++out.pruned;
      tuning::Trial t;
      t.config = json;
      t.status = problem;
      t.error = r.ok ? "spills or stack frame" : r.error.substr(0, 2000);
      record(t);
    }
  }
  const std::string default_json = tuning::config_json(space.configs.front());
  if (!compiled_ok[default_json]) {
    throw Error(fmt::format("{}: the default config {} does not compile for {}: {}", family.name(),
                            default_json, arch.name(), done[default_json].error));
  }

  std::unique_ptr<ops::Workload> work =
      family.workload(c, static_cast<std::size_t>(device.l2_bytes));
  Stream stream;
  // The reference output: the default config, on input set 0.
  const Program default_kernel = load(family.spec(space.configs.front(), c, arch));
  work->poison_output();
  work->run(default_kernel, space.configs.front(), 0, stream.handle());
  stream.synchronize();
  const std::vector<double> reference = work->output();

  double best_us = std::numeric_limits<double>::infinity();
  for (const auto& [json, t] : done) {
    if (t.status == "ok" && t.median_us) best_us = std::min(best_us, *t.median_us);
  }
  const int total = static_cast<int>(space.configs.size());
  int finished = 0;
  for (const tuning::Config& config : space.configs) {
    const std::string json = tuning::config_json(config);
    if (done.count(json)) {
      if (progress) progress(++finished, total);
      continue;
    }
    tuning::Trial t;
    t.config = json;
    try {
      const Program k = load(family.spec(config, c, arch));
      const Stats s =
          measure(*work, k, config, options.seconds_per_candidate, best_us, stream.handle());
      t.median_us = s.median;
      t.p20_us = s.p20;
      t.p80_us = s.p80;
      t.samples = s.samples;
      if (s.median > best_us * (1 + options.margin)) {
        t.status = "slow";  // cannot win: not validated
      } else {
        work->poison_output();
        work->run(k, config, 0, stream.handle());
        stream.synchronize();
        std::string why;
        if (agrees(work->output(), reference, work->tolerance(), &why)) {
          t.status = "ok";
          best_us = std::min(best_us, s.median);
        } else {
          t.status = "verify_fail";
          t.error = why;
        }
      }
      ++out.measured;
    } catch (const Error& e) {
      t.status = "launch_fail";
      t.error = e.what();
    }
    if (t.status != "ok" && t.status != "slow") ++out.failed;
    record(t);
    if (progress) progress(++finished, total);
  }

  // The winner among validated trials; the incumbent (stored winner, else the default) keeps
  // its place unless beaten by more than the margin.
  const tuning::Trial* winner = nullptr;
  std::vector<double> medians;
  for (const auto& [json, t] : done) {
    if ((t.status == "ok" || t.status == "slow") && t.median_us) medians.push_back(*t.median_us);
    if (t.status == "ok" && t.median_us && (!winner || *t.median_us < *winner->median_us)) {
      winner = &t;
    }
  }
  if (!winner)
    throw Error(fmt::format("{}: no candidate passed for {}", family.name(), out.key.problem_key));
  if (!done.count(default_json) || !done.at(default_json).median_us) {
    throw Error(fmt::format("{}: the default config {} could not be measured for {}", family.name(),
                            default_json, out.key.problem_key));
  }
  const tuning::Trial& fallback = done.at(default_json);
  std::string incumbent_json = default_json;
  if (std::optional<tuning::Best> stored = db.best(out.key);
      stored && stored->state != "stale" && done.count(stored->config) &&
      done.at(stored->config).status == "ok") {
    incumbent_json = stored->config;
  }
  const tuning::Trial& incumbent = done.at(incumbent_json);
  const tuning::Trial* chosen = winner;
  out.decision = "fastest";
  if (winner->config != incumbent.config && incumbent.median_us &&
      *winner->median_us > *incumbent.median_us * (1 - options.margin)) {
    chosen = &incumbent;
    out.decision = incumbent_json == default_json ? "default kept (within margin)"
                                                  : "incumbent kept (within margin)";
  }
  std::sort(medians.begin(), medians.end());
  for (double m : medians) {
    if (m != *chosen->median_us) {
      out.runner_up_us = m;
      break;
    }
  }
  out.best = *tuning::parse_config_json(chosen->config);
  out.best_us = *chosen->median_us;
  out.default_us = fallback.median_us.value_or(0);
  out.verified = true;
  tuning::Best row;
  row.key = out.key;
  row.config = chosen->config;
  row.median_us = out.best_us;
  row.runner_up_us = out.runner_up_us;
  row.default_us = fallback.median_us;
  row.verified = true;
  row.provenance = provenance;
  const tuning::Upsert u = db.upsert_best(row, options.margin);
  if (u == tuning::Upsert::KeptPinned) out.decision += "; stored row is pinned";
  if (u == tuning::Upsert::KeptIncumbent) out.decision += "; stored winner kept";
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return out;
}

}  // namespace kjit::autotune

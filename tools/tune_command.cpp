// `kjit tune`: tunes kernel families for shapes given as flags, a JSON file or named presets,
// into the tuning database.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "autotune/tuner.hpp"
#include "driver/arch.hpp"
#include "kjit/device.hpp"
#include "kjit/error.hpp"
#include "tools/commands.hpp"

namespace kjit::tools {
namespace {

struct Options {
  std::string op = "merge_states";
  std::vector<std::string> presets, shapes;
  std::string dtype = "bf16";
  std::string shapes_file;
  double budget_s = 0;  // per shape; 0: the per-candidate default
  std::string arch;     // --dry-run's target; else the current device's
  bool no_resume = false, dry_run = false, list = false;
};

struct Job {
  const ops::KernelFamily* family;
  ops::TuneCase tune_case;
};

const ops::KernelFamily& require_family(const std::string& name) {
  if (const ops::KernelFamily* f = ops::find_family(name)) return *f;
  std::string known;
  for (const ops::KernelFamily* f : ops::families())
    known += " " + f->name();
  throw InvalidArgument(fmt::format("unknown op \"{}\"; tunable ops:{}", name, known));
}

DType require_dtype(const std::string& name) {
  if (std::optional<DType> d = dtype_from_name(name)) return *d;
  throw InvalidArgument("unknown dtype \"" + name + "\" (bf16, fp16, fp32)");
}

// A job whose shape the family's own rules accept.
Job checked_job(const ops::KernelFamily& family, tuning::Shape shape, const std::string& dtype) {
  Job job{&family, {std::move(shape), require_dtype(dtype)}};
  family.check(job.tune_case);
  return job;
}

// "D=512,N=4,rows=65536"
tuning::Shape parse_shape(const std::string& text) {
  std::string key = text;
  std::replace(key.begin(), key.end(), ',', ';');
  std::optional<tuning::Shape> s = tuning::parse_problem_key(key);
  if (!s || s->empty()) {
    throw InvalidArgument("--shape \"" + text + "\" is not NAME=INT[,NAME=INT...]");
  }
  return *s;
}

std::vector<Job> jobs_from(const Options& o) {
  std::vector<Job> jobs;
  for (const std::string& name : o.presets) {
    bool found = false;
    for (const ops::KernelFamily* f : ops::families()) {
      for (ops::NamedCases& preset : f->presets()) {
        if (preset.name != name) continue;
        for (ops::TuneCase& c : preset.cases)
          jobs.push_back({f, std::move(c)});
        found = true;
      }
    }
    if (!found) throw InvalidArgument("unknown preset \"" + name + "\" (see kjit tune --list)");
  }
  for (const std::string& s : o.shapes)
    jobs.push_back(checked_job(require_family(o.op), parse_shape(s), o.dtype));
  if (!o.shapes_file.empty()) {
    std::error_code ec;
    if (std::filesystem::is_directory(o.shapes_file, ec))
      throw InvalidArgument("--shapes-file " + o.shapes_file + " is a folder");
    std::ifstream in(o.shapes_file);
    if (!in) throw InvalidArgument("cannot read --shapes-file " + o.shapes_file);
    try {
      for (const auto& item : nlohmann::json::parse(in)) {
        jobs.push_back(checked_job(require_family(item.value("op", o.op)),
                                   item.at("shape").get<tuning::Shape>(),
                                   item.value("dtype", o.dtype)));
      }
    } catch (const nlohmann::json::exception& e) {
      throw InvalidArgument(
          fmt::format("--shapes-file {}: {} (expected [{{\"op\": ..., \"dtype\": "
                      "..., \"shape\": {{\"D\": 512, ...}}}}, ...])",
                      o.shapes_file, e.what()));
    }
  }
  if (jobs.empty())
    throw InvalidArgument("nothing to tune: give --preset, --shape or --shapes-file");
  return jobs;
}

void progress_bar(const std::string& label, int done, int total,
                  std::chrono::steady_clock::time_point start) {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double eta = done ? elapsed / done * (total - done) : 0;
  const int width = 30, filled = total ? width * done / total : width;
  std::fprintf(stderr, "\r%-40s [%s%s] %d/%d, ETA %.0f s   ", label.c_str(),
               std::string(filled, '#').c_str(), std::string(width - filled, ' ').c_str(), done,
               total, eta);
  if (done == total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

int run(const Options& o) {
  if (o.list) {
    for (const ops::KernelFamily* f : ops::families()) {
      for (const ops::NamedCases& p : f->presets()) {
        std::cout << fmt::format("{:<22} {}:", p.name, f->name());
        for (const ops::TuneCase& c : p.cases)
          std::cout << fmt::format(" [{} {}]", tuning::problem_key(c.shape), dtype_name(c.dtype));
        std::cout << "\n";
      }
    }
    return 0;
  }
  const std::vector<Job> jobs = jobs_from(o);
  if (o.dry_run) {
    const Arch arch = arch::requested_or_current(o.arch);
    std::cout << "for " << arch.name() << "\n";
    for (const Job& j : jobs) {
      const autotune::Candidates s = autotune::enumerate(*j.family, j.tune_case, arch);
      std::cout << fmt::format(
          "{} {} {}: {} configs in the space, {} pruned by constraints, {} "
          "to compile and time; default {}\n",
          j.family->name(), tuning::problem_key(j.tune_case.shape), dtype_name(j.tune_case.dtype),
          s.space, s.space - s.valid, s.valid,
          tuning::config_json(j.family->default_config(j.tune_case, arch)));
      // Each parameter's values, as the space spans them.
      std::map<std::string, std::set<std::int64_t>> domains;
      for (const tuning::Config& c : j.family->space(j.tune_case, arch)) {
        for (const auto& [name, value] : c)
          domains[name].insert(value);
      }
      for (const auto& [name, domain] : domains) {
        std::cout << "  " << name << ":";
        for (std::int64_t v : domain)
          std::cout << " " << v;
        std::cout << "\n";
      }
    }
    return 0;
  }
  std::string reason;
  if (!driver_available(&reason)) throw Error("kjit tune needs a CUDA GPU: " + reason);
  if (!o.arch.empty())
    throw InvalidArgument("--arch goes with --dry-run: tuning measures this GPU");
  const Arch arch(device_info(current_device()).arch());
  tuning::TuningDb db(tuning::default_database_path(), tuning::TuningDb::Mode::ReadWrite);
  std::cerr << "tuning database: " << db.path() << "\n";
  std::vector<autotune::TuneOutcome> outcomes;
  for (const Job& j : jobs) {
    autotune::TuneOptions opts;
    opts.resume = !o.no_resume;
    if (o.budget_s > 0) {
      opts.seconds_per_candidate =
          o.budget_s / std::max(1, autotune::enumerate(*j.family, j.tune_case, arch).valid);
    }
    const std::string label =
        fmt::format("{} {} {}", j.family->name(), tuning::problem_key(j.tune_case.shape),
                    dtype_name(j.tune_case.dtype));
    const auto start = std::chrono::steady_clock::now();
    outcomes.push_back(autotune::tune(*j.family, j.tune_case, opts, db, [&](int done, int total) {
      progress_bar(label, done, total, start);
    }));
  }
  std::cout << fmt::format("{:<13} {:<24} {:<5} {:<52} {:>9} {:>9} {:>7} {:>8}  {}\n", "op",
                           "shape", "dtype", "best config", "time us", "default", "speedup",
                           "verified", "measured/resumed/failed");
  for (const autotune::TuneOutcome& r : outcomes) {
    std::cout << fmt::format(
        "{:<13} {:<24} {:<5} {:<52} {:>9.2f} {:>9.2f} {:>6.2f}x {:>8}  {}/{}/{} "
        "({}, {:.1f} s)\n",
        r.key.op, r.key.problem_key, r.key.dtype, tuning::config_json(r.best), r.best_us,
        r.default_us, r.default_us / r.best_us, r.verified ? "yes" : "no", r.measured, r.resumed,
        r.failed, r.decision, r.seconds);
  }
  return 0;
}

}  // namespace

void add_tune_command(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("tune", "Tune ops for given shapes into the tuning database");
  cmd->add_option("--preset", o->presets, "Named shape sets (see --list)");
  cmd->add_option("--op", o->op, "Op for --shape and --shapes-file entries")->capture_default_str();
  cmd->add_option("--shape", o->shapes, "Shape, e.g. D=512,N=4,rows=65536");
  cmd->add_option("--dtype", o->dtype, "Dtype for --shape: bf16, fp16, fp32")
      ->capture_default_str();
  cmd->add_option("--shapes-file", o->shapes_file, "JSON list of {op, dtype, shape}");
  cmd->add_option("--budget", o->budget_s,
                  "Timing budget per shape, in seconds (default: 50 ms per candidate)")
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            char* end = nullptr;
            const double v = std::strtod(text.c_str(), &end);
            return end && !*end && std::isfinite(v) && v > 0
                       ? ""
                       : "must be a positive number of seconds";
          },
          "SECONDS"));
  cmd->add_flag("--no-resume", o->no_resume,
                "Measure every config again (default: reuse trials already in the database)");
  cmd->add_flag("--dry-run", o->dry_run, "Print the space and the pruned count; measure nothing");
  cmd->add_option("--arch", o->arch, "Arch for --dry-run without a GPU, e.g. sm_90a");
  cmd->add_flag("--list", o->list, "List the presets");
  cmd->callback([exit_code, o] { *exit_code = run(*o); });
}

}  // namespace kjit::tools

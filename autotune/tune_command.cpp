#include "autotune/tune_command.hpp"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "autotune/tuner.hpp"
#include "jit/compile_plan.hpp"
#include "kjit/device.hpp"
#include "kjit/error.hpp"

namespace kjit::autotune {
namespace {

struct Options {
  std::string op = "merge_states";
  std::vector<std::string> presets, shapes;
  std::string dtype = "bf16";
  std::string shapes_file;
  double budget_s = 0;  // per shape; 0: the per-candidate default
  std::string arch;     // --dry-run's target; else the current device's
  bool resume = true, dry_run = false, list = false;
};

struct Job {
  const TunableOp* op;
  Target target;
};

const TunableOp& require_op(const std::string& name) {
  if (const TunableOp* op = find_op(name)) return *op;
  std::string known;
  for (const TunableOp* op : registry())
    known += " " + op->name();
  throw InvalidArgument(fmt::format("unknown op \"{}\"; tunable ops:{}", name, known));
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
    for (const TunableOp* op : registry()) {
      for (Target& t : op->preset(name)) {
        jobs.push_back({op, std::move(t)});
        found = true;
      }
    }
    if (!found) throw InvalidArgument("unknown preset \"" + name + "\" (see kjit tune --list)");
  }
  for (const std::string& s : o.shapes)
    jobs.push_back({&require_op(o.op), {parse_shape(s), o.dtype}});
  if (!o.shapes_file.empty()) {
    std::ifstream in(o.shapes_file);
    if (!in) throw InvalidArgument("cannot read --shapes-file " + o.shapes_file);
    try {
      for (const auto& item : nlohmann::json::parse(in)) {
        jobs.push_back({&require_op(item.value("op", o.op)),
                        {item.at("shape").get<tuning::Shape>(), item.value("dtype", o.dtype)}});
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
    for (const TunableOp* op : registry()) {
      for (const std::string& p : op->presets()) {
        std::cout << fmt::format("{:<22} {}:", p, op->name());
        for (const Target& t : op->preset(p)) {
          std::cout << fmt::format(" [{} {}]", tuning::problem_key(t.shape), t.dtype);
        }
        std::cout << "\n";
      }
    }
    return 0;
  }
  const std::vector<Job> jobs = jobs_from(o);
  if (o.dry_run) {
    const std::string arch = detail::requested_or_device_arch(o.arch);
    std::cout << "for " << arch << "\n";
    for (const Job& j : jobs) {
      const SpaceCount s = enumerate(*j.op, j.target, arch);
      std::cout << fmt::format(
          "{} {} {}: {} configs in the space, {} pruned by constraints, {} "
          "to compile and time; default {}\n",
          j.op->name(), tuning::problem_key(j.target.shape), j.target.dtype, s.space,
          s.space - s.valid, s.valid, tuning::config_json(j.op->default_config(j.target, arch)));
      for (const auto& [name, domain] : j.op->space(j.target, arch)) {
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
  const std::string arch = device_info(current_device()).arch();
  tuning::TuningDb db(tuning::default_database_path(), tuning::TuningDb::Mode::ReadWrite);
  std::cerr << "tuning database: " << db.path() << "\n";
  std::vector<TuneOutcome> outcomes;
  for (const Job& j : jobs) {
    TuneOptions opts;
    opts.resume = o.resume;
    if (o.budget_s > 0) {
      opts.seconds_per_candidate = o.budget_s / std::max(1, enumerate(*j.op, j.target, arch).valid);
    }
    const std::string label =
        fmt::format("{} {} {}", j.op->name(), tuning::problem_key(j.target.shape), j.target.dtype);
    const auto start = std::chrono::steady_clock::now();
    outcomes.push_back(tune(*j.op, j.target, opts, db,
                            [&](int done, int total) { progress_bar(label, done, total, start); }));
  }
  std::cout << fmt::format("{:<13} {:<24} {:<5} {:<52} {:>9} {:>9} {:>7} {:>8}  {}\n", "op",
                           "shape", "dtype", "best config", "time us", "default", "speedup",
                           "verified", "measured/resumed/failed");
  for (const TuneOutcome& r : outcomes) {
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
                  "Timing budget per shape, in seconds (default: 50 ms per candidate)");
  cmd->add_flag("--resume,!--no-resume", o->resume,
                "Reuse trials already in the database (default) or measure every config again");
  cmd->add_flag("--dry-run", o->dry_run, "Print the space and the pruned count; measure nothing");
  cmd->add_option("--arch", o->arch, "Arch for --dry-run without a GPU, e.g. sm_90a");
  cmd->add_flag("--list", o->list, "List the presets");
  cmd->callback([exit_code, o] { *exit_code = run(*o); });
}

}  // namespace kjit::autotune

// The autotuner: for one kernel family and problem, enumerate the space, prune by constraints and
// by the compile resource report, compile in parallel, time every candidate with CUDA events over
// rotating inputs within a time budget (dropping clearly slower ones early), validate every
// candidate that could win against the default config's output, commit each trial at once (a
// killed run resumes where it stopped), and store the winner with a noise margin, preferring the
// incumbent on ties.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "cache/tuning/tuning_db.hpp"
#include "ops/registry.hpp"

namespace kjit::autotune {

struct TuneOptions {
  double seconds_per_candidate = 0.05;  // timing budget for one candidate
  double margin = 0.03;                 // a challenger must be this much faster to win
  bool resume = true;                   // reuse trials already in the database
  int compile_threads = 0;              // 0: all cores
};

struct TuneOutcome {
  ops::TuneCase tune_case;
  tuning::TuningKey key;
  int space = 0, valid = 0, pruned = 0, measured = 0, resumed = 0, failed = 0;
  tuning::Config best;
  double best_us = 0, default_us = 0;
  std::optional<double> runner_up_us;
  bool verified = false;
  std::string decision;  // how the stored winner was decided
  double seconds = 0;
};

struct Candidates {
  int space = 0, valid = 0;
  std::vector<tuning::Config> configs;  // valid configs, default first
};
Candidates enumerate(const ops::KernelFamily& family, const ops::TuneCase& c, const Arch& arch);

// progress(done, total) after each candidate.
TuneOutcome tune(const ops::KernelFamily& family, const ops::TuneCase& c,
                 const TuneOptions& options, tuning::TuningDb& db,
                 const std::function<void(int, int)>& progress);

}  // namespace kjit::autotune

// `kjit precompile`: compiles every shipped specialisation in parallel into the kernel store and
// prints each one's resource report. --check fails when one spills or needs a stack frame.
#include <iostream>
#include <memory>
#include <string>

#include <filesystem>
#include <unordered_set>

#include <fmt/format.h>

#include "cache/tuning/tuning_db.hpp"
#include "driver/arch.hpp"
#include "jit/settings.hpp"
#include "kjit/device.hpp"
#include "kjit/error.hpp"
#include "kjit/jit.hpp"
#include "ops/registry.hpp"
#include "tools/commands.hpp"
#include "util/log.hpp"

namespace kjit::tools {
namespace {

struct Options {
  std::string arch;
  std::string family;
  int jobs = 0;
  bool check = false;
  bool list = false;
};

std::string family_names() {
  std::string names = "samples";
  for (const ops::KernelFamily* f : ops::families())
    names += ", " + f->name();
  return names + ", tuned";
}

const char* origin_name(Origin o) {
  switch (o) {
    case Origin::Memory:
      return "memory";
    case Origin::Disk:
      return "disk";
    case Origin::Compiled:
      return "compiled";
  }
  return "?";
}

// Every config the tuning database holds for this arch (of templates still current), once per
// distinct kernel. A database that cannot be read costs one warning, not the shipped kernels;
// rows this kjit cannot use (another version's config, a shape its rules refuse) are skipped.
void add_tuned(const Arch& arch, std::vector<KernelSpec>& specs,
               std::vector<std::string>& families) {
  const std::string path = tuning::default_database_path();
  std::unordered_set<CacheKey, CacheKeyHash> seen;
  for (const KernelSpec& s : specs)
    seen.insert(cache_key(s));
  int skipped = 0;
  try {
    const std::unique_ptr<tuning::TuningDb> db = tuning::TuningDb::open_results(path);
    if (!db) return;
    for (const tuning::Best& b : db->list({"", arch.name(), ""})) {
      const ops::KernelFamily* family = ops::find_family(b.key.op);
      if (!family || b.key.template_hash != family->template_hash()) continue;  // not current
      try {
        const ops::StoredResult r = ops::stored_result(b);
        KernelSpec spec = r.family->spec(r.config, r.problem, arch);
        if (!seen.insert(cache_key(spec)).second) continue;
        specs.push_back(std::move(spec));
        families.push_back("tuned");
      } catch (const InvalidArgument&) {
        ++skipped;
      }
    }
  } catch (const Error& e) {
    detail::warn(fmt::format("tuning database {} unusable ({}); tuned configs not precompiled",
                             path, e.what()));
    return;
  }
  if (skipped) {
    detail::warn(fmt::format(
        "skipped {} tuned result(s) this kjit cannot run (see `kjit cache ls`)", skipped));
  }
}

int run(const Options& o) {
  detail::current_settings();  // a bad KJIT_* setting is one error here, not one per kernel
  const Arch arch = arch::requested_or_current(o.arch);
  std::vector<KernelSpec> specs;
  std::vector<std::string> families;
  for (ops::ShippedSpecs& f : ops::shipped(arch)) {
    if (!o.family.empty() && f.family != o.family) continue;
    for (KernelSpec& s : f.specs) {
      specs.push_back(std::move(s));
      families.push_back(f.family);
    }
  }
  if (o.family.empty() || o.family == "tuned") add_tuned(arch, specs, families);
  if (specs.empty()) {
    if (o.family == "tuned") {
      std::cout << "no tuned config for " << arch.name() << " in the tuning database\n";
      return 0;
    }
    if (ops::find_family(o.family)) {
      std::cout << o.family << " ships no specialisation for " << arch.name() << "\n";
      return 0;
    }
    throw InvalidArgument("no family named \"" + o.family + "\" (" + family_names() + ")");
  }
  if (o.list) {
    for (std::size_t i = 0; i < specs.size(); ++i)
      std::cout << fmt::format("{:<13} {}\n", families[i], specs[i].describe());
    return 0;
  }

  const Counters before = counters();
  const std::vector<PrecompileResult> results = precompile(specs, o.jobs);
  const Counters after = counters();

  int failures = 0, violations = 0;
  std::cout << fmt::format("{:<13} {:<60} {:>8} {:>5} {:>7} {:>6} {:>9}\n", "family", "kernel",
                           "origin", "regs", "smem", "stack", "spill");
  for (std::size_t i = 0; i < results.size(); ++i) {
    const PrecompileResult& r = results[i];
    if (!r.ok) {
      ++failures;
      std::cout << fmt::format("{:<13} {:<60} FAILED\n{}\n", families[i], r.spec.describe(),
                               r.error);
      continue;
    }
    for (const CompiledKernel& k : r.program.kernels) {
      const ResourceUsage& u = k.resources;
      const bool bad = u.spills() || u.stack_frame_bytes > 0 || u.serialized_wgmma;
      violations += bad;
      std::cout << fmt::format("{:<13} {:<60} {:>8} {:>5} {:>7} {:>6} {:>4}/{:<4}{}\n", families[i],
                               k.name_expression, origin_name(r.origin), u.registers,
                               u.static_shared_bytes, u.stack_frame_bytes, u.spill_store_bytes,
                               u.spill_load_bytes, bad ? "  <- spills/stack/serialised wgmma" : "");
    }
  }
  int from_memory = 0;
  for (const PrecompileResult& r : results)
    from_memory += r.ok && r.origin == Origin::Memory;
  std::cout << fmt::format(
      "{} specialisation(s) for {}: {} compiled in {:.2f} s of NVRTC time, {} from disk, {} "
      "from memory, {} failed\n",
      results.size(), arch.name(), after.compiles - before.compiles,
      after.compile_seconds - before.compile_seconds, after.disk_hits - before.disk_hits,
      from_memory, failures);
  if (failures) return 2;
  if (o.check && violations) {
    std::cerr << fmt::format(
        "kjit: {} kernel(s) spill, use a stack frame or have serialised wgmma\n", violations);
    return 2;
  }
  return 0;
}

}  // namespace

void add_precompile_command(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(
      "precompile",
      "Compile every shipped specialisation and every tuned config of this arch into the kernel "
      "store, in parallel");
  cmd->add_option("--arch", o->arch, "Target, e.g. sm_90a (default: the current GPU's)");
  cmd->add_option("--family", o->family, "Only this family (" + family_names() + ")");
  cmd->add_option("-j,--jobs", o->jobs, "Compile threads (default: all cores)");
  cmd->add_flag("--check", o->check, "Exit 2 if a kernel spills or has a stack frame");
  cmd->add_flag("--list", o->list, "Print the specialisations; compile nothing");
  cmd->callback([exit_code, o] { *exit_code = run(*o); });
}

}  // namespace kjit::tools

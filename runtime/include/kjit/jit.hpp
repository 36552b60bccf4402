// The JIT entry points. `load` gives a launchable Program for a KernelSpec, looking in memory,
// then in the on-disk kernel store, then compiling with NVRTC; `compile` does the same without a
// GPU (explicit arch) and returns the artefact; `precompile` fills the store in parallel.
//
//   kjit::KernelSpec spec(kjit::Source::embedded("samples/saxpy.cuh"),
//                         {"kjit::samples::saxpy<float>"});
//   kjit::Kernel saxpy = kjit::load(spec).kernel();
//   saxpy.launch({{blocks}, {256}, 0, stream}, n, 2.0f, x, y);
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kjit/cache_key.hpp"
#include "kjit/error.hpp"
#include "kjit/kernel.hpp"
#include "kjit/kernel_spec.hpp"
#include "kjit/resource_usage.hpp"

#pragma GCC visibility push(default)  // the API libkjit.so exports
namespace kjit {

struct CompiledKernel {
  std::string name_expression;
  std::string lowered_name;
  ResourceUsage resources;
  int parameter_count = -1;  // from the PTX entry; -1 when unknown (launch checks are skipped)
};

// A compiled program as stored on disk: everything needed to load it without NVRTC.
struct CompiledProgram {
  CacheKey key;
  std::string description;  // KernelSpec::describe() of what produced it
  std::string arch;
  std::vector<CompiledKernel> kernels;
  std::string cubin;
};

// Where a lookup was served from.
enum class Origin { Memory, Disk, Compiled };

// Loads (and compiles if needed) the spec for the current device. Thread-safe; concurrent
// callers asking for one key compile it once.
Program load(const KernelSpec& spec);
Program load(const KernelSpec& spec, Origin* origin);

// Compiles (or reads from the store) without touching the driver. spec.arch must be set unless a
// device is present. Honours KJIT_CACHE and KJIT_NO_JIT like load().
CompiledProgram compile(const KernelSpec& spec, Origin* origin = nullptr);

// The key of `spec` (for spec.arch, or the current device's arch when it is empty).
CacheKey cache_key(const KernelSpec& spec);

struct PrecompileResult {
  explicit PrecompileResult(KernelSpec spec) : spec(std::move(spec)) {}
  KernelSpec spec;
  bool ok = false;
  Origin origin = Origin::Compiled;
  std::string error;
  CompiledProgram program;
};
// Compiles every spec on `threads` worker threads (0: hardware concurrency) into the store.
std::vector<PrecompileResult> precompile(const std::vector<KernelSpec>& specs, int threads = 0);

struct Counters {
  std::uint64_t memory_hits = 0;
  std::uint64_t disk_hits = 0;
  std::uint64_t compiles = 0;
  double compile_seconds = 0;
};
Counters counters();

// Drops every program loaded in this process (Kernel handles already held stay valid).
void clear_memory_cache();

// Ops read the tuning database once per process and remember each choice; this reads it again
// on the next call and forgets the choices (they are also re-made when a lookup notices that
// the database file changed). Run-time misses queued so far are written too.
void reload_tuning();

// Versions of the pieces that make up a key.
std::pair<int, int> nvrtc_version();
std::string version();  // kjit's own, e.g. "0.1.0"

}  // namespace kjit
#pragma GCC visibility pop

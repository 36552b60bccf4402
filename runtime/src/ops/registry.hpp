// Every kernel family, seen through one type-erased interface. The catalog (`kjit precompile`,
// the CPU compile tests), the tuner (`kjit tune`), `kjit cache prune --stale` and `kjit cache
// import` read families here; the launch path uses the typed family directly (dispatch.hpp).
// Problems and configs cross this interface as the tuning database spells them.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "cache/tuning/tuning_db.hpp"
#include "cache/tuning/tuning_key.hpp"
#include "cache/tuning/tuning_table.hpp"
#include "driver/arch.hpp"
#include "kjit/kernel.hpp"
#include "kjit/kernel_spec.hpp"
#include "kjit/tensor.hpp"

namespace kjit::ops {

// A problem as the tuning database spells it.
struct TuneCase {
  tuning::Shape shape;
  DType dtype = DType::BFloat16;
};

struct NamedCases {
  std::string name;
  std::vector<TuneCase> cases;
};

// Fresh random device inputs for one problem, in rotating sets, a launcher per config, and the
// output to compare configs on.
class Workload {
 public:
  virtual ~Workload() = default;
  // Independent input sets, rotated between timed runs so that no run reads another's inputs
  // from L2.
  virtual int input_sets() const = 0;
  virtual void run(const Program& program, const tuning::Config& config, int input_set,
                   StreamHandle stream) = 0;
  virtual void poison_output() = 0;
  virtual std::vector<double> output() = 0;  // of the last run, on the host
  // Largest acceptable max|a - b| / max|b| between two configs' outputs.
  virtual double tolerance() const = 0;
};

class KernelFamily {
 public:
  virtual ~KernelFamily() = default;
  virtual std::string name() const = 0;
  virtual const std::string& template_hash() const = 0;
  virtual std::vector<tuning::Dimension> dimensions() const = 0;
  // Its specialisations with default configs, for `kjit precompile`.
  virtual std::vector<KernelSpec> shipped(const Arch& arch) const = 0;
  // Throws InvalidArgument naming what the family's rules reject.
  virtual void check(const TuneCase& c) const = 0;
  // True when a stored config has exactly the family's fields.
  virtual bool well_formed(const tuning::Config& config) const = 0;
  // Every config the tuner considers for a case (valid or not; valid() prunes).
  virtual std::vector<tuning::Config> space(const TuneCase& c, const Arch& arch) const = 0;
  virtual bool valid(const tuning::Config& config, const TuneCase& c, const Arch& arch) const = 0;
  virtual tuning::Config default_config(const TuneCase& c, const Arch& arch) const = 0;
  virtual KernelSpec spec(const tuning::Config& config, const TuneCase& c,
                          const Arch& arch) const = 0;
  virtual std::unique_ptr<Workload> workload(const TuneCase& c, std::size_t l2_bytes) const = 0;
  virtual std::vector<NamedCases> presets() const = 0;
};

// The families kjit ships, in a fixed order.
const std::vector<const KernelFamily*>& families();
const KernelFamily* find_family(const std::string& name);  // nullptr if unknown

// A stored key's family and problem: its shape and dtype as parsed, before the family's rules.
// Throws InvalidArgument for an unknown op or a shape or dtype that does not parse.
struct StoredProblem {
  const KernelFamily* family;
  TuneCase problem;
};
StoredProblem stored_problem(const tuning::TuningKey& key);

// A stored tuning result read back through its family, for the row's arch. Throws
// InvalidArgument saying why the row cannot run: an unknown op, a shape or dtype it cannot read,
// a config that is not one of the family's, or one the family's rules refuse.
struct StoredResult {
  const KernelFamily* family;
  TuneCase problem;
  tuning::Config config;
};
StoredResult stored_result(const tuning::Best& row);

// Every specialisation kjit ships for an arch, by family (the runtime's sample kernels first).
struct ShippedSpecs {
  std::string family;
  std::vector<KernelSpec> specs;
};
std::vector<ShippedSpecs> shipped(const Arch& arch);

}  // namespace kjit::ops

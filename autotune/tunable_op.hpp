// What an op registers with the autotuner: its search space (named parameters with domains and
// a validity rule), its bucket policy, the default config, the kernel spec of a config, and a
// workload (fresh random device inputs for a shape, a launcher per config, and the output to
// compare candidates on).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cache/config_lookup.hpp"
#include "cache/tuning_key.hpp"
#include "kjit/device.hpp"
#include "kjit/kernel.hpp"
#include "kjit/kernel_spec.hpp"

namespace kjit::autotune {

struct Target {
  tuning::Shape shape;
  std::string dtype;  // "bf16", "fp16", "fp32"
};

class Workload {
 public:
  virtual ~Workload() = default;
  // Independent input sets, rotated between timed runs so that no run reads another's inputs
  // from L2.
  virtual int input_sets() const = 0;
  virtual void run(const Kernel& kernel, const tuning::Config& config, int input_set,
                   StreamHandle stream) = 0;
  virtual void poison_output() = 0;
  virtual std::vector<double> output() = 0;  // of the last run, on the host
  // Largest acceptable max|a - b| / max|b| between two configs' outputs.
  virtual double tolerance() const = 0;
  virtual std::uint64_t bytes_moved() const = 0;
};

using Space = std::vector<std::pair<std::string, std::vector<std::int64_t>>>;

class TunableOp {
 public:
  virtual ~TunableOp() = default;
  virtual std::string name() const = 0;
  virtual std::string template_hash() const = 0;
  virtual std::vector<tuning::Dimension> dimensions() const = 0;
  // The space, validity and default may depend on the arch compiled for ("sm_90a").
  virtual Space space(const Target& target, const std::string& arch) const = 0;
  virtual bool valid(const tuning::Config& config, const Target& target,
                     const std::string& arch) const = 0;
  virtual tuning::Config default_config(const Target& target, const std::string& arch) const = 0;
  virtual KernelSpec spec(const tuning::Config& config, const Target& target,
                          const std::string& arch) const = 0;
  // Throws InvalidArgument for a target the op cannot run (bad dims, dtype).
  virtual std::unique_ptr<Workload> workload(const Target& target, std::size_t l2_bytes) const = 0;
  virtual std::vector<std::string> presets() const = 0;
  virtual std::vector<Target> preset(const std::string& name) const = 0;  // empty if unknown
};

// Every op the tuner knows.
const std::vector<const TunableOp*>& registry();
const TunableOp* find_op(const std::string& name);  // nullptr if unknown

}  // namespace kjit::autotune

// A kernel family is everything kjit knows of one kernel template family, in one struct of static
// members. The op path (dispatch.hpp), the tuner and the catalog (family_model.hpp, registry.cpp)
// and `kjit precompile` read it; nothing else about the family is written anywhere. A family F
// provides (docs/design.md walks through a real one):
//
//   static constexpr const char* kName;        the op in the tuning database ("attention")
//   static std::vector<Source> sources();      its templates; their closure hash is the tuning
//                                              key's template hash (an edit retires old results)
//   struct Problem { DType dtype; ... };       what decides the config and the kernel: integers,
//                                              bools and the dtype, no pointers
//   struct Config { ... };                     the tunable parameters (integers)
//   using Args = ...;                          the kernel's parameter block for one call
//   static constexpr Field<Problem> kShape[];  problem fields: tuning-key name and bucket policy
//   static constexpr Field<Config> kConfig[];  config fields: their names in the database's JSON
//   static constexpr DType kDTypes[];          the dtypes it runs
//   static void check(const Problem&);         its rules; throws InvalidArgument naming the field
//   static std::vector<Config> space(const Problem&, const Arch&);    what the tuner tries
//   static bool valid(const Config&, const Problem&, const Arch&);
//   static Config default_config(const Problem&, const Arch&);        valid for every checked
//                                                                     problem of its arch
//   static KernelSpec spec(const Config&, const Problem&, const Arch&);  reads only Exact and
//                                                                        Local fields
//   static void launch(const Program&, const Config&, const Problem&, const Args&, StreamHandle);
//                                      the program holds one kernel per name expression of spec()
//   static std::vector<Problem> shipped(const Arch&);   precompiled with their default configs
//   For the tuner's workload (family_model.hpp):
//   static std::vector<TensorSpec> tensors(const Problem&);   inputs (random) and outputs
//   static Args args(const Problem&, const std::vector<TensorView>&);   a call over them
//   static double tolerance(const Problem&);   max|a - b| / max|b| between two configs' outputs
//   static std::vector<Preset<Problem>> presets();   named problem sets for `kjit tune`
//
// Problems and configs are typed; they become the database's maps (tuning::Shape, tuning::Config)
// only at that boundary, through the Field lists below.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "cache/tuning/tuning_key.hpp"
#include "cache/tuning/tuning_table.hpp"
#include "driver/arch.hpp"
#include "jit/template_tree.hpp"
#include "kjit/error.hpp"
#include "kjit/kernel.hpp"
#include "kjit/kernel_spec.hpp"
#include "kjit/tensor.hpp"

namespace kjit::ops {

// One integer field of a problem or config: its name in the database and how tuned results are
// shared across values of it (tuning::Bucket).
template <class T>
struct Field {
  const char* name;
  tuning::Bucket bucket;
  std::int64_t (*get)(const T&);
  bool (*set)(T&, std::int64_t);  // false when the value does not fit the field's type
};

namespace field_detail {
template <class M>
struct MemberOf;
template <class T, class V>
struct MemberOf<V T::*> {
  using Owner = T;
  using Value = V;
};
}  // namespace field_detail

// field<&Problem::head_dim>("D"): a Field over an integral or bool member.
template <auto Member>
constexpr auto field(const char* name, tuning::Bucket bucket = tuning::Bucket::Exact) {
  using T = typename field_detail::MemberOf<decltype(Member)>::Owner;
  using V = typename field_detail::MemberOf<decltype(Member)>::Value;
  static_assert(std::is_integral_v<V>, "fields are integers or bools");
  return Field<T>{name, bucket, [](const T& t) { return static_cast<std::int64_t>(t.*Member); },
                  [](T& t, std::int64_t v) {
                    t.*Member = static_cast<V>(v);
                    return static_cast<std::int64_t>(t.*Member) == v;
                  }};
}

// A tensor of the tuner's workload: inputs get fresh random values, outputs are compared between
// configs.
struct TensorSpec {
  // Scratch: the kernels' workspace, allocated (and poisoned) like an output, never compared.
  enum class Role { Input, Output, Scratch };
  const char* name;
  DType dtype;
  std::vector<std::int64_t> shape;
  Role role = Role::Input;
  float lo = 0, hi = 0;      // inputs: uniform in [lo, hi); lo == hi: standard normal
  double compare_scale = 1;  // outputs: compared after this scaling (so that one tolerance fits)
  // Inputs: element i's value instead of random ones, where the kernel's speed depends on a
  // structure random values lack (which rows of a layout hold tokens).
  std::function<float(std::int64_t)> value = nullptr;
};

// A problem and the kernel arguments of one call, as an op's validation returns them.
template <class F>
struct Call {
  typename F::Problem problem;
  typename F::Args args;
};

template <class P>
struct Preset {
  std::string name;
  std::vector<P> problems;
};

// The C++ type of a dtype in device code, for name expressions ("__nv_bfloat16").
const char* cxx_type(DType dtype);

// ---- The database boundary -------------------------------------------------------------------

// The tuning dimensions: every problem field but the Local ones.
template <class F>
std::vector<tuning::Dimension> dimensions() {
  std::vector<tuning::Dimension> out;
  for (const auto& f : F::kShape) {
    if (f.bucket != tuning::Bucket::Local) out.push_back({f.name, f.bucket});
  }
  return out;
}

template <class F>
tuning::Shape shape_of(const typename F::Problem& p) {
  tuning::Shape s;
  for (const auto& f : F::kShape) {
    if (f.bucket != tuning::Bucket::Local) s[f.name] = f.get(p);
  }
  return s;
}

// The problem that stands for every problem of its bucket: Pow2 and Pow2Only fields rounded up.
template <class F>
typename F::Problem bucketed(typename F::Problem p) {
  for (const auto& f : F::kShape) {
    if (tuning::rounds_to_pow2(f.bucket)) f.set(p, tuning::next_pow2(f.get(p)));
  }
  return p;
}

// The problem a database shape names; Local fields keep their defaults (the tuner measures the
// common case: aligned rows). Throws InvalidArgument naming what is missing, extra or outside
// the family's rules.
template <class F>
typename F::Problem problem_of(const tuning::Shape& shape, DType dtype) {
  typename F::Problem p{};
  p.dtype = dtype;
  bool known_dtype = false;
  std::string names;
  for (DType d : F::kDTypes) {
    known_dtype |= d == dtype;
    names += std::string(names.empty() ? "" : ", ") + dtype_name(d);
  }
  if (!known_dtype) {
    throw InvalidArgument(std::string(F::kName) + ": dtype must be one of " + names + ", got " +
                          dtype_name(dtype));
  }
  std::size_t used = 0;
  std::string expected;
  for (const auto& f : F::kShape) {
    if (f.bucket == tuning::Bucket::Local) continue;
    expected += std::string(expected.empty() ? "" : ", ") + f.name;
    const auto it = shape.find(f.name);
    if (it == shape.end()) continue;
    ++used;
    if (!f.set(p, it->second)) {
      throw InvalidArgument(std::string(F::kName) + ": " + f.name + "=" +
                            std::to_string(it->second) + " is out of range");
    }
  }
  if (used != shape.size() || used != dimensions<F>().size()) {
    throw InvalidArgument(std::string(F::kName) + ": shape must be exactly " + expected +
                          ", got \"" + tuning::problem_key(shape) + "\"");
  }
  F::check(p);
  return p;
}

template <class F>
tuning::Config config_map(const typename F::Config& c) {
  tuning::Config m;
  for (const auto& f : F::kConfig)
    m[f.name] = f.get(c);
  return m;
}

// nullopt unless the map has exactly the family's config fields, each in range: a database row
// written for another version of the family, or by hand, is never half-read.
template <class F>
std::optional<typename F::Config> config_of(const tuning::Config& m) {
  typename F::Config c{};
  if (m.size() != std::size(F::kConfig)) return std::nullopt;
  for (const auto& f : F::kConfig) {
    const auto it = m.find(f.name);
    if (it == m.end() || !f.set(c, it->second)) return std::nullopt;
  }
  return c;
}

// The closure hashes of the family's sources, "+"-joined; computed once per process.
template <class F>
const std::string& template_hash() {
  static const std::string hash = [] {
    std::string out;
    for (const Source& s : F::sources())
      out += (out.empty() ? "" : "+") + kjit::detail::source_closure(s).hex();
    return out;
  }();
  return hash;
}

}  // namespace kjit::ops

// merge_states on the GPU against the fp64 reference: every shipped specialisation, every
// config of the search space on one shape, strided inputs, rows with every part at -inf, and
// no out_lse. Outputs poisoned, inputs fresh and random for every case.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <random>

#include "kjit/jit.hpp"
#include "kjit/merge_states.hpp"
#include "ops/merge_states/merge_states.hpp"
#include "tests/reference/merge_states_reference.hpp"
#include "tests/support/forced_launch.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/isolated_cache.hpp"
#include "util/half_float.hpp"

namespace kjit::test {
namespace {

using ops::MergeStates;

struct Case {
  Case(DType dtype, int dim, int parts, long long tokens = 37, long long heads = 5,
       bool token_major = false, bool with_lse = true,
       std::optional<MergeStates::Config> config = std::nullopt)
      : dtype(dtype),
        dim(dim),
        parts(parts),
        tokens(tokens),
        heads(heads),
        token_major(token_major),
        with_lse(with_lse),
        config(std::move(config)) {}
  DType dtype;
  int dim, parts;
  long long tokens = 37, heads = 5;  // 185 rows: not a multiple of any rows-per-block
  bool token_major = false;          // parts stored [T, N, H, D] and viewed through strides
  bool with_lse = true;
  std::optional<MergeStates::Config> config;  // launch this config instead of the op's choice
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << dtype_name(c.dtype) << " D=" << c.dim << " N=" << c.parts << " T=" << c.tokens
      << " H=" << c.heads << (c.token_major ? " token-major" : "") << (c.with_lse ? "" : " no-lse");
  if (c.config) *os << " " << tuning::config_json(ops::config_map<MergeStates>(*c.config));
}

// Stores v rounded to the dtype; returns the stored value.
double store(DType dtype, void* base, std::size_t index, double v) {
  switch (dtype) {
    case DType::BFloat16: {
      const std::uint16_t b = float_to_bf16(static_cast<float>(v));
      static_cast<std::uint16_t*>(base)[index] = b;
      return bf16_to_float(b);
    }
    case DType::Float16: {
      const std::uint16_t h = float_to_fp16(static_cast<float>(v));
      static_cast<std::uint16_t*>(base)[index] = h;
      return fp16_to_float(h);
    }
    default:
      static_cast<float*>(base)[index] = static_cast<float>(v);
      return static_cast<float>(v);
  }
}

double load(DType dtype, const void* base, std::size_t index) {
  switch (dtype) {
    case DType::BFloat16:
      return bf16_to_float(static_cast<const std::uint16_t*>(base)[index]);
    case DType::Float16:
      return fp16_to_float(static_cast<const std::uint16_t*>(base)[index]);
    default:
      return static_cast<const float*>(base)[index];
  }
}

double round_to(DType dtype, double v) {
  unsigned char scratch[4];
  return store(dtype, scratch, 0, v);
}

void run_case(const Case& c) {
  const long long rows = c.tokens * c.heads;
  const std::size_t elem = dtype_size(c.dtype);
  const std::size_t n_parts = static_cast<std::size_t>(c.parts) * rows * c.dim;
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<double> value(-2, 2), lse_value(-5, 5), unit(0, 1);

  // Host copies in the reference's dense layout; device copies in the case's layout.
  std::vector<double> parts(n_parts), lse(static_cast<std::size_t>(c.parts) * rows);
  std::vector<unsigned char> parts_dev(n_parts * elem);
  std::vector<float> lse_dev(lse.size());
  for (int i = 0; i < c.parts; ++i) {
    for (long long t = 0; t < c.tokens; ++t) {
      for (long long h = 0; h < c.heads; ++h) {
        const long long r = t * c.heads + h;
        const bool empty_row = r % 7 == 3;  // every part at -inf on these rows
        double l = unit(rng) < 0.15 || empty_row ? -std::numeric_limits<double>::infinity()
                                                 : lse_value(rng);
        l = static_cast<float>(l);
        lse[i * rows + r] = l;
        const std::size_t dev_row =
            c.token_major ? (t * c.parts + i) * c.heads + h
                          : (static_cast<std::size_t>(i) * c.tokens + t) * c.heads + h;
        lse_dev[dev_row] = static_cast<float>(l);
        for (int d = 0; d < c.dim; ++d) {
          parts[(static_cast<std::size_t>(i) * rows + r) * c.dim + d] =
              store(c.dtype, parts_dev.data(), dev_row * c.dim + d, value(rng));
        }
      }
    }
  }
  const reference::MergedStates ref = reference::merge_states(parts, lse, c.parts, rows, c.dim);

  DeviceBuffer d_parts(parts_dev.size()), d_lse(lse_dev.size() * 4),
      d_out(static_cast<std::size_t>(rows) * c.dim * elem), d_out_lse(rows * 4);
  d_parts.upload(parts_dev.data(), d_parts.size());
  d_lse.upload(lse_dev.data(), d_lse.size());
  d_out.fill_bytes(0xff);  // NaN in every float format
  d_out_lse.fill_bytes(0xff);

  const long long P = c.parts, T = c.tokens, H = c.heads, D = c.dim;
  const TensorView parts_view =
      c.token_major ? TensorView(d_parts.data(), c.dtype, {P, T, H, D}, {H * D, P * H * D, D, 1})
                    : TensorView(d_parts.data(), c.dtype, {P, T, H, D});
  const TensorView lse_view =
      c.token_major ? TensorView(d_lse.data(), DType::Float32, {P, T, H}, {H, P * H, 1})
                    : TensorView(d_lse.data(), DType::Float32, {P, T, H});
  const TensorView out_view(d_out.data(), c.dtype, {T, H, D});
  const TensorView out_lse_view =
      c.with_lse ? TensorView(d_out_lse.data(), DType::Float32, {T, H}) : TensorView();
  Stream stream;
  if (c.config) {
    const ops::Call<MergeStates> call =
        MergeStates::validate(parts_view, lse_view, out_view, out_lse_view);
    const Arch& arch = arch::current();
    ASSERT_TRUE(MergeStates::valid(*c.config, call.problem, arch));
    launch_forced(*c.config, call, stream.handle());
  } else {
    attention::merge_states(parts_view, lse_view, out_view, out_lse_view, stream.handle());
  }
  stream.synchronize();
  std::vector<unsigned char> out(d_out.size());
  std::vector<float> out_lse(rows);
  d_out.download(out.data(), out.size());
  d_out_lse.download(out_lse.data(), d_out_lse.size());

  double max_err = 0, max_lowprec_err = 0, max_ref = 0, err2 = 0, ref2 = 0;
  for (std::size_t i = 0; i < ref.out.size(); ++i) {
    const double got = load(c.dtype, out.data(), i);
    ASSERT_TRUE(std::isfinite(got)) << "out[" << i << "] = " << got;
    max_err = std::max(max_err, std::abs(got - ref.out[i]));
    max_lowprec_err =
        std::max(max_lowprec_err, std::abs(round_to(c.dtype, ref.out[i]) - ref.out[i]));
    max_ref = std::max(max_ref, std::abs(ref.out[i]));
    err2 += (got - ref.out[i]) * (got - ref.out[i]);
    ref2 += ref.out[i] * ref.out[i];
  }
  for (long long r = 0; r < rows; ++r) {
    if (r % 7 == 3) {  // all parts empty: exactly 0 and -inf
      for (int d = 0; d < c.dim; ++d)
        ASSERT_EQ(load(c.dtype, out.data(), r * c.dim + d), 0.0) << r;
    }
    if (!c.with_lse) continue;
    if (std::isinf(ref.lse[r])) {
      ASSERT_TRUE(std::isinf(out_lse[r]) && out_lse[r] < 0)
          << "lse row " << r << " = " << out_lse[r];
    } else {
      ASSERT_NEAR(out_lse[r], ref.lse[r], 2e-6 * (1 + std::abs(ref.lse[r]))) << "lse row " << r;
    }
  }
  if (!c.with_lse) {
    std::vector<unsigned char> raw(d_out_lse.size());
    std::memcpy(raw.data(), out_lse.data(), raw.size());
    for (unsigned char b : raw)
      ASSERT_EQ(b, 0xff) << "out_lse written though not requested";
  }
  if (c.dtype == DType::Float32) {
    EXPECT_LT(std::sqrt(err2 / ref2), 1e-6) << "relative L2 error";
    EXPECT_LT(max_err, 2e-6 * max_ref);
  } else {
    // FlashAttention's bound: twice the error of the same-dtype reference, plus a small atol.
    EXPECT_LE(max_err, 2 * max_lowprec_err + 1e-6)
        << "same-dtype reference error " << max_lowprec_err;
  }
}

class MergeStatesShipped : public SharedKernelStore, public ::testing::WithParamInterface<Case> {};

TEST_P(MergeStatesShipped, MatchesDoubleReference) {
  KJIT_REQUIRE_GPU();
  run_case(GetParam());
}

std::vector<Case> shipped_cases() {
  std::vector<Case> out;
  for (DType dtype : {DType::Float16, DType::BFloat16, DType::Float32}) {
    for (int dim : {64, 128, 256, 512}) {
      for (int parts : {2, 4, 8, 16})
        out.push_back(Case{dtype, dim, parts});
    }
  }
  out.push_back(Case{DType::BFloat16, 1024, 3, 9, 4});  // beyond the shipped set: JIT on demand
  out.push_back(Case{DType::Float16, 136, 5, 11, 3});
  out.push_back(Case{DType::BFloat16, 128, 4, 23, 6, /*token_major=*/true});
  out.push_back(Case{DType::Float32, 256, 2, 13, 8, /*token_major=*/true, /*with_lse=*/false});
  out.push_back(Case{DType::BFloat16, 512, 8, 0, 8});  // no tokens: nothing to do
  return out;
}

INSTANTIATE_TEST_SUITE_P(All, MergeStatesShipped, ::testing::ValuesIn(shipped_cases()),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           return std::string(dtype_name(i.param.dtype)) + "_D" +
                                  std::to_string(i.param.dim) + "_N" +
                                  std::to_string(i.param.parts) + "_" + std::to_string(i.index);
                         });

// Every config the tuner may pick computes the same function.
class MergeStatesEveryConfig : public SharedKernelStore,
                               public ::testing::WithParamInterface<Case> {};

TEST_P(MergeStatesEveryConfig, MatchesDoubleReference) {
  KJIT_REQUIRE_GPU();
  run_case(GetParam());
}

std::vector<Case> every_config_cases() {
  std::vector<Case> out;
  for (DType dtype : {DType::BFloat16, DType::Float32}) {
    const int dim = 128, parts = 4;
    const MergeStates::Problem p{dtype, dim, parts, 185, 16};
    for (const MergeStates::Config& c : MergeStates::space(p, "sm_90a")) {
      if (MergeStates::valid(c, p, "sm_90a"))
        out.push_back(Case{dtype, dim, parts, 37, 5, false, true, c});
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(SearchSpace, MergeStatesEveryConfig,
                         ::testing::ValuesIn(every_config_cases()),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           const MergeStates::Config& c = *i.param.config;
                           return std::string(dtype_name(i.param.dtype)) + "_v" +
                                  std::to_string(c.vec) + "_t" + std::to_string(c.threads_per_row) +
                                  "_r" + std::to_string(c.rows_per_block);
                         });

}  // namespace
}  // namespace kjit::test

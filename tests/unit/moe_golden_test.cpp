// The FP4 MoE layer's golden output (tests/data/moe_fp4_golden.inc, tests/reference/moe_golden.hpp)
// is still what the fp64 reference gives for the case's inputs: the file and the reference cannot
// drift apart unnoticed. KJIT_WRITE_GOLDEN=1 rewrites the file instead (after a deliberate change
// of the case or of the reference), then this test is rebuilt and run again.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "tests/reference/moe_golden.hpp"

namespace kjit::test {
namespace {

constexpr double kGolden[] = {
#include "tests/data/moe_fp4_golden.inc"
};

TEST(MoeGolden, CheckedInOutputIsTheReferences) {
  const std::vector<double> out = reference::golden_fp4_layer().output();
  if (std::getenv("KJIT_WRITE_GOLDEN")) {
    std::FILE* f = std::fopen(KJIT_GOLDEN_INC, "w");
    ASSERT_NE(f, nullptr) << KJIT_GOLDEN_INC;
    std::fprintf(f,
                 "// The FP4 MoE layer's golden output (tests/reference/moe_golden.hpp), [8, 128] "
                 "row-major;\n// written by KJIT_WRITE_GOLDEN=1 kjit_unit_tests "
                 "--gtest_filter=MoeGolden.*\n");
    for (std::size_t i = 0; i < out.size(); ++i)
      std::fprintf(f, "%.17g,%s", out[i], i % 4 == 3 ? "\n" : " ");
    ASSERT_EQ(std::fclose(f), 0);
    GTEST_SKIP() << "rewrote " << KJIT_GOLDEN_INC << ": rebuild and run again to check it";
  }
  ASSERT_EQ(std::size(kGolden), out.size());
  double magnitude = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    EXPECT_NEAR(out[i], kGolden[i], 1e-12 * (1 + std::abs(kGolden[i]))) << "element " << i;
    magnitude += std::abs(kGolden[i]) / out.size();
  }
  EXPECT_GT(magnitude, 0.05);  // a case whose output is not (close to) zero
}

}  // namespace
}  // namespace kjit::test

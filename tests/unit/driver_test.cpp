// Without a driver every GPU entry point throws NoDriverError with the reason, and CPU features
// still work. Run in a child process so the driver table of this process is not the one tested.
#include <gtest/gtest.h>

#include "tests/support/subprocess.hpp"

namespace kjit::test {
namespace {

TEST(NoDriver, GpuCallsThrowAClearError) {
  const ProcessResult r =
      run_process({test_helper_path(), "no-driver"},
                  {{"KJIT_LIBCUDA", "/nonexistent/libcuda.so.1"}, {"KJIT_CACHE", "off"}});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("no CUDA driver found: dlopen(/nonexistent/libcuda.so.1) failed"),
            std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace kjit::test

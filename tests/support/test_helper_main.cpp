// A helper process for tests that need a second process:
//   kjit_test_helper key                print the key of a fixed spec
//   kjit_test_helper race <reads>       compile saxpy<float> for sm_90a, then read it back
//                                       <reads> times; print "compiles disk_hits"
//   kjit_test_helper no-driver          check GPU calls throw NoDriverError (exit 0 if so)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "kjit/device.hpp"
#include "kjit/jit.hpp"

int main(int argc, char** argv) try {
  kjit::KernelSpec saxpy(kjit::Source::embedded("samples/saxpy.cuh"),
                         {"kjit::samples::saxpy<float>"});
  saxpy.arch = "sm_90a";
  if (argc >= 2 && std::strcmp(argv[1], "key") == 0) {
    saxpy.defines = {{"A", "1"}};
    std::printf("%s\n", kjit::cache_key(saxpy).hex().c_str());
    return 0;
  }
  if (argc >= 3 && std::strcmp(argv[1], "race") == 0) {
    const int reads = std::atoi(argv[2]);
    for (int i = 0; i <= reads; ++i) {
      const kjit::CompiledProgram p = kjit::compile(saxpy);
      if (p.cubin.empty() || p.kernels.size() != 1) return 3;
    }
    const kjit::Counters c = kjit::counters();
    std::printf("%llu %llu\n", static_cast<unsigned long long>(c.compiles),
                static_cast<unsigned long long>(c.disk_hits));
    return 0;
  }
  if (argc >= 2 && std::strcmp(argv[1], "no-driver") == 0) {
    // Every GPU entry point must throw NoDriverError; compiling for an explicit arch must work.
    int failures = 0;
    auto expect_no_driver = [&](const char* what, auto&& call) {
      try {
        call();
        std::printf("%s did not throw\n", what);
        ++failures;
      } catch (const kjit::NoDriverError& e) {
        std::printf("%s: %s\n", what, e.what());
      }
    };
    expect_no_driver("device_count", [] { kjit::device_count(); });
    expect_no_driver("Stream", [] { kjit::Stream s; });
    expect_no_driver("DeviceBuffer", [] { kjit::DeviceBuffer b(16); });
    expect_no_driver("load", [&] { kjit::load(saxpy); });
    kjit::KernelSpec for_device = saxpy;
    for_device.arch.clear();
    expect_no_driver("compile for the device arch", [&] { kjit::compile(for_device); });
    std::string reason;
    if (kjit::driver_available(&reason)) ++failures;
    if (kjit::compile(saxpy).cubin.empty()) ++failures;
    return failures == 0 ? 0 : 4;
  }
  std::fprintf(stderr, "usage: kjit_test_helper key | race <reads> | no-driver\n");
  return 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "kjit_test_helper: %s\n", e.what());
  return 2;
}

// A helper process for tests that need a second process:
//   kjit_test_helper key                print the key of a fixed spec
//   kjit_test_helper race <reads>       compile saxpy<float> for sm_90a, then read it back
//                                       <reads> times; print "compiles disk_hits"
//   kjit_test_helper no-driver          check GPU calls throw NoDriverError (exit 0 if so)
//   kjit_test_helper no-nccl            check NCCL calls throw the load failure (exit 0 if so)
//   kjit_test_helper trials <db> <i> <n>  write n trials, one transaction each
//   kjit_test_helper lock <db> <marker> hold an exclusive lock until <marker>.release exists
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

#include <unistd.h>

#include <string>

#include "cache/tuning/sqlite.hpp"
#include "cache/tuning/tuning_db.hpp"
#include "kjit/comm.hpp"
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
  if (argc >= 5 && std::strcmp(argv[1], "trials") == 0) {
    // Writes <count> trials for process <index> into <db>, each in its own transaction.
    kjit::tuning::TuningDb db(argv[2], kjit::tuning::TuningDb::Mode::ReadWrite);
    const int index = std::atoi(argv[3]), count = std::atoi(argv[4]);
    for (int i = 0; i < count; ++i) {
      kjit::tuning::Trial t;
      t.key = {"race", "h", "p=" + std::to_string(index), "bf16", "sm_90a", "13.0"};
      t.config = "{\"i\":" + std::to_string(i) + "}";
      t.status = "ok";
      t.median_us = 1.0 + i;
      t.samples = 1;
      db.record_trial(t, {"gpu", "drv", "0", "policy", "test"});
    }
    return 0;
  }
  if (argc >= 4 && std::strcmp(argv[1], "lock") == 0) {
    // Holds an exclusive lock on <db> until <marker>.release exists, after creating <marker>.
    kjit::sql::Database db(argv[2], kjit::sql::Database::Access::ReadWrite, 1000);
    db.exec("PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE; CREATE TABLE IF NOT EXISTS held (x)");
    std::fclose(std::fopen(argv[3], "w"));
    const std::string release = std::string(argv[3]) + ".release";
    for (int i = 0; i < 600; ++i) {
      if (std::FILE* f = std::fopen(release.c_str(), "r")) {
        std::fclose(f);
        break;
      }
      usleep(10000);
    }
    db.exec("COMMIT");
    return 0;
  }
  if (argc >= 2 && std::strcmp(argv[1], "no-nccl") == 0) {
    std::string reason;
    if (kjit::comm::nccl_available(&reason)) return 4;
    std::printf("nccl_available: %s\n", reason.c_str());
    for (auto call : {+[] { kjit::comm::make_unique_id(); },
                      +[] { kjit::comm::from_unique_id(kjit::comm::UniqueId{}, 0, 1); }}) {
      try {
        call();
        return 5;
      } catch (const kjit::InvalidArgument&) {
        return 6;  // the arguments were fine: the missing library must be the error
      } catch (const kjit::Error& e) {
        if (reason != e.what()) return 7;
      }
    }
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

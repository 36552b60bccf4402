// Which SMs share what the L2 holds (templates/samples/l2_sharing.cuh): each row launches one
// block an SM over a buffer read through L2 and prints its time; the DRAM bytes come from ncu
// over a run of one launch a row ("once"), in the order printed:
//   ncu --metrics dram__bytes_read.sum,lts__t_sector_hit_rate.pct --kernel-name l2_sharing
//       kjit_bench_l2_sharing once
// Rows: every size (8 to 40 MB, about the half and the whole of an H100's 50 MB L2) read once
// (mode 0: one pass in all), 4 times by every SM, by the even SMs and by the lower half; then SM 0
// with each other SM in turn reading 16 MB twice ("pairs": 16 MB of DRAM where the two share a
// half of the L2, 32 where they do not). The grouped attention's K/V bytes (perf.md, issue 12) and
// the MLA decode's second row tile read keys other SMs read.
#include <cstdio>
#include <string>

#include "attention_timing.hpp"
#include "kjit/device.hpp"
#include "kjit/jit.hpp"
#include "samples/samples.hpp"

int main(int argc, char** argv) try {
  // "once": one launch a row and no timing (for ncu); "pairs": only the SM pairs.
  bool once = false, pairs_only = false;
  for (int i = 1; i < argc; ++i) {
    once = once || std::string(argv[i]) == "once";
    pairs_only = pairs_only || std::string(argv[i]) == "pairs";
  }
  if (kjit::bench::no_gpu("l2 sharing")) return 0;
  const kjit::DeviceInfo info = kjit::device_info(kjit::current_device());
  const kjit::Kernel kernel = kjit::load(kjit::samples::l2_sharing()).kernel();
  kjit::Stream stream;
  const auto s = stream.handle();
  // More than half an SM's shared memory, so that no SM holds two blocks.
  const unsigned shared = static_cast<unsigned>(info.max_shared_memory_per_block_optin / 2 + 1024);
  const int sms = info.sm_count;
  kjit::DeviceBuffer src(64ull << 20), sink(static_cast<std::size_t>(sms) * 4);
  src.fill_bytes(1);
  std::printf("%s, kjit %s, L2 sharing: %d SMs, L2 %d MB; one block an SM\n", info.name.c_str(),
              kjit::version().c_str(), sms, info.l2_bytes >> 20);
  std::printf("%-10s %6s %6s %6s %10s %10s\n", "readers", "MB", "passes", "arg", "us", "GB/s");
  const auto row = [&](const char* readers, int mode, int mb, int passes, int arg, int readers_n) {
    const long long words = (static_cast<long long>(mb) << 20) / 16;
    const auto launch = [&] {
      kernel.launch({{static_cast<unsigned>(sms)}, {1024}, shared, s, {}}, src.as<const void>(),
                    words, passes, mode, arg, sink.as<unsigned>());
    };
    std::printf("%-10s %6d %6d %6d", readers, mb, mode == 0 ? 1 : passes, arg);
    if (once) {
      launch();
      stream.synchronize();
      std::printf(" %10s %10s\n", "-", "-");
      return;
    }
    const double ms = kjit::bench::median_ms(launch, s);
    const double bytes = mode == 0 ? words * 16.0 : words * 16.0 * passes * readers_n;
    std::printf(" %10.1f %10.0f\n", ms * 1e3, bytes / ms / 1e6);
  };
  if (!pairs_only) {
    for (int mb : {8, 16, 24, 32, 40}) {
      row("slices", 0, mb, 1, 0, sms);
      row("all", 1, mb, 4, 0, sms);
      row("even", 2, mb, 4, 0, (sms + 1) / 2);
      row("lower", 3, mb, 4, sms / 2, sms / 2);
    }
  }
  for (int other = 1; other < sms; ++other)
    row("pair", 4, 16, 2, other, 2);
  return 0;
} catch (const kjit::Error& e) {
  std::fprintf(stderr, "kjit: %s\n", e.what());
  return 1;
}

// merge_states effective bandwidth ((bytes read + written) / time) against the device-to-device
// copy bandwidth measured in the same process: T*H = 64k rows, D = 512, N in {2, 4, 8, 16},
// bf16 (and fp32 for reference). Rotates input sets larger than L2 so no run reads from cache.
// Prints a table; figures go to docs/perf.md.
#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "kjit/jit.hpp"
#include "kjit/merge_states.hpp"
#include "ops/merge_states/merge_states.hpp"

namespace {

constexpr int kWarmup = 5, kIterations = 40;

template <class F>
double median_ms(F&& body, kjit::StreamHandle stream) {
  for (int i = 0; i < kWarmup; ++i)
    body(i);
  std::vector<double> ms;
  for (int i = 0; i < kIterations; ++i) {
    kjit::Event start, stop;
    start.record(stream);
    body(i);
    stop.record(stream);
    stop.synchronize();
    ms.push_back(stop.elapsed_ms_since(start));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void fill_random(kjit::DeviceBuffer& b, bool lse) {
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> dist(lse ? -4.f : -1.f, lse ? 4.f : 1.f);
  std::vector<float> host(b.size() / 4);
  for (float& v : host)
    v = dist(rng);  // also fine as 16-bit pairs: finite, non-zero bits
  b.upload(host.data(), b.size());
}

}  // namespace

int main() try {
  std::string reason;
  if (!kjit::driver_available(&reason)) {
    std::printf("merge_states_bandwidth needs a CUDA GPU: %s\n", reason.c_str());
    return 0;
  }
  const kjit::DeviceInfo dev = kjit::device_info(kjit::current_device());
  kjit::Stream stream;
  // The ceiling: a 2 GiB device-to-device copy, counting bytes read plus written.
  const std::size_t copy_bytes = 2ull << 30;
  kjit::DeviceBuffer src(copy_bytes), dst(copy_bytes);
  src.fill_bytes(1);
  const double copy_ms =
      median_ms([&](int) { dst.copy_from(src, copy_bytes, stream.handle()); }, stream.handle());
  const double copy_gbs = 2.0 * copy_bytes / copy_ms / 1e6;
  std::printf("%s, kjit %s: device-to-device copy %.0f GB/s (2 GiB, median of %d)\n",
              dev.name.c_str(), kjit::version().c_str(), copy_gbs, kIterations);
  std::printf("%-6s %4s %3s %8s %10s %10s %8s\n", "dtype", "D", "N", "rows", "time us", "GB/s",
              "vs copy");

  const long long tokens = 8192, heads = 8, dim = 512;
  for (kjit::DType dtype : {kjit::DType::BFloat16, kjit::DType::Float32}) {
    for (long long parts : {2, 4, 8, 16}) {
      const std::size_t elem = kjit::dtype_size(dtype);
      const std::size_t part_bytes = parts * tokens * heads * dim * elem;
      // Enough input sets that their total exceeds 4x L2.
      const int sets = static_cast<int>(
          std::max<std::size_t>(2, 4 * static_cast<std::size_t>(dev.l2_bytes) / part_bytes + 1));
      std::vector<kjit::DeviceBuffer> in, lse;
      for (int s = 0; s < sets; ++s) {
        in.emplace_back(part_bytes);
        lse.emplace_back(parts * tokens * heads * 4);
        fill_random(in.back(), false);
        fill_random(lse.back(), true);
      }
      kjit::DeviceBuffer out(tokens * heads * dim * elem), out_lse(tokens * heads * 4);
      auto view = [&](int s) {
        return kjit::TensorView(in[s % sets].data(), dtype, {parts, tokens, heads, dim});
      };
      auto lse_view = [&](int s) {
        return kjit::TensorView(lse[s % sets].data(), kjit::DType::Float32, {parts, tokens, heads});
      };
      const kjit::TensorView out_view(out.data(), dtype, {tokens, heads, dim});
      const kjit::TensorView out_lse_view(out_lse.data(), kjit::DType::Float32, {tokens, heads});
      const double ms = median_ms(
          [&](int i) {
            kjit::attention::merge_states(view(i), lse_view(i), out_view, out_lse_view,
                                          stream.handle());
          },
          stream.handle());
      const auto call =
          kjit::ops::MergeStates::validate(view(0), lse_view(0), out_view, out_lse_view);
      const double gbs =
          static_cast<double>(kjit::ops::MergeStates::bytes_moved(call.problem, true)) / ms / 1e6;
      std::printf("%-6s %4lld %3lld %8lld %10.1f %10.0f %7.1f%%\n", kjit::dtype_name(dtype), dim,
                  parts, tokens * heads, ms * 1e3, gbs, 100 * gbs / copy_gbs);
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "merge_states_bandwidth: %s\n", e.what());
  return 1;
}

// Compile + load + launch on the GPU: embedded template, KJIT_TEMPLATE_DIR override, user string
// source, concurrent threads and streams, > 48 KiB dynamic shared memory, cluster launches,
// overlapping (programmatic dependent) launches, and the launch-time checks.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <random>
#include <thread>
#include <vector>

#include "kjit/jit.hpp"
#include "samples/samples.hpp"
#include "tests/support/gpu.hpp"
#include "tests/support/isolated_cache.hpp"
#include "tests/support/write_file.hpp"

namespace kjit::test {
namespace {

std::vector<float> random_floats(std::size_t n) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> dist(-2.f, 2.f);
  std::vector<float> v(n);
  for (float& x : v)
    x = dist(rng);
  return v;
}

unsigned blocks_for(long long n, unsigned threads) {
  return static_cast<unsigned>(std::min<long long>((n + threads - 1) / threads, 65535));
}

class Launch : public IsolatedCache {
 protected:
  // Runs kernel(n, a, x, y) and returns y.
  std::vector<float> run_saxpy(const Kernel& k, float a, const std::vector<float>& x,
                               const std::vector<float>& y0, StreamHandle stream = nullptr) {
    const long long n = static_cast<long long>(x.size());
    DeviceBuffer dx(n * 4), dy(n * 4);
    dx.upload(x.data(), dx.size());
    dy.upload(y0.data(), dy.size());
    k.launch({{blocks_for(n, 256)}, {256}, 0, stream, {}}, n, a, dx.as<const float>(),
             dy.as<float>());
    std::vector<float> y(x.size());
    dy.download(y.data(), dy.size());  // synchronous: orders after the launch on any stream
    return y;
  }
};

void expect_axpy(const std::vector<float>& got, float a, const std::vector<float>& x,
                 const std::vector<float>& y0, float sign = 1.f) {
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double ref = static_cast<double>(a) * x[i] + sign * static_cast<double>(y0[i]);
    ASSERT_NEAR(got[i], ref, 1e-6 * (1 + std::abs(ref))) << "element " << i;
  }
}

TEST_F(Launch, EmbeddedTemplate) {
  KJIT_REQUIRE_GPU();
  Origin origin{};
  const Kernel k = load(samples::saxpy("float"), &origin).kernel();
  EXPECT_EQ(origin, Origin::Compiled);
  const std::size_t n = (1 << 20) + 37;  // not a multiple of the block
  const auto x = random_floats(n), y = random_floats(n);
  expect_axpy(run_saxpy(k, 1.5f, x, y), 1.5f, x, y);

  load(samples::saxpy("float"), &origin);
  EXPECT_EQ(origin, Origin::Memory);
  clear_memory_cache();
  const Kernel from_disk = load(samples::saxpy("float"), &origin).kernel();
  EXPECT_EQ(origin, Origin::Disk);
  expect_axpy(run_saxpy(from_disk, -0.5f, x, y), -0.5f, x, y);
  // Handles taken before the memory cache was cleared keep their library loaded.
  expect_axpy(run_saxpy(k, 3.f, x, y), 3.f, x, y);
}

TEST_F(Launch, TemplateDirOverride) {
  KJIT_REQUIRE_GPU();
  TempDir tree;
  write_file(tree.path() / "samples/saxpy.cuh",
             "#include \"common/indexing.cuh\"\nnamespace kjit::samples {\n"
             "template <class T> __global__ void saxpy(long long n, T a, const T* x, T* y) {\n"
             "  for (long long i = global_thread_index(); i < n; i += global_thread_count())\n"
             "    y[i] = a * x[i] - y[i];\n}\n}\n");
  set_env("KJIT_TEMPLATE_DIR", tree.str());
  const Kernel k = load(samples::saxpy("float")).kernel();
  const auto x = random_floats(4099), y = random_floats(4099);
  expect_axpy(run_saxpy(k, 2.f, x, y), 2.f, x, y, -1.f);
}

TEST_F(Launch, UserStringSource) {
  KJIT_REQUIRE_GPU();
  KernelSpec spec(Source::string("user_scale.cu",
                                 "#include \"common/indexing.cuh\"\n"
                                 "template <int kFactor> __global__ void scale(float* p, int n) {\n"
                                 "  long long i = kjit::global_thread_index();\n"
                                 "  if (i < n) p[i] *= kFactor;\n}\n"),
                  {"scale<3>"});
  const Kernel k = load(spec).kernel();
  auto v = random_floats(1000);
  DeviceBuffer d(v.size() * 4);
  d.upload(v.data(), d.size());
  k.launch({{4}, {256}, 0, nullptr, {}}, d.as<float>(), 1000);
  std::vector<float> out(v.size());
  d.download(out.data(), d.size());
  for (std::size_t i = 0; i < v.size(); ++i)
    ASSERT_FLOAT_EQ(out[i], 3 * v[i]);
}

TEST_F(Launch, ConcurrentThreadsAndStreams) {
  KJIT_REQUIRE_GPU();
  constexpr int kThreads = 8, kLaunches = 40;
  const std::size_t n = 100003;
  const auto x = random_floats(n), y0 = random_floats(n);
  const Counters before = counters();
  std::atomic<int> ready{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ready.fetch_add(1);
      while (ready.load() < kThreads)
        std::this_thread::yield();
      try {
        Stream stream;
        const Kernel k = load(samples::saxpy("float")).kernel();
        DeviceBuffer dx(n * 4), dy(n * 4);
        dx.upload(x.data(), dx.size());
        dy.upload(y0.data(), dy.size());
        // y = y0 + kLaunches * a * x after kLaunches accumulating launches on this stream.
        const float a = 0.25f * (t + 1);
        for (int i = 0; i < kLaunches; ++i) {
          k.launch({{blocks_for(n, 256)}, {256}, 0, stream.handle(), {}}, static_cast<long long>(n),
                   a, dx.as<const float>(), dy.as<float>());
        }
        stream.synchronize();
        std::vector<float> y(n);
        dy.download(y.data(), dy.size());
        for (std::size_t i = 0; i < n; ++i) {
          const double ref = y0[i] + static_cast<double>(kLaunches) * a * x[i];
          if (std::abs(y[i] - ref) > 1e-4 * (1 + std::abs(ref))) {
            failures.fetch_add(1);
            break;
          }
        }
      } catch (const std::exception& e) {
        ADD_FAILURE() << "thread " << t << ": " << e.what();
        failures.fetch_add(1);
      }
    });
  }
  for (std::thread& t : threads)
    t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(counters().compiles - before.compiles, 1u) << "one compile for eight threads";
}

TEST_F(Launch, LargeDynamicSharedMemory) {
  KJIT_REQUIRE_GPU();
  const DeviceInfo dev = device_info(current_device());
  const int per_block = (dev.max_shared_memory_per_block_optin / 4) - 16;  // ~227 KiB on H100
  ASSERT_GT(per_block * 4, 48 * 1024) << "device cannot exceed 48 KiB of shared memory";
  const int blocks = 12;
  const auto in = random_floats(static_cast<std::size_t>(per_block) * blocks);
  DeviceBuffer din(in.size() * 4), dout(in.size() * 4);
  din.upload(in.data(), din.size());
  dout.fill_bytes(0xff);
  const Kernel k = load(samples::shared_reverse()).kernel();
  k.launch({{blocks}, {512}, static_cast<unsigned>(per_block * 4), nullptr, {}},
           din.as<const float>(), dout.as<float>(), per_block);
  std::vector<float> out(in.size());
  dout.download(out.data(), dout.size());
  for (int b = 0; b < blocks; ++b) {
    for (int i = 0; i < per_block; ++i) {
      ASSERT_EQ(out[b * per_block + i], in[b * per_block + per_block - 1 - i]) << b << "/" << i;
    }
  }
}

// The L2 sharing probe reads what it says (bench/l2_sharing.cpp times it): a slice a block in
// mode 0, the whole buffer from the block's own offset (wrapping once) in mode 1, nothing where
// its mode admits no SM.
TEST_F(Launch, L2SharingProbeReadsWhatItsModeAdmits) {
  KJIT_REQUIRE_GPU();
  constexpr int kBlocks = 8, kSlice = 1000;
  constexpr long long kWords = kBlocks * kSlice;  // 16-byte words
  std::mt19937 rng(5);
  std::vector<unsigned> host(kWords * 4);
  for (unsigned& v : host)
    v = rng();
  DeviceBuffer src(host.size() * 4), sink(kBlocks * 4);
  src.upload(host.data(), src.size());
  const Kernel k = load(samples::l2_sharing()).kernel();
  const auto sinks = [&](int mode, int arg) {
    sink.fill_bytes(0);
    k.launch({{kBlocks}, {256}, 0, nullptr, {}}, src.as<const void>(), kWords, 1, mode, arg,
             sink.as<unsigned>());
    std::vector<unsigned> out(kBlocks);
    sink.download(out.data(), sink.size());
    return out;
  };
  const auto xor_of = [&](long long first, long long words) {
    unsigned x = 0;
    for (long long i = 4 * first; i < 4 * (first + words); ++i)
      x ^= host[i];
    return x;
  };
  const std::vector<unsigned> slices = sinks(0, 0), every = sinks(1, 0), none = sinks(3, 0);
  for (int b = 0; b < kBlocks; ++b) {
    EXPECT_EQ(slices[b], xor_of(b * kSlice, kSlice)) << "block " << b;
    EXPECT_EQ(every[b], xor_of(0, kWords)) << "block " << b;
    EXPECT_EQ(none[b], 0u) << "block " << b;
  }
}

// A negative test: the driver's refusal is an API error, so the sanitizer runs leave it out.
TEST_F(Launch, SharedMemoryBeyondTheDeviceLimitIsRefused) {
  KJIT_REQUIRE_GPU();
  const DeviceInfo dev = device_info(current_device());
  const Kernel k = load(samples::shared_reverse()).kernel();
  DeviceBuffer din(64 * 4), dout(64 * 4);
  try {
    k.launch({{1},
              {512},
              static_cast<unsigned>(dev.max_shared_memory_per_block_optin + 1024),
              nullptr,
              {}},
             din.as<const float>(), dout.as<float>(), 16);
    FAIL() << "launch beyond the shared-memory limit succeeded";
  } catch (const DriverError& e) {
    EXPECT_NE(std::string(e.what()).find("shared_reverse"), std::string::npos) << e.what();
  }
}

TEST_F(Launch, ClusterLaunch) {
  KJIT_REQUIRE_GPU();
  if (device_info(current_device()).cc_major < 9) GTEST_SKIP() << "clusters need sm_90";
  constexpr int kThreads = 256, kPerBlock = 4096, kCluster = 4, kBlocks = 64;
  const auto in = random_floats(static_cast<std::size_t>(kPerBlock) * kBlocks);
  DeviceBuffer din(in.size() * 4), dout(kBlocks / kCluster * 4);
  din.upload(in.data(), din.size());
  dout.fill_bytes(0xff);
  const Kernel k = load(samples::cluster_sum(kThreads)).kernel();
  k.launch({{kBlocks}, {kThreads}, 0, nullptr, {kCluster, 1, 1}}, din.as<const float>(),
           dout.as<float>(), kPerBlock);
  std::vector<float> out(kBlocks / kCluster);
  dout.download(out.data(), dout.size());
  for (int c = 0; c < kBlocks / kCluster; ++c) {
    double ref = 0;
    for (int i = 0; i < kPerBlock * kCluster; ++i)
      ref += in[c * kPerBlock * kCluster + i];
    ASSERT_NEAR(out[c], ref, 1e-3) << "cluster " << c;
  }
  EXPECT_THROW(k.launch({{kBlocks + 1}, {kThreads}, 0, nullptr, {kCluster, 1, 1}},
                        din.as<const float>(), dout.as<float>(), kPerBlock),
               Error);
}

TEST_F(Launch, OverlappingLaunchWaitsForThePreviousKernel) {
  KJIT_REQUIRE_GPU();
  if (device_info(current_device()).cc_major < 9)
    GTEST_SKIP() << "programmatic dependent launch needs sm_90";
  constexpr int kThreads = 256, kBlocks = 8, kN = 1 << 16;
  const Program program = load(samples::overlapped_pair());
  const Stream stream;
  DeviceBuffer filled(kN * 4), copied(kN * 4);
  std::vector<float> out(kN);
  for (int round = 0; round < 3; ++round) {
    filled.fill_bytes(0xff);  // NaN: what the consumer reads if it runs ahead
    copied.fill_bytes(0xff);
    // ~0.1 ms of spinning before the first value is written: the consumer, launched meanwhile
    // onto the idle SMs, would copy NaN if it did not wait.
    program.kernel_at(0).launch({{kBlocks}, {kThreads}, 0, stream.handle(), {}}, filled.as<float>(),
                                kN, 200000LL);
    program.kernel_at(1).launch({{kBlocks}, {kThreads}, 0, stream.handle(), {}, true},
                                filled.as<const float>(), copied.as<float>(), kN);
    stream.synchronize();
    copied.download(out.data(), copied.size());
    for (int i = 0; i < kN; ++i)
      ASSERT_EQ(out[i], static_cast<float>(i)) << "element " << i << ", round " << round;
  }
}

TEST_F(Launch, ArgumentsAreCheckedAgainstTheKernelsParameters) {
  KJIT_REQUIRE_GPU();
  const Kernel k = load(samples::saxpy("float")).kernel();
  DeviceBuffer d(64);
  try {
    k.launch({{1}, {32}, 0, nullptr, {}}, 16 /* int, not long long */, 1.f, d.as<const float>(),
             d.as<float>());
    FAIL() << "a 4-byte argument for an 8-byte parameter was launched";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("argument 0"), std::string::npos) << e.what();
  }
  EXPECT_THROW(k.launch({{1}, {32}, 0, nullptr, {}}, 16LL, 1.f), Error);
}

TEST_F(Launch, RepeatedLoadsAndLaunchesDoNotGrowDeviceMemory) {
  KJIT_REQUIRE_GPU();
  DeviceBuffer d(4096 * 4);
  d.fill_bytes(0);
  auto launch_once = [&] {
    const Kernel k = load(samples::saxpy("float")).kernel();
    k.launch({{16}, {256}, 0, nullptr, {}}, 4096LL, 1.f, d.as<const float>(), d.as<float>());
  };
  auto wait_default_stream = [] {
    Event done;
    done.record(nullptr);
    done.synchronize();
  };
  for (int i = 0; i < 10; ++i)
    launch_once();
  wait_default_stream();
  std::size_t free_before = 0, free_after = 0;
  memory_info(&free_before, nullptr);
  for (int i = 0; i < 1000; ++i)
    launch_once();
  wait_default_stream();
  memory_info(&free_after, nullptr);
  EXPECT_LE(free_before - std::min(free_before, free_after), 2u << 20);
}

}  // namespace
}  // namespace kjit::test

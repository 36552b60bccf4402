// Your own kernel through kjit in two minutes: a template in a string, specialised at run time,
// compiled once (then served from memory or the on-disk store), launched on a stream.
#include <cstdio>
#include <vector>

#include "kjit/jit.hpp"

// Device code. Quoted includes may name kjit's own templates (common/...) or files next to a
// Source::file.
static const char* kSource = R"(
#include "common/indexing.cuh"

template <int kPower>
__global__ void power(const float* in, float* out, long long n) {
  for (long long i = kjit::global_thread_index(); i < n; i += kjit::global_thread_count()) {
    float v = 1.f;
    for (int p = 0; p < kPower; ++p) v *= in[i];
    out[i] = v;
  }
}
)";

int main() try {
  // 1. Describe the specialisation: source + the instantiation you want.
  kjit::KernelSpec spec(kjit::Source::string("power.cu", kSource), {"power<3>"});

  // 2. Get a kernel: memory hit, disk hit, or an NVRTC compile for this GPU.
  kjit::Origin origin{};
  kjit::Kernel cube = kjit::load(spec, &origin).kernel();
  std::printf("power<3>: %s (%s)\n",
              origin == kjit::Origin::Compiled ? "compiled"
              : origin == kjit::Origin::Disk   ? "from disk"
                                               : "from memory",
              cube.resources().summary().c_str());

  // 3. Launch it with typed arguments on a stream.
  const long long n = 1 << 20;
  std::vector<float> host(n, 2.f);
  kjit::DeviceBuffer in(n * sizeof(float)), out(n * sizeof(float));
  in.upload(host.data(), in.size());
  kjit::Stream stream;
  cube.launch({{256}, {256}, 0, stream.handle(), {}}, in.as<const float>(), out.as<float>(), n);
  stream.synchronize();
  out.download(host.data(), out.size());
  std::printf("2^3 = %g\n", host[12345]);
  return host[12345] == 8.f ? 0 : 1;
} catch (const kjit::NoDriverError& e) {
  std::printf("this example needs a CUDA GPU: %s\n", e.what());
  return 0;
} catch (const kjit::Error& e) {
  std::fprintf(stderr, "kjit: %s\n", e.what());
  return 1;
}

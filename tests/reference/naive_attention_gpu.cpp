#include "tests/reference/naive_attention_gpu.hpp"

#include "kjit/jit.hpp"

namespace kjit::test::reference {
namespace {

// Deliberately simple: no tiling, no online softmax, every score in fp32 from the bf16 inputs.
constexpr const char* kSource = R"(
#include <cuda_bf16.h>

constexpr int kThreads = 256;  // keys per chunk; also covers every head dim (<= 256)

__device__ float minus_infinity() { return __int_as_float(0xff800000); }

__device__ float block_reduce(float v, bool is_max, float* scratch) {
  for (int o = 16; o > 0; o /= 2) {
    const float other = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, other) : v + other;
  }
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  v = scratch[0];
  for (int w = 1; w < kThreads / 32; ++w) v = is_max ? fmaxf(v, scratch[w]) : v + scratch[w];
  __syncthreads();
  return v;
}

__global__ void __launch_bounds__(kThreads) naive_attention(
    const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, float* out,
    float* lse, int seqlen_q, int seqlen_k, int heads_q, int heads_k, int d, float scale,
    int causal, int round_p) {
  __shared__ float qs[256], ps[kThreads], scratch[kThreads / 32];
  const int row = blockIdx.x, head = blockIdx.y, kv_head = head / (heads_q / heads_k);
  for (int x = threadIdx.x; x < d; x += kThreads)
    qs[x] = __bfloat162float(q[(static_cast<long long>(row) * heads_q + head) * d + x]);
  __syncthreads();
  const int keys = causal ? min(seqlen_k, max(0, row + seqlen_k - seqlen_q + 1)) : seqlen_k;
  auto score = [&](int j) {
    const __nv_bfloat16* kr = k + (static_cast<long long>(j) * heads_k + kv_head) * d;
    float s = 0.f;
    for (int x = 0; x < d; ++x) s += qs[x] * __bfloat162float(kr[x]);
    return s * scale;
  };
  float mx = minus_infinity();
  for (int j = threadIdx.x; j < keys; j += kThreads) mx = fmaxf(mx, score(j));
  mx = block_reduce(mx, true, scratch);
  float sum = 0.f, acc = 0.f;  // thread t accumulates output column t
  for (int first = 0; first < keys; first += kThreads) {
    const int j = first + threadIdx.x;
    float p = j < keys ? expf(score(j) - mx) : 0.f;
    sum += p;
    ps[threadIdx.x] = round_p ? __bfloat162float(__float2bfloat16_rn(p)) : p;
    __syncthreads();
    if (threadIdx.x < d) {
      for (int i = 0; i < kThreads && first + i < keys; ++i)
        acc += ps[i] * __bfloat162float(
                           v[(static_cast<long long>(first + i) * heads_k + kv_head) * d + threadIdx.x]);
    }
    __syncthreads();
  }
  sum = block_reduce(sum, false, scratch);
  if (threadIdx.x < d)
    out[(static_cast<long long>(row) * heads_q + head) * d + threadIdx.x] = sum > 0.f ? acc / sum : 0.f;
  if (threadIdx.x == 0)
    lse[static_cast<long long>(head) * seqlen_q + row] = sum > 0.f ? mx + logf(sum) : minus_infinity();
}
)";

}  // namespace

NaiveAttentionGpu naive_attention_gpu(const DeviceBuffer& q, const DeviceBuffer& k,
                                      const DeviceBuffer& v, int seqlen_q, int seqlen_k,
                                      int heads_q, int heads_k, int head_dim, float scale,
                                      bool causal, bool round_p_to_bf16) {
  static const Kernel kernel =
      load(KernelSpec(Source::string("naive_attention_gpu.cu", kSource), {"naive_attention"}))
          .kernel();
  const std::size_t rows = static_cast<std::size_t>(seqlen_q) * heads_q;
  DeviceBuffer out(rows * head_dim * sizeof(float)), lse(rows * sizeof(float));
  Stream stream;
  kernel.launch({{static_cast<unsigned>(seqlen_q), static_cast<unsigned>(heads_q), 1},
                 {256},
                 0,
                 stream.handle(),
                 {}},
                q.data(), k.data(), v.data(), out.data(), lse.data(), seqlen_q, seqlen_k, heads_q,
                heads_k, head_dim, scale, causal ? 1 : 0, round_p_to_bf16 ? 1 : 0);
  stream.synchronize();
  NaiveAttentionGpu r;
  r.out.resize(rows * head_dim);
  r.lse.resize(rows);
  out.download(r.out.data(), r.out.size() * sizeof(float));
  lse.download(r.lse.data(), r.lse.size() * sizeof(float));
  return r;
}

}  // namespace kjit::test::reference

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

// The backward, as simple: dsum = rowsum(dO * O); per (query row, head) dQ over its keys; per
// (key row, key/value head) dK and dV over the group's query heads and rows that see the key.
constexpr const char* kBackwardSource = R"(
#include <cuda_bf16.h>

constexpr int kThreads = 256;

__device__ float keep(float x, int round) {
  return round ? __bfloat162float(__float2bfloat16_rn(x)) : x;
}

__device__ float dot(const float* a, const __nv_bfloat16* b, int d) {
  float s = 0.f;
  for (int x = 0; x < d; ++x) s += a[x] * __bfloat162float(b[x]);
  return s;
}

__global__ void naive_dsum(const __nv_bfloat16* dout, const float* out, float* dsum, int seqlen_q,
                           int heads_q, int d) {
  const long long cell = static_cast<long long>(blockIdx.x) * kThreads + threadIdx.x;
  if (cell >= static_cast<long long>(seqlen_q) * heads_q) return;  // cell = row * heads_q + head
  float s = 0.f;
  for (int x = 0; x < d; ++x) s += __bfloat162float(dout[cell * d + x]) * out[cell * d + x];
  dsum[(cell % heads_q) * seqlen_q + cell / heads_q] = s;
}

__global__ void __launch_bounds__(kThreads) naive_dq(
    const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
    const __nv_bfloat16* dout, const float* lse, const float* dsum, float* dq, int seqlen_q,
    int seqlen_k, int heads_q, int heads_k, int d, float scale, int causal, int round) {
  __shared__ float qs[256], dos[256], ds[kThreads];
  const int row = blockIdx.x, head = blockIdx.y, kv_head = head / (heads_q / heads_k);
  const long long at = (static_cast<long long>(row) * heads_q + head) * d;
  for (int x = threadIdx.x; x < d; x += kThreads) {
    qs[x] = __bfloat162float(q[at + x]);
    dos[x] = __bfloat162float(dout[at + x]);
  }
  __syncthreads();
  const int keys = causal ? min(seqlen_k, max(0, row + seqlen_k - seqlen_q + 1)) : seqlen_k;
  const float l = lse[static_cast<long long>(head) * seqlen_q + row];
  const float dl = dsum[static_cast<long long>(head) * seqlen_q + row];
  float acc = 0.f;  // thread t accumulates column t
  for (int first = 0; first < keys; first += kThreads) {
    const int j = first + threadIdx.x;
    float g = 0.f;
    if (j < keys) {
      const long long kv = (static_cast<long long>(j) * heads_k + kv_head) * d;
      const float p = keep(expf(dot(qs, k + kv, d) * scale - l), round);
      g = p * (keep(dot(dos, v + kv, d), round) - dl);
    }
    ds[threadIdx.x] = g;
    __syncthreads();
    if (threadIdx.x < d) {
      for (int i = 0; i < kThreads && first + i < keys; ++i)
        acc += ds[i] * __bfloat162float(
                           k[(static_cast<long long>(first + i) * heads_k + kv_head) * d + threadIdx.x]);
    }
    __syncthreads();
  }
  if (threadIdx.x < d) dq[at + threadIdx.x] = scale * acc;
}

__global__ void __launch_bounds__(kThreads) naive_dkdv(
    const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
    const __nv_bfloat16* dout, const float* lse, const float* dsum, float* dk, float* dv,
    int seqlen_q, int seqlen_k, int heads_q, int heads_k, int d, float scale, int causal,
    int round) {
  __shared__ float ks[256], vs[256], ps[kThreads], ds[kThreads];
  const int key = blockIdx.x, kv_head = blockIdx.y, group = heads_q / heads_k;
  const long long at = (static_cast<long long>(key) * heads_k + kv_head) * d;
  for (int x = threadIdx.x; x < d; x += kThreads) {
    ks[x] = __bfloat162float(k[at + x]);
    vs[x] = __bfloat162float(v[at + x]);
  }
  __syncthreads();
  // Bottom-right causal: row r sees keys <= r + seqlen_k - seqlen_q.
  const int first_row = causal ? max(0, key - (seqlen_k - seqlen_q)) : 0;
  float acc_k = 0.f, acc_v = 0.f;
  for (int head = kv_head * group; head < (kv_head + 1) * group; ++head) {
    for (int first = first_row; first < seqlen_q; first += kThreads) {
      const int r = first + threadIdx.x;
      float p = 0.f, g = 0.f;
      if (r < seqlen_q) {
        const long long row = (static_cast<long long>(r) * heads_q + head) * d;
        const long long cell = static_cast<long long>(head) * seqlen_q + r;
        p = keep(expf(dot(ks, q + row, d) * scale - lse[cell]), round);
        g = p * (keep(dot(vs, dout + row, d), round) - dsum[cell]);
      }
      ps[threadIdx.x] = p;
      ds[threadIdx.x] = g;
      __syncthreads();
      if (threadIdx.x < d) {
        for (int i = 0; i < kThreads && first + i < seqlen_q; ++i) {
          const long long row = (static_cast<long long>(first + i) * heads_q + head) * d;
          acc_v += ps[i] * __bfloat162float(dout[row + threadIdx.x]);
          acc_k += ds[i] * __bfloat162float(q[row + threadIdx.x]);
        }
      }
      __syncthreads();
    }
  }
  if (threadIdx.x < d) {
    dk[at + threadIdx.x] = scale * acc_k;
    dv[at + threadIdx.x] = acc_v;
  }
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

NaiveAttentionGradientsGpu naive_attention_backward_gpu(
    const DeviceBuffer& q, const DeviceBuffer& k, const DeviceBuffer& v, const DeviceBuffer& dout,
    const NaiveAttentionGpu& forward, int seqlen_q, int seqlen_k, int heads_q, int heads_k,
    int head_dim, float scale, bool causal, bool round_to_bf16) {
  static const Program program =
      load(KernelSpec(Source::string("naive_attention_backward_gpu.cu", kBackwardSource),
                      {"naive_dsum", "naive_dq", "naive_dkdv"}));
  const std::size_t q_cells = static_cast<std::size_t>(seqlen_q) * heads_q,
                    k_cells = static_cast<std::size_t>(seqlen_k) * heads_k;
  DeviceBuffer out(q_cells * head_dim * 4), lse(q_cells * 4), dsum(q_cells * 4),
      dq(q_cells * head_dim * 4), dk(k_cells * head_dim * 4), dv(k_cells * head_dim * 4);
  out.upload(forward.out.data(), out.size());
  lse.upload(forward.lse.data(), lse.size());
  Stream stream;
  const int causal_flag = causal ? 1 : 0, round = round_to_bf16 ? 1 : 0;
  program.kernel_at(0).launch(
      {{static_cast<unsigned>((q_cells + 255) / 256), 1, 1}, {256}, 0, stream.handle(), {}},
      dout.data(), out.data(), dsum.data(), seqlen_q, heads_q, head_dim);
  program.kernel_at(1).launch({{static_cast<unsigned>(seqlen_q), static_cast<unsigned>(heads_q), 1},
                               {256},
                               0,
                               stream.handle(),
                               {}},
                              q.data(), k.data(), v.data(), dout.data(), lse.data(), dsum.data(),
                              dq.data(), seqlen_q, seqlen_k, heads_q, heads_k, head_dim, scale,
                              causal_flag, round);
  program.kernel_at(2).launch({{static_cast<unsigned>(seqlen_k), static_cast<unsigned>(heads_k), 1},
                               {256},
                               0,
                               stream.handle(),
                               {}},
                              q.data(), k.data(), v.data(), dout.data(), lse.data(), dsum.data(),
                              dk.data(), dv.data(), seqlen_q, seqlen_k, heads_q, heads_k, head_dim,
                              scale, causal_flag, round);
  stream.synchronize();
  NaiveAttentionGradientsGpu g;
  g.dq.resize(q_cells * head_dim);
  g.dk.resize(k_cells * head_dim);
  g.dv.resize(k_cells * head_dim);
  dq.download(g.dq.data(), dq.size());
  dk.download(g.dk.data(), dk.size());
  dv.download(g.dv.data(), dv.size());
  return g;
}

}  // namespace kjit::test::reference

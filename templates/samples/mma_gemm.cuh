// C[M,N] (fp32) = A[M,K] * B[N,K]^T with 16-bit inputs: a multi-stage cp.async pipeline into
// padded shared tiles, ldmatrix fragments and mma.sync m16n8k16. The runtime's realistic sample
// (toolkit headers, PTX wrappers, deep templates) for compile-latency measurements and the GPU
// tests; the attention kernels build on the same pieces. Requires M % BM == N % BN == K % BK == 0.
#pragma once

#include "common/mma.cuh"

namespace kjit::samples {

template <class T, int BM, int BN, int BK, int kWarpsM, int kWarpsN, int kStages>
struct MmaGemmShape {
  static constexpr int kThreads = kWarpsM * kWarpsN * 32;
  static constexpr int kPad = 8;  // halves per row: keeps ldmatrix rows off one bank
  static constexpr int kRow = BK + kPad;
  static constexpr int kWarpM = BM / kWarpsM;
  static constexpr int kWarpN = BN / kWarpsN;
  static constexpr int kFragsM = kWarpM / 16;
  static constexpr int kFragsN = kWarpN / 8;
  static constexpr int kStageElems = (BM + BN) * kRow;
  static constexpr int kSharedBytes = kStages * kStageElems * static_cast<int>(sizeof(T));
  static_assert(BK % 16 == 0 && kWarpM % 16 == 0 && kWarpN % 16 == 0, "tile shape");
  static_assert(kStages >= 2, "the pipeline needs two stages at least");
};

template <class T, int BM, int BN, int BK, int kWarpsM, int kWarpsN, int kStages>
__global__ void __launch_bounds__(kWarpsM* kWarpsN * 32)
    mma_gemm(const T* __restrict__ a, const T* __restrict__ b, float* __restrict__ c, int m, int n,
             int k) {
  using S = MmaGemmShape<T, BM, BN, BK, kWarpsM, kWarpsN, kStages>;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  T* shared = reinterpret_cast<T*>(shared_raw);

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int warp_m = warp / kWarpsN;
  const int warp_n = warp % kWarpsN;
  const long long row0 = static_cast<long long>(blockIdx.y) * BM;
  const long long col0 = static_cast<long long>(blockIdx.x) * BN;
  const int tiles = k / BK;

  // Stage s holds A rows [0, BM) then B rows [0, BN), each kRow halves wide.
  auto load_stage = [&](int tile, int stage) {
    T* dst = shared + stage * S::kStageElems;
    constexpr int kChunksPerRow = BK / 8;
    for (int chunk = threadIdx.x; chunk < (BM + BN) * kChunksPerRow; chunk += S::kThreads) {
      const int r = chunk / kChunksPerRow;
      const int col = (chunk % kChunksPerRow) * 8;
      const T* src = r < BM ? a + (row0 + r) * k : b + (col0 + r - BM) * k;
      ptx::cp_async_16(dst + r * S::kRow + col, src + static_cast<long long>(tile) * BK + col,
                       tile < tiles);
    }
  };

  float acc[S::kFragsM][S::kFragsN][4] = {};
  for (int s = 0; s < kStages - 1; ++s) {
    load_stage(s, s);
    ptx::cp_async_commit();
  }
  for (int tile = 0; tile < tiles; ++tile) {
    ptx::cp_async_wait<kStages - 2>();
    __syncthreads();  // the stage is complete for all threads; the one refilled below is idle
    load_stage(tile + kStages - 1, (tile + kStages - 1) % kStages);
    ptx::cp_async_commit();

    const T* sa = shared + (tile % kStages) * S::kStageElems;
    const T* sb = sa + BM * S::kRow;
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      unsigned af[S::kFragsM][4];
      unsigned bf[S::kFragsN][2];
#pragma unroll
      for (int i = 0; i < S::kFragsM; ++i) {
        const int r = warp_m * S::kWarpM + i * 16 + lane % 16;
        ptx::ldmatrix_x4(af[i], sa + r * S::kRow + kk + (lane / 16) * 8);
      }
#pragma unroll
      for (int j = 0; j < S::kFragsN; j += 2) {
        const int r = warp_n * S::kWarpN + j * 8 + lane % 8 + (lane / 16) * 8;
        unsigned t[4];
        ptx::ldmatrix_x4(t, sb + r * S::kRow + kk + ((lane / 8) % 2) * 8);
        bf[j][0] = t[0];
        bf[j][1] = t[1];
        bf[j + 1][0] = t[2];
        bf[j + 1][1] = t[3];
      }
#pragma unroll
      for (int i = 0; i < S::kFragsM; ++i) {
#pragma unroll
        for (int j = 0; j < S::kFragsN; ++j)
          ptx::mma_m16n8k16<T>(acc[i][j], af[i], bf[j]);
      }
    }
  }
  ptx::cp_async_wait<0>();

#pragma unroll
  for (int i = 0; i < S::kFragsM; ++i) {
#pragma unroll
    for (int j = 0; j < S::kFragsN; ++j) {
      const long long r = row0 + warp_m * S::kWarpM + i * 16 + lane / 4;
      const long long col = col0 + warp_n * S::kWarpN + j * 8 + (lane % 4) * 2;
      *reinterpret_cast<float2*>(c + r * n + col) = make_float2(acc[i][j][0], acc[i][j][1]);
      *reinterpret_cast<float2*>(c + (r + 8) * n + col) = make_float2(acc[i][j][2], acc[i][j][3]);
    }
  }
  (void)m;
}

}  // namespace kjit::samples

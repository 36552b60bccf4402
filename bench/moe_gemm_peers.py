"""torch._grouped_mm and DeepGEMM (sgl-deep-gemm's m_grouped_bf16_gemm_nt_contiguous) on the rows
of bench/moe_gemm.cpp, in the same convention: bf16, balanced routing (every expert T k / E rows),
us per call = the median of 15 CUDA-event-timed runs of 20 back-to-back calls, TFLOP/s over the
routed rows (2 T k N K). torch gets its preferred layouts (rows unpadded, weights [E, K, N]);
DeepGEMM its contiguous layout (each expert's rows padded to its M alignment, weights [E, N, K],
an expert id per row, -1 for padding). DeepGEMM compiles each shape with nvcc on its first call
(outside the timing). Run in the same device call as kjit_bench_moe_gemm, with sgl-deep-gemm on
PYTHONPATH (its columns are n/a without it)."""
import importlib
import os

import torch

from torch_timing import median_ms, peer

os.environ.setdefault("DG_JIT_CACHE_DIR", "/tmp/dg_jit_cache")
CALLS = 20
ROWS = [("torch-anchor", 64, 16384, 1536, 2048),
        ("glm-gate-up", 64, 4096, 3072, 2048),
        ("glm-gate-up", 64, 16384, 3072, 2048),
        ("glm-gate-up", 64, 65536, 3072, 2048),
        ("glm-down", 64, 4096, 2048, 1536),
        ("glm-down", 64, 16384, 2048, 1536),
        ("glm-down", 64, 65536, 2048, 1536),
        ("deepgemm", 8, 32768, 4096, 7168)]


def per_call_ms(fn):
    def calls():
        for _ in range(CALLS):
            fn()
    return median_ms(calls) / CALLS


def main():
    utils = peer("deep_gemm.utils", "DeepGEMM")  # and so deep_gemm itself
    deep_gemm = importlib.import_module("deep_gemm") if utils is not None else None
    if deep_gemm is not None:
        align_m = utils.get_mk_alignment_for_contiguous_layout()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, MoE grouped GEMM bf16, "
          f"balanced routing, us per call and TFLOP/s", flush=True)
    print(f"{'row':<14} {'E':>4} {'Tk':>6} {'N':>5} {'K':>5} {'torch us':>9} {'TFLOP/s':>8} "
          f"{'deepgemm':>9} {'TFLOP/s':>8}", flush=True)
    for name, experts, rows, n, k in ROWS:
        flops = 2.0 * rows * n * k
        per = rows // experts
        x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
        w_kn = torch.randn(experts, k, n, device="cuda", dtype=torch.bfloat16)
        offs = torch.arange(1, experts + 1, device="cuda", dtype=torch.int32) * per
        ms = per_call_ms(lambda: torch._grouped_mm(x, w_kn, offs=offs))
        cols = [f"{ms * 1e3:9.1f} {flops / ms / 1e9:8.1f}"]
        del w_kn
        if deep_gemm is not None:
            padded = (per + align_m - 1) // align_m * align_m
            a = torch.zeros(experts * padded, k, device="cuda", dtype=torch.bfloat16)
            index = torch.full((experts * padded,), -1, device="cuda", dtype=torch.int32)
            for e in range(experts):
                a[e * padded:e * padded + per] = x[e * per:(e + 1) * per]
                index[e * padded:e * padded + per] = e
            w_nk = torch.randn(experts, n, k, device="cuda", dtype=torch.bfloat16)
            d = torch.empty(experts * padded, n, device="cuda", dtype=torch.bfloat16)
            deep_gemm.m_grouped_bf16_gemm_nt_contiguous(a, w_nk, d, index)  # compiles
            ms = per_call_ms(lambda: deep_gemm.m_grouped_bf16_gemm_nt_contiguous(a, w_nk, d, index))
            cols.append(f"{ms * 1e3:9.1f} {flops / ms / 1e9:8.1f}")
            del a, index, w_nk, d
        else:
            cols.append(f"{'n/a':>9} {'':>8}")
        print(f"{name:<14} {experts:4d} {rows:6d} {n:5d} {k:5d} {' '.join(cols)}", flush=True)
        del x
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

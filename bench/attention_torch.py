"""torch 2.11 SDPA (flash backend = FlashAttention-2, and cuDNN) on the rows of
bench/attention_forward.cpp, in the same convention (bf16 forward, median of CUDA-event-timed
runs, TFLOP/s = 4 B H S^2 D / t, halved when causal). Run in the same device call as kjit's.
The forward also times FlashAttention-3 (fa3-fwd, the Hopper kernel of the FlashAttention
authors, bf16 only) where it is installed (../shared/peers-kit: .peers/fa3 on PYTHONPATH).
--backward: the rows of bench/attention_backward.cpp: the backward alone (2.5 x the forward's
FLOPs) and forward + backward (3.5 x). --fp16: the forward's rows in fp16 (FA3 takes bf16 only).
The forward ends with the card's dense GEMM peak in the same dtype (the rows' floor)."""

import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from torch_timing import median_ms

BACKWARD = "--backward" in sys.argv
DTYPE = torch.float16 if "--fp16" in sys.argv else torch.bfloat16
try:
    import fa3_fwd_config

    sys.modules.setdefault("flash_attn_config", fa3_fwd_config)  # the interface's import name
    from fa3_fwd_interface import flash_attn_func as fa3_func
    from fa3_fwd_interface import flash_attn_varlen_func as fa3_varlen_func
except ImportError:
    fa3_func = fa3_varlen_func = None
TIME_FA3 = fa3_func is not None and not BACKWARD and DTYPE == torch.bfloat16


def fa3_column(ms_of):
    """FA3's TFLOP/s through ms_of(); nothing where it is not installed, on the backward or in
    fp16."""
    if not TIME_FA3:
        return ""
    return f" {ms_of():8.1f}"


def row(name, b, s, hq, hk, d, causal):
    grad = BACKWARD
    q = torch.randn(b, hq, s, d, device="cuda", dtype=DTYPE, requires_grad=grad)
    k = torch.randn(b, hk, s, d, device="cuda", dtype=DTYPE, requires_grad=grad)
    v = torch.randn(b, hk, s, d, device="cuda", dtype=DTYPE, requires_grad=grad)
    flops = 4 * b * hq * s * s * d / (2 if causal else 1)
    out = []
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION):
        try:
            with sdpa_kernel(backend):
                attend = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=hq != hk)
                if not BACKWARD:
                    ms = median_ms(attend)
                    out.append(f"{flops / ms / 1e9:8.1f}")
                    continue
                o = attend()
                do = torch.randn_like(o)
                ms = median_ms(lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True))
                both = median_ms(lambda: torch.autograd.grad(attend(), (q, k, v), do))
                out.append(f"{2.5 * flops / ms / 1e9:8.1f} {3.5 * flops / both / 1e9:8.1f}")
        except RuntimeError as e:  # a backend may refuse a shape
            out.append(f"{'n/a':>8}" + (f" {'n/a':>8}" if BACKWARD else ""))
    mask = "causal" if causal else "full"
    # FA3 takes [B, S, H, D]: contiguous copies, made before its timing starts.
    qs, ks, vs = (x.detach().transpose(1, 2).contiguous() for x in (q, k, v))
    fa3 = fa3_column(lambda: flops / median_ms(lambda: fa3_func(qs, ks, vs, causal=causal)) / 1e9)
    print(f"{name:<28} {b:3d} {s:6d} {hq:4d}/{hk:<3d} {d:4d} {mask:<7} {out[0]} {out[1]}{fa3}", flush=True)


what = "backward (bwd, fwd+bwd)" if BACKWARD else "forward"
dtype_name = "bf16" if DTYPE == torch.bfloat16 else "fp16"
print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {dtype_name} {what}, TFLOP/s")
cols = f"{'FA2':>8} {'FA2 f+b':>8} {'cuDNN':>8} {'cuDNN f+b':>9}" if BACKWARD else f"{'FA2':>8} {'cuDNN':>8}"
if TIME_FA3:
    cols += f" {'FA3':>8}"
print(f"{'row':<28} {'B':>3} {'S':>6} {'Hq/Hk':>8} {'D':>4} {'mask':<7} {cols}")
for d in (64, 128, 256):
    for s in (2048, 8192, 16384):
        for causal in (False, True):
            row("fa-bench", 16384 // s, s, 2048 // d, 2048 // d, d, causal)
if BACKWARD:  # kjit_bench_attention_backward's Llama 3 8B row at one sequence (a 4-wave grid)
    row("gqa 32/8", 1, 8192, 32, 8, 128, True)
row("gqa 32/8", 2, 8192, 32, 8, 128, True)


def varlen_row():
    """16 sequences of 256..1792 tokens (kjit's varlen row), hd 128, 16 heads, causal, through
    aten._flash_attention_forward (FlashAttention-2's varlen entry)."""
    lens = [256 + ((i * 7) % 16) * 96 for i in range(16)]
    cu = torch.tensor([0] + lens, device="cuda", dtype=torch.int32).cumsum(0, dtype=torch.int32)
    t, h, d = sum(lens), 16, 128
    q, k, v = (torch.randn(t, h, d, device="cuda", dtype=DTYPE) for _ in range(3))
    ms = median_ms(
        lambda: torch.ops.aten._flash_attention_forward(q, k, v, cu, cu, max(lens), max(lens), 0.0, True, False)
    )
    flops = sum(4 * h * n * n * d / 2 for n in lens)
    fa3 = fa3_column(
        lambda: flops / median_ms(lambda: fa3_varlen_func(q, k, v, cu, cu, max(lens), max(lens), causal=True)) / 1e9
    )
    print(
        f"{'varlen 16 x 256..1792':<28} {16:3d} {t:6d} {h:4d}/{h:<3d} {d:4d} {'causal':<7} "
        f"{flops / ms / 1e9:8.1f} {'n/a':>8}{fa3}",
        flush=True,
    )


if not BACKWARD:  # (the varlen backward entry is not timed here)
    varlen_row()
    # The dense GEMM peak of this card in this dtype (cuBLAS, 8k cubed): the floor that
    # scripts/fa_table.py measures each row's fraction against.
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=DTYPE) for _ in range(2))
    print(f"gemm peak {2 * 8192**3 / median_ms(lambda: a @ b) / 1e9:.1f} TFLOP/s", flush=True)

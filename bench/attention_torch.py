"""torch 2.11 SDPA (flash backend = FlashAttention-2, and cuDNN) on the rows of
bench/attention_forward.cpp, in the same convention (bf16 forward, median of CUDA-event-timed
runs, TFLOP/s = 4 B H S^2 D / t, halved when causal). Run in the same device call as kjit's."""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def median_ms(fn, warm=3, reps=15):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def row(name, b, s, hq, hk, d, causal):
    q = torch.randn(b, hq, s, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(b, hk, s, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(b, hk, s, d, device="cuda", dtype=torch.bfloat16)
    flops = 4 * b * hq * s * s * d / (2 if causal else 1)
    out = []
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION):
        try:
            with sdpa_kernel(backend):
                ms = median_ms(lambda: F.scaled_dot_product_attention(
                    q, k, v, is_causal=causal, enable_gqa=hq != hk))
            out.append(f"{flops / ms / 1e9:8.1f}")
        except RuntimeError as e:  # a backend may refuse a shape
            out.append(f"{'n/a':>8}")
    mask = "causal" if causal else "full"
    print(f"{name:<28} {b:3d} {s:6d} {hq:4d}/{hk:<3d} {d:4d} {mask:<7} {out[0]} {out[1]}", flush=True)


print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, bf16 forward, TFLOP/s")
print(f"{'row':<28} {'B':>3} {'S':>6} {'Hq/Hk':>8} {'D':>4} {'mask':<7} {'FA2':>8} {'cuDNN':>8}")
for d in (64, 128, 256):
    for s in (2048, 8192, 16384):
        for causal in (False, True):
            row("fa-bench", 16384 // s, s, 2048 // d, 2048 // d, d, causal)
row("gqa 32/8", 2, 8192, 32, 8, 128, True)


def varlen_row():
    """16 sequences of 256..1792 tokens (kjit's varlen row), hd 128, 16 heads, causal, through
    aten._flash_attention_forward (FlashAttention-2's varlen entry)."""
    lens = [256 + ((i * 7) % 16) * 96 for i in range(16)]
    cu = torch.tensor([0] + lens, device="cuda", dtype=torch.int32).cumsum(0, dtype=torch.int32)
    t, h, d = sum(lens), 16, 128
    q, k, v = (torch.randn(t, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ms = median_ms(lambda: torch.ops.aten._flash_attention_forward(
        q, k, v, cu, cu, max(lens), max(lens), 0.0, True, False))
    flops = sum(4 * h * n * n * d / 2 for n in lens)
    print(f"{'varlen 16 x 256..1792':<28} {16:3d} {t:6d} {h:4d}/{h:<3d} {d:4d} {'causal':<7} "
          f"{flops / ms / 1e9:8.1f} {'n/a':>8}", flush=True)


varlen_row()

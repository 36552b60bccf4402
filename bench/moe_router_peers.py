"""The torch composition and sgl-kernel (topk_sigmoid, topk_softmax, moe_align_block_size) on the
routers and shapes of bench/moe_router.cpp, in its convention: fp32 logits N(0, 1), us per call as
a CUDA graph's replay of 20 calls (median of 15). GLM-4.7-Flash's router (sigmoid with a
correction bias, top 4 of 64, renormalised, x1.8: sgl-kernel's topk_sigmoid with the bias and
renormalisation, then the x1.8 in torch, which kjit fuses), DeepSeek-V3's grouped router (8
groups, best 4, top 8 of 256: torch only, sgl-kernel 0.4.6 has no grouped top-k kernel) and a
softmax top 8 of 256. Align: sgl-kernel's moe_align_block_size (block 128, its num_experts + 1
convention), and torch's sort, counts and padded offsets. Run in the same device call as
kjit_bench_moe_router, with sgl-kernel on PYTHONPATH (its columns are n/a without it)."""
import math

import torch

from torch_timing import graph_of, median_ms, peer

CALLS, BLOCK = 20, 128


def per_call_us(fn):
    def calls():
        for _ in range(CALLS):
            fn()
    graph = graph_of(calls)
    return median_ms(graph.replay) / CALLS * 1e3


def glm_router(logits, bias, k=4, scaling=1.8):
    scores = torch.sigmoid(logits)
    ids = torch.topk(scores + bias, k, dim=-1).indices
    weights = scores.gather(-1, ids)
    return ids, weights / weights.sum(-1, keepdim=True) * scaling


def deepseek_router(logits, bias, k=8, groups=8, topk_groups=4, scaling=2.5):
    scores = torch.sigmoid(logits)
    choice = scores + bias
    t, e = choice.shape
    group_scores = choice.view(t, groups, e // groups).topk(2, dim=-1).values.sum(-1)
    group_ids = torch.topk(group_scores, topk_groups, dim=-1).indices
    mask = torch.zeros_like(group_scores).scatter_(1, group_ids, 1.0)
    mask = mask.unsqueeze(-1).expand(t, groups, e // groups).reshape(t, e)
    ids = torch.topk(choice.masked_fill(mask == 0, float("-inf")), k, dim=-1).indices
    weights = scores.gather(-1, ids)
    return ids, weights / weights.sum(-1, keepdim=True) * scaling


def softmax_router(logits, k=8):
    weights, ids = torch.topk(torch.softmax(logits, -1), k, dim=-1)
    return ids, weights


def torch_align(ids, experts):
    flat = ids.flatten()
    order = torch.argsort(flat, stable=True)
    counts = torch.zeros(experts, dtype=torch.int64, device=flat.device).scatter_add_(
        0, flat.long(), torch.ones_like(flat, dtype=torch.int64))
    padded = (counts + BLOCK - 1) // BLOCK * BLOCK
    return order, torch.cumsum(padded, 0)


def main():
    sgl_kernel = peer("sgl_kernel", "sgl-kernel")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, MoE routing, us per call "
          f"(graph replays), align block {BLOCK}", flush=True)
    print(f"{'router':<12} {'T':>6} {'torch':>9} {'sgl-kernel':>11} {'torch align':>12} "
          f"{'sgl align':>10}", flush=True)
    gen = torch.Generator(device="cuda").manual_seed(5)
    routers = [("glm-4.7", 64, 4, glm_router, True), ("deepseek-v3", 256, 8, deepseek_router, True),
               ("softmax-256", 256, 8, softmax_router, False)]
    for name, experts, k, router, biased in routers:
        bias = 0.1 * torch.randn(experts, device="cuda", generator=gen)
        for t in (1, 16, 256, 4096, 16384):
            logits = torch.randn(t, experts, device="cuda", generator=gen)
            torch_us = per_call_us(
                (lambda: router(logits, bias)) if biased else (lambda: router(logits)))
            ids = router(logits, bias)[0] if biased else router(logits)[0]
            ids32 = ids.to(torch.int32).contiguous()
            align_us = per_call_us(lambda: torch_align(ids32, experts))
            sgl_us = sgl_align_us = "n/a"
            if sgl_kernel is not None:
                w = torch.empty(t, k, device="cuda")
                out_ids = torch.empty(t, k, device="cuda", dtype=torch.int32)
                if name == "glm-4.7":
                    def sgl_router():
                        sgl_kernel.topk_sigmoid(w, out_ids, logits, True, bias)
                        w.mul_(1.8)
                    sgl_us = f"{per_call_us(sgl_router):11.2f}"
                elif name == "softmax-256":
                    sgl_us = f"{per_call_us(lambda: sgl_kernel.topk_softmax(w, out_ids, logits)):11.2f}"
                max_pad = t * k + (experts + 1) * (BLOCK - 1)
                sorted_ids = torch.empty(max_pad, device="cuda", dtype=torch.int32)
                expert_ids = torch.empty(math.ceil(max_pad / BLOCK), device="cuda",
                                         dtype=torch.int32)
                npad = torch.empty(1, device="cuda", dtype=torch.int32)
                cumsum = torch.zeros(experts + 2, device="cuda", dtype=torch.int32)
                sgl_align_us = f"{per_call_us(lambda: sgl_kernel.moe_align_block_size(ids32, experts + 1, BLOCK, sorted_ids, expert_ids, npad, cumsum, True)):10.2f}"
            print(f"{name:<12} {t:6d} {torch_us:9.2f} {sgl_us:>11} {align_us:12.2f} "
                  f"{sgl_align_us:>10}", flush=True)


if __name__ == "__main__":
    main()

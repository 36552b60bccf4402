"""The torch composition of bench/moe_layer.cpp's layer (GLM-4.7-Flash: hidden 2048, 64 experts,
top 4 of a sigmoid router with a correction bias, renormalised, x1.8, intermediate 1536, bf16, the
shared expert's output added) on the same T: the router in torch ops, the routed pairs sorted by
expert, torch._grouped_mm for the gate/up and down projections, SwiGLU, the weighted sum back per
token with index_add_. us per call = the median of 15 CUDA-event-timed runs of 20 back-to-back
calls, and as a CUDA graph of them where torch can capture it."""
import torch
import torch.nn.functional as F

from torch_timing import median_ms

H, E, K, I, CALLS = 2048, 64, 4, 1536, 20


def layer(x, logits, bias, w_gate_up, w_down, shared):
    scores = torch.sigmoid(logits)
    ids = torch.topk(scores + bias, K, dim=-1).indices
    weights = scores.gather(-1, ids)
    weights = weights / (weights.sum(-1, keepdim=True) + 1e-20) * 1.8
    flat = ids.flatten()
    order = torch.argsort(flat, stable=True)
    # bincount would synchronise (it sizes its output on the host): a scatter of ones does not.
    counts = torch.zeros(E, dtype=torch.int64, device=flat.device).scatter_add_(
        0, flat, torch.ones_like(flat))
    offs = torch.cumsum(counts, 0).to(torch.int32)
    tokens = order // K
    xs = x.index_select(0, tokens)
    gate_up = torch._grouped_mm(xs, w_gate_up, offs=offs)  # [T k, 2 I]
    gate, up = gate_up.chunk(2, dim=-1)
    hidden = F.silu(gate) * up
    y = torch._grouped_mm(hidden, w_down, offs=offs)  # [T k, H]
    y = y * weights.flatten()[order, None].to(y.dtype)
    out = shared.clone()
    out.index_add_(0, tokens, y)
    return out


def main():
    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, MoE layer torch "
          f"composition (torch._grouped_mm), us per call", flush=True)
    print(f"{'T':>6} {'eager us':>10} {'graph us':>10}", flush=True)
    w_gate_up = torch.randn(E, H, 2 * I, device="cuda", dtype=torch.bfloat16) / H ** 0.5
    w_down = torch.randn(E, I, H, device="cuda", dtype=torch.bfloat16) / I ** 0.5
    bias = torch.zeros(E, device="cuda")
    for t in (1, 16, 256, 4096, 16384):
        x = torch.randn(t, H, device="cuda", dtype=torch.bfloat16)
        shared = torch.randn(t, H, device="cuda", dtype=torch.bfloat16)
        # bench/moe_layer.cpp's logits, bit for bit: the same routing, the same experts read.
        index = torch.arange(t * E, device="cuda", dtype=torch.int64)
        logits = (((index * 2654435761) % 1048573).float() / 524286.5 - 1.0).view(t, E)

        def calls():
            for _ in range(CALLS):
                layer(x, logits, bias, w_gate_up, w_down, shared)

        eager = median_ms(calls) / CALLS
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                calls()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                calls()
            graphed = f"{median_ms(graph.replay) / CALLS * 1e3:10.1f}"
        except RuntimeError as e:  # bincount and friends synchronise: not capturable
            graphed = f"{'n/a':>10}"
            print(f"  (graph capture failed: {str(e)[:80]})", flush=True)
        print(f"{t:6d} {eager * 1e3:10.1f} {graphed}", flush=True)


if __name__ == "__main__":
    main()

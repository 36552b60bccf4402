"""The timing the torch-side benchmarks share (bench/attention_torch.py, bench/mla_decode_peers.py,
bench/moe_router_peers.py), in the C++ benchmarks' convention: warm-ups, then the median of
CUDA-event-timed runs; graph_of captures a call as a CUDA graph to time its replays; peer imports
a peer library where it is installed."""
import importlib

import torch


def peer(module, label):
    """The peer's module, or None (said once: its columns are n/a) where it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        print(f"{label} not importable ({e}): its columns are n/a", flush=True)
        return None


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


def graph_of(fn):
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()  # warm: the wrapper's first-call work stays outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph

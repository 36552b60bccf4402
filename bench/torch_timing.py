"""The timing the torch-side benchmarks share (bench/attention_torch.py, bench/mla_decode_peers.py),
in the C++ benchmarks' convention: warm-ups, then the median of CUDA-event-timed runs."""
import torch


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

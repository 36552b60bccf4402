"""Host cost of the Python package's calls against the C++ API's on the same ops and shapes
(bench/op_call_overhead.cpp, run here as a subprocess): the function as a user calls it
(kjit.attention.forward, ...: eager, so straight to the implementation: output allocation,
DLTensors, the C ABI), the same op through torch's dispatcher (torch.ops.kjit.*, as under
torch.compile or a dispatch mode), and the binding's floor (the C ABI call through kjit._native
over preallocated outputs: the function without its outputs' allocation). Calls are issued back
to back and timed on the host, few enough that the launch queue absorbs them; median of 21
rounds, and the fastest round (the one the machine's other work disturbed least: the C++ and the
out= call's fastest are compared too). The C++ side runs before and after the Python side, and
the lower of its two figures is the one compared. Both sides launch on a created non-blocking
stream (the C++ side's kjit::Stream, here torch.cuda.Stream made current). Goal (issue 18): the
function within 5 us of the C++ call.

    python3 bench/python_overhead.py PATH/TO/kjit_bench_op_call_overhead
"""

import statistics
import subprocess
import sys
import time

import torch

import kjit
from kjit import _native
from kjit._launch import _QUERIES, empty_like, host_copy
from kjit._library import call

ROUNDS = 21


def host_us(fn, calls):
    fn()
    torch.cuda.synchronize()
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        stop = time.perf_counter()
        torch.cuda.synchronize()
        rounds.append((stop - start) / calls * 1e6)
    return statistics.median(rounds), min(rounds)


def floor(name, *args):
    """The C ABI call through kjit._native on the current stream, over the op's tensors and
    preallocated outputs."""
    stream = torch.cuda.current_stream().cuda_stream
    return lambda: call(name, *args, stream)


def cases():
    """(op, calls per round, the function, the function with its outputs given (out=: as the C++
    call, which allocates nothing), torch.ops.kjit's op, the binding's floor):
    bench/op_call_overhead.cpp's."""
    bf16, dev = torch.bfloat16, "cuda"
    q, k, v = (torch.randn(1, 128, 8, 64, dtype=bf16, device=dev) for _ in range(3))
    out, lse = torch.empty_like(q), torch.empty(1, 8, 128, device=dev)
    yield (
        "attention_forward",
        256,
        lambda: kjit.attention.forward(q, k, v, causal=True),
        lambda: kjit.attention.forward(q, k, v, causal=True, out=out, lse=lse),
        lambda: torch.ops.kjit.attention_forward(q, k, v, 0.0, True, False),
        floor("kjit_attention_forward", q, k, v, out, lse, 0.0, 1),
    )

    parts, parts_lse = torch.randn(2, 16, 8, 128, dtype=bf16, device=dev), torch.zeros(2, 16, 8, device=dev)
    merged, merged_lse = torch.empty(16, 8, 128, dtype=bf16, device=dev), torch.empty(16, 8, device=dev)
    yield (
        "merge_states",
        256,
        lambda: kjit.attention.merge_states(parts, parts_lse),
        lambda: kjit.attention.merge_states(parts, parts_lse, out=merged, out_lse=merged_lse),
        lambda: torch.ops.kjit.merge_states(parts, parts_lse),
        floor("kjit_merge_states", parts, parts_lse, merged, merged_lse),
    )

    mq, cache = torch.randn(1, 1, 16, 576, dtype=bf16, device=dev), torch.randn(4, 64, 576, dtype=bf16, device=dev)
    host_table, host_lengths = torch.tensor([[2, 0, 3, 1]], dtype=torch.int32), torch.tensor([200], dtype=torch.int32)
    table, lengths = host_table.to(dev), host_lengths.to(dev)
    mout, mlse = torch.empty(1, 1, 16, 512, dtype=bf16, device=dev), torch.empty(1, 1, 16, device=dev)
    yield (
        "mla_decode",
        256,
        lambda: kjit.mla.decode(mq, cache, table, lengths, host_table, host_lengths, 0.0625),
        lambda: kjit.mla.decode(mq, cache, table, lengths, host_table, host_lengths, 0.0625, out=mout, lse=mlse),
        lambda: torch.ops.kjit.mla_decode(mq, cache, table, lengths, host_table, host_lengths, 0.0625),
        floor(
            "kjit_mla_decode",
            mq,
            cache,
            table,
            host_table.data_ptr(),
            lengths,
            host_lengths.data_ptr(),
            mout,
            mlse,
            0.0625,
        ),
    )

    logits = torch.full((4, 64), 0.0115, device=dev)
    ids, weights = torch.empty(4, 4, dtype=torch.int32, device=dev), torch.empty(4, 4, device=dev)
    glm = kjit.moe.GLM_4_7_FLASH
    options = glm.c_options()
    yield (
        "moe_router_topk",
        256,
        lambda: kjit.moe.router_topk(logits, glm),
        lambda: kjit.moe.router_topk(logits, glm, out=(ids, weights)),
        lambda: torch.ops.kjit.moe_router_topk(logits, None, 4, True, 1, 1, True, 1.8),
        floor("kjit_moe_router_topk", logits, None, ids, weights, options),
    )

    x, token_logits = torch.randn(1, 2048, dtype=bf16, device=dev), logits[:1]
    gate_up = torch.randn(64, 3072, 2048, dtype=bf16, device=dev)
    down = torch.randn(64, 2048, 1536, dtype=bf16, device=dev)
    y = torch.empty_like(x)
    yield (
        "moe_layer",
        32,
        lambda: kjit.moe.layer(x, token_logits, gate_up, down, glm),
        lambda: kjit.moe.layer(x, token_logits, gate_up, down, glm, out=y),
        lambda: torch.ops.kjit.moe_layer(x, token_logits, gate_up, down, None, None, 4, True, 1, 1, True, 1.8, 0),
        floor(
            "kjit_moe_layer",
            x,
            token_logits,
            gate_up,
            down,
            None,
            None,
            options,
            0,
            y,
        ),
    )


def pieces():
    """The host cost of each piece an op's Python body is made of (no device work): where the
    microseconds above the C++ call go."""
    t = torch.randn(1, 128, 8, 64, dtype=torch.bfloat16, device="cuda")
    index = t.get_device()
    host, device_copy = torch.zeros(4, dtype=torch.int32), torch.zeros(4, dtype=torch.int32, device="cuda")
    yield "torch.cuda.current_stream().cuda_stream", lambda: torch.cuda.current_stream().cuda_stream
    yield "torch._C._cuda_getCurrentRawStream", lambda: torch._C._cuda_getCurrentRawStream(index)
    yield "torch.cuda.current_device()", torch.cuda.current_device
    yield "tensor.device.index", lambda: t.device.index
    yield "torch.empty_like (CUDA)", lambda: torch.empty_like(t)
    yield "torch.empty (CUDA, [1, 8, 128] fp32)", lambda: torch.empty(1, 8, 128, device="cuda")
    yield "kjit._launch.empty_like (CUDA, contiguous)", lambda: empty_like(t)
    yield "t.new_empty (CUDA)", lambda: t.new_empty(t.shape)
    yield "the direct path's check over 3 tensors", lambda: _native.direct(_QUERIES, torch.is_grad_enabled, (t, t, t))
    yield "an entry point through kjit._native (no tensor)", lambda: call("kjit_moe_align_capacity", 40, 64, 64)
    yield "kjit._launch.host_copy", lambda: host_copy(host, device_copy, "host")


def main():
    cpp = {}

    def run_cpp():
        """The C++ bench's (median, fastest) per op, the lower of this run's and the ones before
        (it runs before and after the Python side: a host that slows down for seconds at a time
        then slows the C++ side less often than it would one run)."""
        run = subprocess.run([sys.argv[1]], capture_output=True, text=True, check=True)
        for line in run.stdout.splitlines():
            op, median, fastest = line.split()
            before = cpp.get(op, (float("inf"), float("inf")))
            cpp[op] = min(before[0], float(median)), min(before[1], float(fastest))

    if len(sys.argv) > 1:
        run_cpp()
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, kjit {kjit.__version__} from {kjit.__file__}"
        f" ({kjit.library_path()})"
    )
    print("medians of the rounds, us; 'min' columns: the fastest rounds")
    print(
        f"{'op':<20} {'C++':>7} {'C++ min':>8} {'kjit fn':>8} {'- C++':>7} {'fn out=':>8} {'- C++':>7}"
        f" {'min - min':>10} {'torch.ops':>10} {'- C++':>7} {'floor':>7}"
    )
    torch.cuda.set_stream(torch.cuda.Stream())  # as the C++ side's kjit::Stream
    nan = float("nan")
    timed = [(op, [host_us(fn, calls) for fn in functions]) for op, calls, *functions in cases()]
    if len(sys.argv) > 1:
        run_cpp()
    for op, ((ours, _), (given, given_min), (through_torch, _), (base, _)) in timed:
        reference, reference_min = cpp.get(op, (nan, nan))
        print(
            f"{op:<20} {reference:7.2f} {reference_min:8.2f} {ours:8.2f} {ours - reference:7.2f} {given:8.2f}"
            f" {given - reference:7.2f} {given_min - reference_min:10.2f} {through_torch:10.2f}"
            f" {through_torch - reference:7.2f} {base:7.2f}",
            flush=True,
        )
    print(f"{'piece':<44} {'us':>6}")
    for piece, fn in pieces():
        print(f"{piece:<44} {host_us(fn, 256)[0]:6.2f}", flush=True)


if __name__ == "__main__":
    main()

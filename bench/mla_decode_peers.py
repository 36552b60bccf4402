"""FlashMLA (sgl-flash-mla, the dense sm90 decode) and torch SDPA on the rows of
bench/mla_decode.cpp, in the same convention: bf16, s_q 1, 64-token pages shuffled over the cache,
softmax scale 0.0625, every sequence L tokens; us per call = the median of 15 CUDA-event-timed runs
of 20 back-to-back calls. FlashMLA is also timed as a CUDA graph of those 20 calls ("graph"), which
removes the Python wrapper's launch time. GB/s = cache bytes read (B L 1152) / time. torch SDPA
(the absorbed problem as H query heads over one 576-wide key head and its 512-wide value; math or
efficient backend, whichever torch picks) is the floor, on rows up to 64 MB of cache.
Then kjit_bench_mla_decode's three uneven batches at each H (skewed_batches(), the same lengths),
L their longest; FlashMLA's schedule is computed on the first call and reused, as its callers do.
Run in the same device call as kjit_bench_mla_decode, with sgl-flash-mla on PYTHONPATH.
Flags (each repeatable, as kjit_bench_mla_decode's): --only-heads H, --only-batch B, --only-length L
(the uneven batches run when no batch or length is named); --only-uneven: the uneven batches alone."""
import sys

import torch
import torch.nn.functional as F

from torch_timing import graph_of, median_ms, peer

DK, DV, PAGE, CALLS = 576, 512, 64, 20
SCALE = 0.0625


def skewed_batches():
    """bench/mla_decode.cpp's uneven batches, by the same integer formulas."""
    return [("1x64k+7x1k", [65536] + [1024] * 7),
            ("32x512..32k", [512 + (32768 - 512) * i * i // (31 * 31) for i in range(32)]),
            ("32x256+32x16k", [256 if i % 2 == 0 else 16384 for i in range(64)])]


def main():
    def only(flag):  # the values of a repeatable flag, as kjit_bench_mla_decode's
        return [int(sys.argv[i + 1]) for i, a in enumerate(sys.argv) if a == flag]

    only_heads, only_batch, only_length = only("--only-heads"), only("--only-batch"), only("--only-length")
    only_uneven = "--only-uneven" in sys.argv
    flash_mla = peer("flash_mla", "FlashMLA")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, MLA decode bf16 s_q 1 "
          f"block {PAGE}, us per call", flush=True)
    print(f"{'H':>4} {'B':>4} {'L':>6} {'flashmla':>9} {'GB/s':>6} {'graph':>9} {'GB/s':>6} "
          f"{'sdpa':>9}", flush=True)
    gen = torch.Generator(device="cuda").manual_seed(11)

    def run_row(heads, lengths, name):
        b, longest = len(lengths), max(lengths)
        pages = [(n + PAGE - 1) // PAGE for n in lengths]
        max_blocks, num_blocks = max(pages), sum(pages)
        q = torch.randn(b, 1, heads, DK, device="cuda", dtype=torch.bfloat16, generator=gen)
        kv = torch.full((num_blocks, PAGE, 1, DK), 0.0115, device="cuda", dtype=torch.bfloat16)
        shuffled = torch.randperm(num_blocks, device="cuda", generator=gen, dtype=torch.int32)
        table = torch.zeros(b, max_blocks, device="cuda", dtype=torch.int32)
        first = 0
        for r, n in enumerate(pages):
            table[r, :n] = shuffled[first:first + n]
            first += n
        dlengths = torch.tensor(lengths, device="cuda", dtype=torch.int32)
        cache_bytes = sum(lengths) * DK * 2
        cols = []
        if flash_mla is not None:
            sched, _ = flash_mla.get_mla_metadata()

            def calls():
                for _ in range(CALLS):
                    flash_mla.flash_mla_with_kvcache(q, kv, table, dlengths, DV, sched,
                                                     softmax_scale=SCALE, causal=True,
                                                     use_legacy=True)

            ms = median_ms(calls) / CALLS
            graph = graph_of(calls)
            graph_ms = median_ms(graph.replay) / CALLS
            cols += [f"{ms * 1e3:9.2f} {cache_bytes / ms / 1e6:6.0f}",
                     f"{graph_ms * 1e3:9.2f} {cache_bytes / graph_ms / 1e6:6.0f}"]
            del graph
        else:
            cols += [f"{'n/a':>9} {'':>6}", f"{'n/a':>9} {'':>6}"]
        if cache_bytes <= 64 << 20 and len(set(lengths)) == 1:
            k = kv.view(b, max_blocks * PAGE, DK).unsqueeze(1)  # contiguous per sequence
            qs = q.transpose(1, 2)  # [B, H, 1, 576]
            sdpa = lambda: F.scaled_dot_product_attention(  # noqa: E731
                qs, k, k[..., :DV], scale=SCALE, enable_gqa=True)
            cols.append(f"{median_ms(sdpa) * 1e3:9.2f}")
        else:
            cols.append(f"{'-':>9}")
        print(f"{heads:4d} {b:4d} {longest:6d} {' '.join(cols)}{' ' + name if name else ''}",
              flush=True)
        del q, kv, table, dlengths
        torch.cuda.empty_cache()

    for heads in (20, 64, 128):
        if only_heads and heads not in only_heads:
            continue
        for b in (1, 8, 32, 64, 128):
            if only_uneven or only_batch and b not in only_batch:
                continue
            for length in (1024, 4096, 16384, 65536):
                if only_length and length not in only_length:
                    continue
                run_row(heads, [length] * b, "")
        if not only_batch and not only_length:
            for name, lengths in skewed_batches():
                run_row(heads, lengths, name)


if __name__ == "__main__":
    main()

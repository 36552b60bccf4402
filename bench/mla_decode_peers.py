"""FlashMLA (sgl-flash-mla, the dense sm90 decode) and torch SDPA on the rows of
bench/mla_decode.cpp, in the same convention: bf16, s_q 1, 64-token pages shuffled over the cache,
softmax scale 0.0625, every sequence L tokens; us per call = the median of 15 CUDA-event-timed runs
of 20 back-to-back calls. FlashMLA is also timed as a CUDA graph of those 20 calls ("graph"), which
removes the Python wrapper's launch time. GB/s = cache bytes read (B L 1152) / time. torch SDPA
(the absorbed problem as H query heads over one 576-wide key head and its 512-wide value; math or
efficient backend, whichever torch picks) is the floor, on rows up to 64 MB of cache.
Run in the same device call as kjit_bench_mla_decode, with sgl-flash-mla on PYTHONPATH.
Flags (each repeatable, as kjit_bench_mla_decode's): --only-heads H, --only-batch B, --only-length L."""
import sys

import torch
import torch.nn.functional as F

from torch_timing import graph_of, median_ms, peer

DK, DV, PAGE, CALLS = 576, 512, 64, 20
SCALE = 0.0625


def main():
    def only(flag):  # the values of a repeatable flag, as kjit_bench_mla_decode's
        return [int(sys.argv[i + 1]) for i, a in enumerate(sys.argv) if a == flag]

    only_heads, only_batch, only_length = only("--only-heads"), only("--only-batch"), only("--only-length")
    flash_mla = peer("flash_mla", "FlashMLA")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, MLA decode bf16 s_q 1 "
          f"block {PAGE}, us per call", flush=True)
    print(f"{'H':>4} {'B':>4} {'L':>6} {'flashmla':>9} {'GB/s':>6} {'graph':>9} {'GB/s':>6} "
          f"{'sdpa':>9}", flush=True)
    gen = torch.Generator(device="cuda").manual_seed(11)
    for heads in (20, 64, 128):
        if only_heads and heads not in only_heads:
            continue
        for b in (1, 8, 32, 64, 128):
            if only_batch and b not in only_batch:
                continue
            for length in (1024, 4096, 16384, 65536):
                if only_length and length not in only_length:
                    continue
                blocks = length // PAGE
                q = torch.randn(b, 1, heads, DK, device="cuda", dtype=torch.bfloat16,
                                generator=gen)
                kv = torch.full((b * blocks, PAGE, 1, DK), 0.0115, device="cuda",
                                dtype=torch.bfloat16)
                table = torch.randperm(b * blocks, device="cuda", generator=gen,
                                       dtype=torch.int32).view(b, blocks)
                lengths = torch.full((b,), length, device="cuda", dtype=torch.int32)
                cache_bytes = b * length * DK * 2
                cols = []
                if flash_mla is not None:
                    sched, _ = flash_mla.get_mla_metadata()

                    def calls():
                        for _ in range(CALLS):
                            flash_mla.flash_mla_with_kvcache(q, kv, table, lengths, DV, sched,
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
                if cache_bytes <= 64 << 20:
                    k = kv.view(b, blocks * PAGE, DK).unsqueeze(1)  # contiguous per sequence
                    qs = q.transpose(1, 2)  # [B, H, 1, 576]
                    sdpa = lambda: F.scaled_dot_product_attention(  # noqa: E731
                        qs, k, k[..., :DV], scale=SCALE, enable_gqa=True)
                    cols.append(f"{median_ms(sdpa) * 1e3:9.2f}")
                else:
                    cols.append(f"{'-':>9}")
                print(f"{heads:4d} {b:4d} {length:6d} {' '.join(cols)}", flush=True)
                del q, kv, table, lengths
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()

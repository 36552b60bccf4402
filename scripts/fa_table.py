#!/usr/bin/env python3
"""The FA table of docs/perf.md from one `scripts/gpu-suite.sh attention-bench` output: kjit's
rows beside FA2, cuDNN and FA3 (bench/attention_torch.py, same call), bf16 then fp16, with the
ratios the forward's bar is stated in and each row's fraction of its floor. Where the output
holds several rounds (kjit and torch alternating), each row takes each column's best round.

Floor of a row (METHOD.md): its GEMM FLOPs at the card's measured dense GEMM peak (the torch
log's `gemm peak` line) or its exponentials (one a score: FLOPs / 4 D) at 16 a clock per SM,
whichever is longer; kjit's fraction = floor time / kjit's time, i.e. its TFLOP/s over the
slower of the two rates.

  python3 scripts/fa_table.py OUTPUT [--sms 132 --clock-ghz 1.98]"""
import argparse
import re

# A row of the benchmarks: name, B, S, Hq/Hk, D, mask, then its numbers.
ROW = re.compile(r"(\S.*?)\s+(\d+)\s+(\d+)\s+(\d+)/(\d+)\s+(\d+)\s+(full|causal)\s+(.*)")


def sections(path):
    """{section name: its lines} for the `== name` headers gpu-suite.sh prints before each log; a
    name met again (a later round) adds its lines to the first."""
    out, name = {}, None
    for line in open(path, errors="replace"):
        if line.startswith("== "):
            name = line[3:].strip()
            out.setdefault(name, [])
        elif name:
            out[name].append(line)
    return out


def number(text):
    return None if text in ("n/a", "-") else float(text)


def rows(lines, timed_in_ms=False):
    """{(row, B, S, Hq, Hk, D, mask): the numbers after the mask column}, each the best of the
    rounds (the highest TFLOP/s; kjit's rows are `ms TFLOP/s`: timed_in_ms, whose ms goes with
    its TFLOP/s)."""
    best = {}
    for m in filter(None, map(ROW.match, lines)):
        key, numbers = m.groups()[:7], [number(x) for x in m.group(8).split()]
        if key not in best:
            best[key] = numbers
        elif timed_in_ms:
            best[key] = max(best[key], numbers, key=lambda n: n[1])
        else:  # the peers' columns, each at its best
            best[key] = [max(filter(None, pair), default=None) for pair in zip(best[key], numbers)]
    return best


def gemm_peak(lines):
    peaks = [float(m.group(1)) for m in (re.match(r"gemm peak ([\d.]+)", line) for line in lines) if m]
    return max(peaks, default=None)


def label(key):
    name, b, s, hq, hk, d, mask = key
    if name == "fa-bench":
        return f"hd {d} S {int(s) // 1024}k {mask}"
    if name.startswith("gqa"):
        return f"GQA {hq}/{hk} hd {d} S {int(s) // 1024}k B {b} {mask}"
    return f"{name} hd {d} {mask}"


def floor_tflops(key, peak, exp_per_s):
    """The rate (TFLOP/s of the row's convention) its floor runs at: the GEMM peak, or the
    exponentials' rate in GEMM FLOPs (4 D a score) where that is slower."""
    return min(peak, 4 * int(key[5]) * exp_per_s / 1e12)


def table(kjit, torch, sms, clock_ghz):
    peak = gemm_peak(torch)
    torch_rows = rows(torch)
    print(f"GEMM peak {peak} TFLOP/s; exponentials {16 * sms} a clock at {clock_ghz} GHz\n")
    print("| row | kjit | FA2 | cuDNN | FA3 | / cuDNN | / FA3 | floor |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    misses = {"1.0x cuDNN": [], "0.95x FA3": []}
    for key, (_, tflops) in rows(kjit, timed_in_ms=True).items():
        fa2, cudnn, fa3 = (torch_rows.get(key, []) + [None] * 3)[:3]
        ratio = lambda peer: f"{tflops / peer:.2f}" if peer else ""
        cell = lambda peer: f"{peer:.1f}" if peer else "n/a"
        floor = f"{tflops / floor_tflops(key, peak, 16 * sms * clock_ghz * 1e9):.0%}" if peak else ""
        print(f"| {label(key)} | {tflops:.1f} | {cell(fa2)} | {cell(cudnn)} | {cell(fa3)} | "
              f"{ratio(cudnn)} | {ratio(fa3)} | {floor} |")
        if cudnn and tflops < cudnn:
            misses["1.0x cuDNN"].append(f"{label(key)} ({tflops / cudnn:.3f})")
        if fa3 and tflops < 0.95 * fa3:
            misses["0.95x FA3"].append(f"{label(key)} ({tflops / fa3:.3f})")
    # The bar, row by row (FA3 has bf16 rows only).
    for bar, rows_below in misses.items():
        print(f"\nbelow {bar}: " + ("; ".join(rows_below) if rows_below else "none"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--sms", type=int, default=132)
    parser.add_argument("--clock-ghz", type=float, default=1.98)
    args = parser.parse_args()
    logs = sections(args.output)
    for dtype, suffix in (("bf16", ""), ("fp16", "_fp16")):
        kjit, torch = logs.get("attention_kjit" + suffix), logs.get("attention_torch" + suffix)
        if kjit and torch:
            print(f"\n### {dtype}\n")
            table(kjit, torch, args.sms, args.clock_ghz)


if __name__ == "__main__":
    main()

"""The SASS lines of an ncu source page (`ncu --import R --page source --csv --print-source sass`)
with the most warp-stall samples, and each line's largest stall reasons: where a kernel's warps
wait. Usage: python3 scripts/ncu_top_stalls.py SOURCE.csv [N]"""
import csv
import sys


def number(text):
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return 0.0


def main():
    path, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    # The header: the first row naming the source column; ncu may print notes before it.
    start = next(i for i, r in enumerate(rows) if "Source" in r)
    header, body = rows[start], rows[start + 1:]
    source = header.index("Source")
    total = next(i for i, h in enumerate(header) if "Stall Sampling (All" in h)
    reasons = [i for i, h in enumerate(header) if h.startswith("stall_") or "Stall " in h]
    reasons = [i for i in reasons if i != total and "Sampling" not in header[i]]
    all_samples = sum(number(r[total]) for r in body if len(r) > total) or 1.0
    print(f"{path}: {len(body)} SASS lines, {all_samples:.0f} stall samples")
    for r in sorted(body, key=lambda r: -number(r[total]) if len(r) > total else 0)[:top]:
        worst = sorted(((number(r[i]), header[i]) for i in reasons if i < len(r)), reverse=True)[:3]
        why = ", ".join(f"{name} {value:.0f}" for value, name in worst if value > 0)
        print(f"{100 * number(r[total]) / all_samples:5.1f}%  {r[source].strip()[:70]:70}  {why}")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""bench/migration/plot.py: the postcopy figures of a bench/migration JSON (--mode postcopy
or hybrid) as two PNGs, for each case's first ferry run that faulted:

  PREFIX-latency-hist.png   the fault -> page-placed latency histogram (log2 buckets, us)
  PREFIX-latency-time.png   each fault's latency against the time since postcopy began
                            (the talk's "userfault latency during postcopy" graph)

Beside ferry's per-fault histogram it draws, for both VMMs, the test guest's own stall
histogram on the destination (the same measure for ferry and QEMU).

Needs matplotlib (Debian: apt install python3-matplotlib; run with /usr/bin/python3).
Usage: bench/migration/plot.py RESULT.json PREFIX
"""
import json
import sys

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("plot.py needs matplotlib: apt install python3-matplotlib, then run it with /usr/bin/python3")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    data = json.load(open(sys.argv[1]))
    prefix = sys.argv[2]
    cases = [c for c in data["cases"] if any(r.get("fault_latency") for r in c["results"].get("ferry", {}).get("runs", []))]
    if not cases:
        sys.exit("no ferry postcopy run with fault figures in this file")

    fig, axes = plt.subplots(len(cases), 2, figsize=(12, 3.2 * len(cases)), squeeze=False)
    for row, case in enumerate(cases):
        run = next(r for r in case["results"]["ferry"]["runs"] if r.get("fault_latency"))
        hist = run["fault_latency"]["histogram-log2-us"]
        ax = axes[row][0]
        ax.bar([f"<{1 << i}" for i in range(len(hist))], hist)
        ax.set_title(f"{case['name']}: ferry fault latency ({sum(hist)} faults)")
        ax.set_xlabel("us (fault -> page placed)")
        ax.tick_params(axis="x", labelrotation=60)
        ax = axes[row][1]
        for kind, r in case["results"].items():
            h = r["runs"][0].get("dst_stall_hist") or {}
            keys = sorted(int(k) for k in h)
            ax.plot([str(k) for k in keys], [h[str(k)] if str(k) in h else h[k] for k in keys], marker="o", label=kind)
        ax.set_yscale("log")
        ax.set_title("guest-perceived stalls on the destination (test guest histogram)")
        ax.set_xlabel(">= us")
        ax.tick_params(axis="x", labelrotation=60)
        ax.legend()
    fig.tight_layout()
    fig.savefig(f"{prefix}-latency-hist.png", dpi=90)

    fig, axes = plt.subplots(len(cases), 1, figsize=(12, 3.2 * len(cases)), squeeze=False)
    for row, case in enumerate(cases):
        run = next(r for r in case["results"]["ferry"]["runs"] if r.get("fault_latency"))
        series = run.get("fault_series") or []
        ax = axes[row][0]
        ax.scatter([s[0] / 1000 for s in series], [s[2] for s in series], s=4)
        ax.set_yscale("log")
        ax.set_title(f"{case['name']}: ferry userfault latency during postcopy")
        ax.set_xlabel("ms since postcopy began")
        ax.set_ylabel("latency us")
    fig.tight_layout()
    fig.savefig(f"{prefix}-latency-time.png", dpi=90)
    print(f"wrote {prefix}-latency-hist.png and {prefix}-latency-time.png")


if __name__ == "__main__":
    main()

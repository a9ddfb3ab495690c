#!/usr/bin/env python3
"""bench/boot: time from process start to `guest: ready`, and the VMM's own RSS
(guest RAM mappings left out), for ferry and for QEMU microvm booting the same test
guest, over several runs. Prints a table and the ratios; writes JSON.

Usage: bench/boot/run.py [--runs N] [--mem MB] [--json PATH]
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import vmm  # noqa: E402


def one_run(argv, mem_mb):
    g = vmm.Guest(argv)
    try:
        ready = g.wait_line(r"^guest: ready$", 120)
        if not ready:
            raise RuntimeError(f"no 'guest: ready' from {argv[0]}: {g.lines[-5:]}")
        time.sleep(0.3)  # let the VMM settle after boot before sampling RSS
        _, own = g.rss_kib(mem_mb * 1024)
        return ready[0] * 1000.0, own
    finally:
        g.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mem", type=int, default=256, help="guest RAM in MiB")
    ap.add_argument("--json", default=os.path.join(vmm.ROOT, "bench", "results", "boot.json"))
    args = ap.parse_args()

    khz = vmm.host_tsc_khz()
    cmdline = f"mode=idle cpus=1 tsc_khz={khz}" if khz else "mode=idle cpus=1"
    vmms = {"ferry": vmm.ferry_cmd(args.mem, cmdline)}
    if os.access(vmm.QEMU, os.X_OK):
        vmms["qemu"] = vmm.qemu_cmd(args.mem, cmdline)
    else:
        print("qemu-system-x86_64 not found: ferry only (scripts/install-deps installs it)")

    results = {}
    for name, argv in vmms.items():
        times, rss = [], []
        for _ in range(args.runs):
            ms, own = one_run(argv, args.mem)
            times.append(ms)
            rss.append(own)
        results[name] = {"ready_ms": times, "ready_ms_median": statistics.median(times),
                         "vmm_rss_kib": rss, "vmm_rss_kib_median": statistics.median(rss)}

    print(f"{'vmm':8} {'ready ms (median)':>18} {'min':>8} {'max':>8} {'own RSS MiB':>12}")
    for name, r in results.items():
        print(f"{name:8} {r['ready_ms_median']:18.1f} {min(r['ready_ms']):8.1f} {max(r['ready_ms']):8.1f} "
              f"{r['vmm_rss_kib_median'] / 1024:12.2f}")
    summary = {"runs": args.runs, "mem_mib": args.mem, "results": results}
    if "qemu" in results:
        speed = results["qemu"]["ready_ms_median"] / results["ferry"]["ready_ms_median"]
        rss_ratio = results["qemu"]["vmm_rss_kib_median"] / results["ferry"]["vmm_rss_kib_median"]
        summary["ferry_speedup_to_ready"] = speed
        summary["qemu_over_ferry_rss"] = rss_ratio
        print(f"ferry reaches 'guest: ready' {speed:.1f}x faster than QEMU microvm (target >= 5x); "
              f"QEMU's own RSS is {rss_ratio:.1f}x ferry's; ferry's own RSS "
              f"{results['ferry']['vmm_rss_kib_median'] / 1024:.2f} MiB (target < 5 MiB)")
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(summary, f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

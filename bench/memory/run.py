#!/usr/bin/env python3
"""bench/memory: what huge pages and preallocation buy a ferry guest.

1. TLB cost: the test guest's `tlb` mode (random 8-byte reads over its working set,
   `guest: tlb ns_per_access=X` once a second) with --thp on vs --thp off, same wss.
2. Time from process start to `guest: ready` (every page of the working set written
   once) with --prealloc vs without, for a 4 GiB working set (THP on in both).
   With --prealloc the time includes populating guest RAM before boot.

Prints a table and the ratios; writes JSON (default bench/results/memory.json).
Not a test: nothing is asserted. Needs /dev/kvm and RAM for the largest guest
(--prealloc-gib + 64 MiB); when the host lacks it the size is lowered and the
JSON says so.

Usage: bench/memory/run.py [--tlb-wss-mib N] [--tlb-seconds N] [--prealloc-gib N]
                           [--runs N] [--json PATH]
"""
import argparse
import json
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import vmm  # noqa: E402

HEADROOM_MIB = 64  # guest image, page tables, generation array beyond the working set


def mem_available_mib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 0


def guest_mem_mib(wss_mib):
    # the guest keeps a u32 generation per 4 KiB page after the working set
    mib = wss_mib + wss_mib // 1024 + HEADROOM_MIB
    return (mib + 1) // 2 * 2  # --mem must be a multiple of 2 MiB


def tlb_run(thp, wss_mib, seconds, khz):
    cmdline = f"mode=tlb wss={wss_mib}M" + (f" tsc_khz={khz}" if khz else "")
    g = vmm.Guest(vmm.ferry_cmd(guest_mem_mib(wss_mib), cmdline, extra=("--thp", thp)))
    try:
        ready = g.wait_line(r"^guest: ready$", 300)
        if not ready:
            raise RuntimeError(f"no 'guest: ready' (thp {thp}): {g.lines[-5:]}")
        samples = []
        # the first report covers a partial second right after populating: skip it
        for i in range(seconds + 1):
            line = g.wait_line(r"^guest: tlb ns_per_access=", 30)
            if not line:
                raise RuntimeError(f"no tlb line (thp {thp}): {g.lines[-5:]}")
            g.lines.remove(line)
            if i > 0:
                samples.append(float(re.search(r"ns_per_access=([0-9.]+)", line[1]).group(1)))
        return {"ready_s": ready[0], "ns_per_access": samples, "ns_per_access_median": statistics.median(samples)}
    finally:
        g.stop()


def ready_run(prealloc, wss_mib, khz):
    cmdline = f"mode=dirty wss={wss_mib}M rate=0" + (f" tsc_khz={khz}" if khz else "")
    extra = ("--prealloc",) if prealloc else ()
    g = vmm.Guest(vmm.ferry_cmd(guest_mem_mib(wss_mib), cmdline, extra=extra))
    try:
        ready = g.wait_line(r"^guest: ready$", 600)
        if not ready:
            raise RuntimeError(f"no 'guest: ready' (prealloc {prealloc}): {g.lines[-5:]}")
        return ready[0]
    finally:
        g.stop()
        err = g.proc.stderr.read().decode(errors="replace") if g.proc.stderr else ""
        m = re.search(r"preallocated .* in ([0-9.]+) s", err)
        ready_run.last_prealloc_s = float(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tlb-wss-mib", type=int, default=1024, help="working set of the tlb runs (MiB)")
    ap.add_argument("--tlb-seconds", type=int, default=5, help="tlb reports per run, after the first")
    ap.add_argument("--prealloc-gib", type=int, default=4, help="working set of the prealloc runs (GiB)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each prealloc configuration")
    ap.add_argument("--json", default=os.path.join(vmm.ROOT, "bench", "results", "memory.json"))
    args = ap.parse_args()

    khz = vmm.host_tsc_khz()
    notes = []
    avail = mem_available_mib()
    pre_mib = args.prealloc_gib * 1024
    # keep 1 GiB of the host's available memory free
    while pre_mib > 256 and guest_mem_mib(pre_mib) > avail - 1024:
        pre_mib //= 2
    if pre_mib != args.prealloc_gib * 1024:
        notes.append(f"host has {avail} MiB available: prealloc working set lowered to {pre_mib} MiB")
    tlb_mib = args.tlb_wss_mib
    while tlb_mib > 64 and guest_mem_mib(tlb_mib) > avail - 1024:
        tlb_mib //= 2
    if tlb_mib != args.tlb_wss_mib:
        notes.append(f"host has {avail} MiB available: tlb working set lowered to {tlb_mib} MiB")
    for n in notes:
        print("note:", n)

    thp_modes = {}
    for thp in ("on", "off"):
        print(f"tlb: wss {tlb_mib} MiB, --thp {thp} ...", flush=True)
        thp_modes[thp] = tlb_run(thp, tlb_mib, args.tlb_seconds, khz)
    tlb_ratio = thp_modes["off"]["ns_per_access_median"] / thp_modes["on"]["ns_per_access_median"]

    prealloc = {"on": [], "off": []}
    prealloc_s = []
    for r in range(args.runs):
        for mode in ("off", "on"):
            print(f"ready: wss {pre_mib} MiB, prealloc {mode}, run {r + 1}/{args.runs} ...", flush=True)
            prealloc[mode].append(ready_run(mode == "on", pre_mib, khz))
            if mode == "on" and ready_run.last_prealloc_s is not None:
                prealloc_s.append(ready_run.last_prealloc_s)
    off_med = statistics.median(prealloc["off"])
    on_med = statistics.median(prealloc["on"])

    print()
    print(f"{'tlb, wss ' + str(tlb_mib) + ' MiB':28} {'ns/access (median)':>20} {'min':>8} {'max':>8} {'ready s':>8}")
    for thp, r in thp_modes.items():
        print(f"{'  --thp ' + thp:28} {r['ns_per_access_median']:20.2f} {min(r['ns_per_access']):8.2f} "
              f"{max(r['ns_per_access']):8.2f} {r['ready_s']:8.2f}")
    print(f"{'ready, wss ' + str(pre_mib) + ' MiB':28} {'s to ready (median)':>20} {'min':>8} {'max':>8}")
    for mode in ("off", "on"):
        v = prealloc[mode]
        print(f"{'  --prealloc ' + mode:28} {statistics.median(v):20.2f} {min(v):8.2f} {max(v):8.2f}")
    if prealloc_s:
        print(f"  (of which populating before boot: {statistics.median(prealloc_s):.2f} s median)")
    print(f"THP off / THP on, ns per random access: {tlb_ratio:.2f}x")
    print(f"time to ready, no prealloc / prealloc: {off_med / on_med:.2f}x")

    summary = {
        "host_mem_available_mib": avail,
        "notes": notes,
        "tlb": {"wss_mib": tlb_mib, "seconds": args.tlb_seconds, "thp": thp_modes,
                "thp_off_over_on_ns_per_access": tlb_ratio},
        "prealloc": {"wss_mib": pre_mib, "guest_mem_mib": guest_mem_mib(pre_mib), "runs": args.runs,
                     "ready_s": prealloc, "ready_s_median": {"off": off_med, "on": on_med},
                     "populate_s": prealloc_s,
                     "no_prealloc_over_prealloc_ready": off_med / on_med},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(summary, f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

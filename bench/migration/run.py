#!/usr/bin/env python3
"""bench/migration: live migration (precopy, postcopy or hybrid: --mode) over loopback TCP, ferry beside QEMU microvm,
both booting the same test guest (build/guest/ferry-testguest.elf) in the same run.

Cases (each run once per VMM, ferry then QEMU, --runs times, interleaved):
  - guest RAM 1 GiB and 4 GiB x working set 256 MiB rewritten at 0 and at 50 MiB/s
    (`mode=verify wss=256M rate=0|50M`; --workload dirty for `mode=dirty`);
  - throughput, 4 GiB guest: `mode=idle` (nothing populated) and a populated 3 GiB working
    set with no rewrites (`mode=verify wss=3G rate=0`).

Per migration: the VMM's own query-migrate figures (total-time, downtime, ram.transferred,
ram.dirty-sync-count), the guest's own stall figures from its tick lines, a wall-clock
estimate of the stall, and (QEMU only) STOP -> RESUME from the QMP event timestamps.
Both VMMs get downtime-limit 300 ms and no bandwidth cap (QEMU's default cap of 128 MiB/s
is lifted with max-bandwidth = 1 TiB/s; ferry has no cap by default). docs/benchmarks.md
explains every figure. Not a test: nothing is asserted; targets are printed with pass/miss.

--mode postcopy: both VMMs get postcopy-ram (QEMU on both sides) and migrate-start-postcopy
right after migrate. --mode hybrid: ferry gets x-postcopy-auto and switches by its own rule;
QEMU, which has no such rule, gets migrate-start-postcopy after its third dirty-log sync
(ferry's earliest switch). For both, the guest-perceived stall is read from the test
guest's own figures on the destination until the destination completed: the largest
max_stall_us, and the sum of its per-tick stall histograms (buckets of >16 us gaps). Beside
them, ferry's per-fault latency (ferry-query-migrate-latency) and both VMMs'
postcopy-blocktime.

--tls: every case runs twice per VMM, over plain TCP and over TLS 1.3 with X.509 certificates
(ferry --tls-creds, QEMU tls-creds-x509, both reading one directory made with openssl), as
"ferry+tls" and "qemu+tls" beside "ferry" and "qemu": the cost of TLS in stream rate and
downtime, in the same run.

Usage: bench/migration/run.py [--runs N] [--mode precopy|postcopy|hybrid] [--workload verify|dirty]
                              [--mems 1024,4096] [--rates 0,50M] [--max-bandwidth BYTES]
                              [--no-throughput] [--no-qemu] [--tls] [--json PATH]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import tls_certs  # noqa: E402
import vmm  # noqa: E402

from migration_run import DOWNTIME_LIMIT_MS, QEMU_NO_CAP, one_migration  # noqa: E402


def stats(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


METRICS = [  # key, column title, scale, format
    ("total_ms", "total ms", 1, "{:.0f}"),
    ("downtime_ms", "downtime ms", 1, "{:.0f}"),
    ("stall_max_us", "stall ms", 1e-3, "{:.1f}"),
    ("stall_dst_first_us", "dst1 stall ms", 1e-3, "{:.1f}"),
    ("stall_before_us", "before ms", 1e-3, "{:.1f}"),
    ("hidden_ms", "unseen ms", 1, "{:.0f}"),
    ("event_downtime_ms", "STOP>RESUME ms", 1, "{:.0f}"),
    ("bytes", "MiB sent", 1 / 2**20, "{:.1f}"),
    ("rounds", "rounds", 1, "{:.0f}"),
    ("dst_stall_median_us", "dst median stall us", 1, "{:.0f}"),
    ("postcopy_blocktime_ms", "blocktime ms", 1, "{:.0f}"),
    ("fault_p50_us", "fault p50 us", 1, "{:.0f}"),
    ("fault_max_us", "fault max us", 1, "{:.0f}"),
]


def fmt_stat(s, scale, f):
    if s is None:
        return "-"
    med, lo, hi = (s[k] * scale for k in ("median", "min", "max"))
    if f.format(lo) == f.format(hi):
        return f.format(med)
    return f"{f.format(med)} ({f.format(lo)}-{f.format(hi)})"


def print_rows(header, rows):
    """Columns as wide as their widest cell; the first two left-aligned."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(f"{c:{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(map(str, r), widths))))


def print_table(cases):
    header = ["case", "vmm"] + [m[1] for m in METRICS] + ["corrupt"]
    rows = []
    for case in cases:
        for kind, r in case["results"].items():
            rows.append([case["name"], kind] + [fmt_stat(r["stats"].get(key), scale, f) for key, _, scale, f in METRICS]
                        + [max(x["corrupt_dst"] for x in r["runs"])])
    print_rows(header, rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mode", choices=("precopy", "postcopy", "hybrid"), default="precopy")
    ap.add_argument("--max-bandwidth", type=int, default=None, help="bytes/s for both VMMs (default: none)")
    ap.add_argument("--workload", choices=("verify", "dirty"), default="verify")
    ap.add_argument("--mems", default="1024,4096", help="guest RAM sizes in MiB, comma-separated")
    ap.add_argument("--rates", default="0,50M", help="rewrite rates of the 256 MiB working set")
    ap.add_argument("--wss", default="256M")
    ap.add_argument("--throughput-mem", type=int, default=4096, help="guest RAM (MiB) of the throughput cases")
    ap.add_argument("--throughput-wss", default="3G", help="populated working set of the throughput case")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--no-qemu", action="store_true")
    ap.add_argument("--preempt", action="store_true",
                    help="postcopy/hybrid: ferry sends page answers on a second connection (postcopy-preempt) "
                         "instead of between small background batches on one")
    ap.add_argument("--tls", action="store_true", help="also migrate over TLS (ferry+tls, qemu+tls) in the same run")
    ap.add_argument("--json", default=os.path.join(vmm.ROOT, "bench", "results", "migration.json"))
    args = ap.parse_args()

    snap_dir, binary = vmm.snapshot_binaries()
    try:
        commit = subprocess.run(["git", "-C", vmm.ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or None
    except OSError:
        commit = None
    load_start = os.getloadavg()
    if load_start[0] > 1.5:
        print(f"note: load average {load_start[0]:.1f} at the start: other work on this host adds noise")
    try:
        run_all(args, binary, commit, load_start)
    finally:
        shutil.rmtree(snap_dir, ignore_errors=True)


def run_all(args, binary, commit, load_start):
    khz = vmm.host_tsc_khz()
    if not khz:
        sys.exit("could not read the host TSC rate from the test guest under ferry")
    kinds = ["ferry"]
    if not args.no_qemu:
        if os.access(vmm.QEMU, os.X_OK):
            kinds.append("qemu")
        else:
            print("qemu-system-x86_64 not found: ferry only (scripts/install-deps installs it)")

    specs = []  # (name, group, mem, cmdline)
    for mem in (int(m) for m in args.mems.split(",") if m):  # --mems "" runs the throughput cases only
        for rate in args.rates.split(","):
            name = f"{mem // 1024 if mem % 1024 == 0 else mem}{'G' if mem % 1024 == 0 else 'M'} wss={args.wss} rate={rate}"
            specs.append((name, "latency", mem, f"mode={args.workload} wss={args.wss} rate={rate} tsc_khz={khz}"))
    if not args.no_throughput:
        m = args.throughput_mem
        specs.append((f"{m // 1024}G idle (throughput)", "throughput", m, f"mode=idle tsc_khz={khz}"))
        specs.append((f"{m // 1024}G wss={args.throughput_wss} rate=0 (thr.)", "throughput", m,
                      f"mode={args.workload} wss={args.throughput_wss} rate=0 tsc_khz={khz}"))

    tls_dir = None
    if args.tls:
        tls_dir = tls_certs.make_x509_dir(os.path.join(tempfile.mkdtemp(prefix="ferry-bench-tls-"), "x509"))
        kinds = [v for k in kinds for v in (k, k + "+tls")]

    cases = []
    t_bench = time.monotonic()
    for name, group, mem, cmdline in specs:
        case = {"name": name, "group": group, "mem_mib": mem, "cmdline": cmdline, "results": {k: {"runs": []} for k in kinds}}
        for r in range(args.runs):
            for kind in kinds:
                print(f"{name}: {kind} run {r + 1}/{args.runs} ...", end=" ", flush=True)
                base, _, tls = kind.partition("+")
                res = one_migration(base, mem, cmdline, args.mode, args.max_bandwidth, preempt=args.preempt,
                                    tls_dir=tls_dir if tls else None)
                case["results"][kind]["runs"].append(res)
                print(f"total {res['total_ms']} ms, downtime {res['downtime_ms']} ms, "
                      f"stall {res['stall_max_us'] / 1000:.1f} ms (dst first {res['stall_dst_first_us'] / 1000:.1f}, "
                      f"before {res['stall_before_us'] / 1000:.1f}), "
                      f"unseen {res['hidden_ms']:.0f} ms, {res['bytes'] / 2**20:.1f} MiB, {res['rounds']} rounds, "
                      f"corrupt {res['corrupt_dst']}", flush=True)
        for kind, r in case["results"].items():
            r["stats"] = {key: stats([x[key] for x in r["runs"]]) for key, *_ in METRICS}
            for key in ("harness_ms", "src_cpu_ms", "dst_cpu_ms", "src_vcpu_cpu_ms"):
                r["stats"][key] = stats([x[key] for x in r["runs"]])
            r["stats"]["cpu_ms_per_gib"] = stats([(x["src_cpu_ms"] + x["dst_cpu_ms"]) / (x["bytes"] / 2**30)
                                                  for x in r["runs"] if x["bytes"] > 2**26 and x["src_cpu_ms"] is not None])
            r["stats"]["guest_cpu_share"] = stats([x["src_vcpu_cpu_ms"] / x["harness_ms"] for x in r["runs"]
                                                   if x["src_vcpu_cpu_ms"] is not None])
            r["stats"]["throughput_bps"] = stats([x["bytes"] / (x["total_ms"] / 1000.0) for x in r["runs"]])
            r["stats"]["ram_rate_bps"] = stats([mem * 2**20 / (x["total_ms"] / 1000.0) for x in r["runs"]])
        cases.append(case)

    print()
    print(f"{args.mode}{' (ferry: postcopy-preempt)' if args.preempt else ''} over loopback TCP, downtime-limit {DOWNTIME_LIMIT_MS} ms, "
          f"{'max-bandwidth ' + str(args.max_bandwidth) + ' B/s' if args.max_bandwidth else 'no bandwidth cap'}; "
          f"{args.runs} runs each: median (min-max); workload mode={args.workload}")
    print_table(cases)

    print()
    print("CPU during the migration (ms on CPU from /proc/PID/stat, the vCPU thread left out; source vCPU share: how much of a core the guest got while migrating):")
    rows = []
    for case in cases:
        for kind, r in case["results"].items():
            st = r["stats"]
            share = f"{st['guest_cpu_share']['median'] * 100:.0f}%" if st["guest_cpu_share"] else "-"
            rows.append([case["name"], kind, fmt_stat(st["src_cpu_ms"], 1, "{:.0f}"), fmt_stat(st["dst_cpu_ms"], 1, "{:.0f}"),
                         fmt_stat(st["cpu_ms_per_gib"], 1, "{:.0f}"), share])
    print_rows(["case", "vmm", "source ms", "destination ms", "CPU ms/GiB sent", "source vCPU share"], rows)

    targets = []
    if "qemu" in kinds:
        print()
        print("targets (ferry vs QEMU, medians):")
        checks = [("downtime_ms", "downtime ms", 1, "<="), ("stall_max_us", "guest max_stall ms", 1e-3, "<="),
                  ("total_ms", "total time ms", 1, "<="), ("bytes", "MiB sent", 1 / 2**20, "<=")]
        for case in cases:
            if case["group"] != "latency":
                continue
            f, q = case["results"]["ferry"]["stats"], case["results"]["qemu"]["stats"]
            case_checks = checks + ([("dst_stall_median_us", "median guest stall us", 1, "<=half")]
                                    if args.mode != "precopy" else [])
            for key, title, scale, op in case_checks:
                if not f.get(key) or not q.get(key):
                    continue
                fv, qv = f[key]["median"], q[key]["median"]
                ok = fv <= qv / 2 if op == "<=half" else fv <= qv
                target = "ferry <= qemu/2" if op == "<=half" else "ferry <= qemu"
                targets.append({"case": case["name"], "metric": key, "ferry": fv, "qemu": qv, "target": target, "pass": ok})
                print(f"  {case['name']:34} {title:20} ferry {fv * scale:8.1f}  qemu {qv * scale:8.1f}  "
                      f"target {target}  {'pass' if ok else 'MISS'}")
        for case in cases:
            if case["group"] != "throughput":
                continue
            # idle: almost nothing is on the wire, so the figure that says how fast the guest
            # moves is guest RAM / total time; populated: bytes / total time is the wire rate
            idle = "mode=idle" in case["cmdline"]
            f, q = case["results"]["ferry"]["stats"], case["results"]["qemu"]["stats"]
            for key, title, judged in (("throughput_bps", "bytes/total time", not idle),
                                       ("ram_rate_bps", "guest RAM/total time", idle)):
                fv, qv = f[key]["median"], q[key]["median"]
                ratio = fv / qv
                verdict = ("pass" if ratio >= 1.5 else "MISS") if judged else "(not judged)"
                print(f"  {case['name']:34} {title:20} ferry {fv / 2**20:8.1f} MiB/s  qemu {qv / 2**20:8.1f} MiB/s  "
                      f"ratio {ratio:5.2f}x  target >= 1.5x  {verdict}")
                targets.append({"case": case["name"], "metric": key, "ferry": fv, "qemu": qv, "ratio": ratio,
                                "target": "ratio >= 1.5" if judged else None, "pass": (ratio >= 1.5) if judged else None})

    summary = {
        "runs": args.runs,
        "mode": args.mode,
        "ferry_postcopy_preempt": args.preempt,
        "workload": args.workload,
        "downtime_limit_ms": DOWNTIME_LIMIT_MS,
        "qemu_max_bandwidth": QEMU_NO_CAP,
        "tsc_khz": khz,
        "cases": cases,
        "targets": targets,
        **vmm.run_facts("qemu" in kinds, load_start, binary, commit, t_bench),
    }
    vmm.write_json(args.json, summary)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""bench/blk: virtio-blk IOPS and throughput measured inside the test guest
(build/guest/ferry-testguest.elf, `mode=blk blkop=OP bs=BS qd=QD`), ferry beside QEMU
microvm, same guest, same raw image, one VM at a time.

The image (--size-mib, default 256 MiB) is created under --dir and filled with non-zero
data, so reads return real data; it stays in the host's page cache (this measures the VMM's
I/O path, not the disk). VMMs (each case runs once per VMM per run, VMMs interleaved):
  - ferry:       `ferry run --disk IMG` (virtio-mmio, io_uring worker thread);
  - qemu:        `-drive ...,cache=writeback,aio=threads` (QEMU's defaults);
  - qemu-uring:  the same with aio=io_uring (skipped when QEMU refuses it).
Cases (defaults): 4K sequential/random reads and writes with one request in flight, 4K
random reads and writes with 8 in flight, 256K sequential reads and writes with 4 in
flight. The guest prints `guest: blkbench op=... iops=N mibps=X` once a second; the first
report (warm-up) is dropped and the median of the others is the figure. CPU: the user+system
time of the VMM's threads other than the vCPU (I/O threads, main loop; from /proc, over the
measured seconds) per request the guest completed meanwhile (the vCPU thread polls, so it is
always busy and left out). Not a test: nothing is asserted; the target (ferry at least as
fast as QEMU) is printed with pass/miss per case. docs/benchmarks.md explains the figures.

Usage: bench/blk/run.py [--runs N] [--seconds N] [--size-mib N] [--dir DIR] [--mem MB]
                        [--cases op:bs:qd,...] [--irq on|off|both] [--no-qemu] [--json PATH]
"""
import argparse
import os
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import vmm  # noqa: E402

DEFAULT_CASES = "read:4K:1,randread:4K:1,write:4K:1,randwrite:4K:1,randread:4K:8,randwrite:4K:8,read:256K:4,write:256K:4"
BENCH_RX = re.compile(r"^guest: blkbench op=(\w+) bs=(\d+) qd=(\d+) iops=(\d+) mibps=([\d.]+)")
BLK_RX = re.compile(r"^guest: blk ok=(\d+) bad=(\d+) ioerr=(\d+) irqs=(\d+)")


def make_image(path, mib):
    """A raw image of mib MiB of non-zero, non-repeating data (fast: one random MiB, varied)."""
    block = bytearray(os.urandom(1 << 20))
    with open(path, "wb") as f:
        for i in range(mib):
            block[0:8] = i.to_bytes(8, "little")
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def vmm_argv(kind, image, mem_mb, cmdline):
    if kind == "ferry":
        return vmm.ferry_cmd(mem_mb, cmdline, extra=["--disk", image])
    aio = "io_uring" if kind == "qemu-uring" else "threads"
    return vmm.qemu_cmd(mem_mb, cmdline, extra=vmm.qemu_blk_args(image, "writeback", aio), machine_opts="acpi=off")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_sample(pid):
    """(process CPU s, {tid: thread CPU s}) from /proc (utime + stime; the process figure
    includes threads that have exited, e.g. QEMU's thread-pool workers); None once gone."""
    def secs(path):
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    try:
        total = secs(f"/proc/{pid}/stat")
        threads = {}
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                threads[tid] = secs(f"/proc/{pid}/task/{tid}/stat")
            except (OSError, ValueError, IndexError):
                pass
        return total, threads
    except (OSError, ValueError, IndexError):
        return None


def one_run(kind, image, mem_mb, cmdline, seconds):
    """Boots the guest (running forever), reads its lines until seconds + 1 blkbench reports
    (the first is warm-up), samples the VMM's CPU time per thread as the first and the last of
    them arrive, and kills the VMM. Returns a dict of figures, or {"error": ...}."""
    proc = subprocess.Popen(vmm_argv(kind, image, mem_mb, cmdline), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    lines, buf, samples = [], b"", []  # samples: (index of the blk line before, cpu sample)
    deadline = time.monotonic() + 60 + seconds * 3
    try:
        while len(samples) < 2 and time.monotonic() < deadline:
            r, _, _ = select.select([proc.stdout], [], [], 1.0)
            if not r:
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                lines.append(line.decode(errors="replace"))
                if BENCH_RX.match(lines[-1]):
                    nbench = sum(1 for l in lines if BENCH_RX.match(l))
                    if nbench in (1, seconds + 1):
                        samples.append((len(lines), cpu_sample(proc.pid)))
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    if len(samples) < 2 or not samples[0][1] or not samples[1][1]:
        tail = [l for l in lines if l.startswith("guest: error")] or lines[-3:]
        return {"error": f"rc={proc.returncode}: " + " | ".join(tail + err.decode(errors="replace").strip().splitlines()[-2:])}
    (n0, s0), (n1, s1) = samples
    bench = [m for m in (BENCH_RX.match(l) for l in lines[:n1]) if m]
    iops = [int(m.group(4)) for m in bench[1:]] or [int(bench[0].group(4))]
    mibps = [float(m.group(5)) for m in bench[1:]] or [float(bench[0].group(5))]
    blk0 = [m for m in (BLK_RX.match(l) for l in lines[:n0]) if m][-1]
    blk1 = [m for m in (BLK_RX.match(l) for l in lines[:n1]) if m][-1]
    ok, bad, ioerr, irqs = map(int, blk1.groups())
    n_io = ok - int(blk0.group(1))
    total = s1[0] - s0[0]
    per_thread = {t: s1[1][t] - s0[1].get(t, 0.0) for t in s1[1]}
    vcpu = max(per_thread.values(), default=0.0)  # the vCPU: the guest polls, so it is the busiest
    return {"iops": statistics.median(iops), "mibps": statistics.median(mibps), "iops_per_s": iops,
            "mibps_per_s": mibps, "ok": ok, "bad": bad, "ioerr": ioerr, "irqs": irqs,
            "irqs_per_io": (irqs - int(blk0.group(4))) / n_io if n_io else None,
            "sampled_ios": n_io, "cpu_s": total, "vcpu_cpu_s": vcpu,
            "io_cpu_us_per_io": (total - vcpu) * 1e6 / n_io if n_io else None}


def qemu_uring_works(image, khz):
    """QEMU accepts aio=io_uring (a short run that must report)."""
    cmd = "mode=blk cpus=1 wss=1M blkop=read bs=4K" + (f" tsc_khz={khz}" if khz else "")
    r = one_run("qemu-uring", image, 64, cmd, 1)
    return "error" not in r, r.get("error")


def fmt_range(xs, f="{:.0f}"):
    if not xs:
        return "-"
    med = statistics.median(xs)
    return f.format(med) if len(xs) == 1 else f"{f.format(med)} ({f.format(min(xs))}-{f.format(max(xs))})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2, help="runs per case and VMM (interleaved)")
    ap.add_argument("--seconds", type=int, default=4, help="measured seconds per run (after 1 s of warm-up)")
    ap.add_argument("--size-mib", type=int, default=256, help="image size")
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the image is created (and removed)")
    ap.add_argument("--cases", default=DEFAULT_CASES, help="op:bs:qd,... (op: read|write|randread|randwrite)")
    ap.add_argument("--irq", choices=("on", "off", "both"), default="on",
                    help="the guest's irq= key: on = IRQ routed and counted (default), off = polled, IF=0")
    ap.add_argument("--mem", type=int, default=128, help="guest RAM in MiB (the buffers take qd x bs of it)")
    ap.add_argument("--no-qemu", action="store_true")
    ap.add_argument("--json", default=os.path.join(vmm.ROOT, "bench", "results", "blk.json"))
    args = ap.parse_args()

    snap_dir, binary = vmm.snapshot_binaries()
    image = os.path.join(args.dir, f"ferry-bench-blk-{os.getpid()}.img")
    try:
        make_image(image, args.size_mib)
        run_all(args, binary, image)
    finally:
        shutil.rmtree(snap_dir, ignore_errors=True)
        try:
            os.unlink(image)
        except OSError:
            pass


def run_all(args, binary, image):
    t_bench = time.monotonic()
    try:
        commit = subprocess.run(["git", "-C", vmm.ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or None
    except OSError:
        commit = None
    load_start = os.getloadavg()
    if load_start[0] > 1.5:
        print(f"note: load average {load_start[0]:.1f} at the start: other work on this host adds noise")
    khz = vmm.host_tsc_khz()
    kinds = ["ferry"]
    qemu_note = None
    if not args.no_qemu and os.access(vmm.QEMU, os.X_OK):
        kinds.append("qemu")
        works, why = qemu_uring_works(image, khz)
        if works:
            kinds.append("qemu-uring")
        else:
            qemu_note = f"aio=io_uring refused: {why}"
            print(f"note: QEMU {qemu_note}")
    elif not args.no_qemu:
        print("qemu-system-x86_64 not found: ferry only (scripts/install-deps installs it)")

    irqs = ["on", "off"] if args.irq == "both" else [args.irq]
    cases = []
    for spec in args.cases.split(","):
        op, bs, qd = spec.split(":")
        for irq in irqs:
            cases.append({"op": op, "bs": bs, "qd": int(qd), "irq": irq, "runs": {k: [] for k in kinds}})

    for run in range(args.runs):
        for c in cases:
            cmdline = (f"mode=blk cpus=1 wss={args.size_mib}M blkop={c['op']} bs={c['bs']} qd={c['qd']} seed={run + 1} "
                       f"irq={c['irq']}" + (f" tsc_khz={khz}" if khz else ""))
            c["cmdline"] = cmdline
            for k in kinds:
                r = one_run(k, image, args.mem, cmdline, args.seconds)
                c["runs"][k].append(r)
                if "error" in r:
                    print(f"{k} {c['op']} {c['bs']} qd={c['qd']}: {r['error']}")

    # figures: per case and VMM, the median over runs of each run's median
    for c in cases:
        c["median"] = {}
        for k in kinds:
            good = [r for r in c["runs"][k] if "error" not in r]
            c["median"][k] = {
                "iops": statistics.median([r["iops"] for r in good]) if good else None,
                "mibps": statistics.median([r["mibps"] for r in good]) if good else None,
                "io_cpu_us_per_io": statistics.median([r["io_cpu_us_per_io"] for r in good if r["io_cpu_us_per_io"]])
                if good else None,
                "irqs_per_io": statistics.median([r["irqs_per_io"] for r in good if r["irqs_per_io"] is not None])
                if good else None,
                "ioerr": max((r["ioerr"] for r in good), default=None),
            }

    name_w = 26
    print(f"virtio-blk from inside the guest, {args.size_mib} MiB raw image in the page cache, {args.runs} run(s) x "
          f"{args.seconds} s per case: median IOPS (min-max over runs), MiB/s, CPU us per request of the VMM's "
          f"threads other than the vCPU")
    head = f"{'case':{name_w}}" + "".join(f" {k + ' IOPS':>22} {'MiB/s':>8} {'CPU us':>7}" for k in kinds)
    print(head)
    for c in cases:
        label = f"{c['op']} {c['bs']} qd={c['qd']}" + (f" irq={c['irq']}" if len(irqs) > 1 else "")
        row = f"{label:{name_w}}"
        for k in kinds:
            good = [r for r in c["runs"][k] if "error" not in r]
            m = c["median"][k]
            row += f" {fmt_range([r['iops'] for r in good]):>22} {m['mibps'] or 0:8.1f} {m['io_cpu_us_per_io'] or 0:7.1f}"
        print(row)

    targets = []
    if len(kinds) > 1:
        print("\ntarget: ferry IOPS >= QEMU's (medians)")
        for c in cases:
            f = c["median"]["ferry"]["iops"]
            for k in kinds[1:]:
                q = c["median"][k]["iops"]
                if f is None or q is None:
                    continue
                ok = f >= q
                label = f"{c['op']} {c['bs']} qd={c['qd']}" + (f" irq={c['irq']}" if len(irqs) > 1 else "")
                targets.append({"case": label, "vs": k, "ferry_iops": f, "qemu_iops": q, "ratio": f / q, "pass": ok})
                print(f"  {label:{name_w}} vs {k:11} ferry {f:9.0f}  {k} {q:9.0f}  ratio {f / q:5.2f}x  "
                      f"{'pass' if ok else 'MISS'}")

    summary = {
        "runs": args.runs,
        "seconds": args.seconds,
        "image_mib": args.size_mib,
        "mem_mib": args.mem,
        "tsc_khz": khz,
        "vmms": kinds,
        "qemu_note": qemu_note,
        "cases": cases,
        "targets": targets,
        **vmm.run_facts(len(kinds) > 1, load_start, binary, commit, t_bench),
    }
    vmm.write_json(args.json, summary)


if __name__ == "__main__":
    main()

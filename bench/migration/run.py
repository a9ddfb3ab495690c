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

Usage: bench/migration/run.py [--runs N] [--mode precopy|postcopy|hybrid] [--workload verify|dirty]
                              [--mems 1024,4096] [--rates 0,50M] [--max-bandwidth BYTES]
                              [--no-throughput] [--no-qemu] [--json PATH]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import vmm  # noqa: E402

DOWNTIME_LIMIT_MS = 300
QEMU_NO_CAP = 1 << 40  # bytes/s: lifts QEMU's default max-bandwidth (128 MiB/s)
POLL_S = 0.1
CLK_TCK = os.sysconf("SC_CLK_TCK")
TICK_RX = re.compile(r"^guest: tick=(\d+) dirtied=(\d+) max_stall_us=(\d+) corrupt=(\d+)")
STALLS_RX = re.compile(r"^guest: stalls ((?:\d+:\d+\s*)+)$")


def stall_histogram(vm, start, end):
    """{bucket_us: count} summed over the guest's stall lines in lines[start:end] (a line may be
    folded by the console: the continuation has no prefix)."""
    hist = {}
    with vm.cv:
        lines = [t for _, t in vm.lines[start:end]]
    text = []
    for i, t in enumerate(lines):
        if t.startswith("guest: stalls "):
            j, joined = i + 1, t
            while j < len(lines) and re.match(r"^\s*\d+:\d+", lines[j]) and not lines[j].startswith("guest:"):
                joined += " " + lines[j].strip()
                j += 1
            text.append(joined)
    for t in text:
        for b, n in re.findall(r"(\d+):(\d+)", t[len("guest: stalls "):]):
            hist[int(b)] = hist.get(int(b), 0) + int(n)
    return hist


def hist_median_us(hist):
    """The bucket (lower bound, us) holding the median stall of a {bucket: count} histogram."""
    total = sum(hist.values())
    if not total:
        return None
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen * 2 >= total:
            return b
    return None


class Vm:
    """A VMM process; a thread reads its stdout (the guest console) and stamps each line
    with the host's monotonic clock as it arrives; stderr goes to a file."""

    def __init__(self, argv, stderr_path, env=None):
        self.stderr_path = stderr_path
        self.err = open(stderr_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.err, stdin=subprocess.DEVNULL,
                                     env=None if env is None else {**os.environ, **env})
        self.lines = []  # (monotonic seconds, text)
        self.cv = threading.Condition()
        self.eof = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        buf = b""
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            now = time.monotonic()
            if not chunk:
                break
            buf += chunk
            with self.cv:
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    self.lines.append((now, line.decode(errors="replace").rstrip("\r")))
                self.cv.notify_all()
        with self.cv:
            self.eof = True
            self.cv.notify_all()

    def wait_line(self, pattern, timeout, start=0):
        """(index, time, text) of the first line at or after index `start` matching, or None."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = start
        with self.cv:
            while True:
                while i < len(self.lines):
                    if rx.search(self.lines[i][1]):
                        return (i, *self.lines[i])
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or self.eof:
                    return None
                self.cv.wait(left)

    def ticks(self, start=0, end=None):
        """[(index, time, tick, dirtied, max_stall_us, corrupt)] from lines[start:end]."""
        out = []
        with self.cv:
            lines = self.lines[start:end]
        for k, (t, text) in enumerate(lines):
            m = TICK_RX.match(text)
            if m:
                out.append((start + k, t, *map(int, m.groups())))
        return out

    def cpu_sample(self):
        """(process CPU ms, {tid: thread CPU ms}) from /proc/PID/stat and /proc/PID/task/*/stat
        (utime + stime; the process figure includes threads that have exited); None once gone."""
        def ms(path):
            with open(path) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) * 1000.0 / CLK_TCK
        base = f"/proc/{self.proc.pid}"
        try:
            total = ms(f"{base}/stat")
            threads = {}
            for tid in os.listdir(f"{base}/task"):
                try:
                    threads[int(tid)] = ms(f"{base}/task/{tid}/stat")
                except (OSError, ValueError, IndexError):
                    pass
            return total, threads
        except (OSError, ValueError, IndexError):
            return None

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.reader.join(timeout=5)
        self.err.close()


def tail(vm, n=5):
    return [t for _, t in vm.lines[-n:]] + vm.stderr_text().strip().splitlines()[-3:]


def start_pair(kind, mem_mb, cmdline, tmp):
    """(source Vm, destination Vm, source QMP path, destination QMP path, port)."""
    src_sock, dst_sock = os.path.join(tmp, "src.sock"), os.path.join(tmp, "dst.sock")
    if kind == "ferry":
        dst = Vm([vmm.FERRY, "run", "--mem", f"{mem_mb}M", "--cpus", "1", "--incoming", "tcp:127.0.0.1:0",
                  "--qmp", dst_sock], os.path.join(tmp, "dst.err"))
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            m = re.search(r"incoming migration on tcp:[^:\s]+:(\d+)", dst.stderr_text())
            if m:
                port = int(m.group(1))
            elif dst.proc.poll() is not None:
                break
            else:
                time.sleep(0.02)
        if port is None:
            dst.stop()
            raise RuntimeError(f"ferry destination printed no port: {dst.stderr_text()[-500:]}")
        # --keep-source: the source stays (paused) after handing over instead of exiting, so its
        # CPU time can be read after completion; nothing else about the migration changes
        # FERRY_LOG=info: the source logs its downtime breakdown (kept in the JSON when present)
        src = Vm(vmm.ferry_cmd(mem_mb, cmdline, extra=("--qmp", src_sock, "--keep-source")),
                 os.path.join(tmp, "src.err"), env={"FERRY_LOG": "info"})
    else:
        port = vmm.free_tcp_port()
        qmp_dst = ("-qmp", f"unix:{dst_sock},server=on,wait=off", "-incoming", f"tcp:127.0.0.1:{port}")
        dst = Vm(vmm.qemu_cmd(mem_mb, cmdline, extra=qmp_dst), os.path.join(tmp, "dst.err"))
        src = Vm(vmm.qemu_cmd(mem_mb, cmdline, extra=("-qmp", f"unix:{src_sock},server=on,wait=off")),
                 os.path.join(tmp, "src.err"))
    return src, dst, src_sock, dst_sock, port


def one_migration(kind, mem_mb, cmdline, mode="precopy", max_bandwidth=None, after_ticks=3, preempt=False):
    tmp = tempfile.mkdtemp(prefix=f"ferry-bench-mig-{kind}-")
    src = dst = qs = qd = None
    try:
        src, dst, src_sock, dst_sock, port = start_pair(kind, mem_mb, cmdline, tmp)
        ready = src.wait_line(r"^guest: ready$", 600)
        if not ready:
            raise RuntimeError(f"{kind}: no 'guest: ready' on the source: {tail(src)}")
        # two ticks after ready, so the workload runs at its steady rate
        t2 = src.wait_line(TICK_RX.pattern, 30, ready[0] + 1)
        t2 = t2 and src.wait_line(TICK_RX.pattern, 30, t2[0] + 1)
        if not t2:
            raise RuntimeError(f"{kind}: no ticks after ready on the source: {tail(src)}")
        qs = vmm.Qmp(src_sock)
        qd = vmm.Qmp(dst_sock)
        params = {"downtime-limit": DOWNTIME_LIMIT_MS}
        if kind == "qemu":
            params["max-bandwidth"] = QEMU_NO_CAP
        if max_bandwidth:
            params["max-bandwidth"] = max_bandwidth
        qs.cmd("migrate-set-parameters", params)
        if mode != "precopy":
            caps = [{"capability": "postcopy-ram", "state": True}]
            if kind == "ferry" and mode == "hybrid":
                caps.append({"capability": "x-postcopy-auto", "state": True})
            if kind == "ferry" and preempt:
                caps.append({"capability": "postcopy-preempt", "state": True})
            qs.cmd("migrate-set-capabilities", {"capabilities": caps})
            if kind == "qemu":  # QEMU wants it on the destination too
                qd.cmd("migrate-set-capabilities", {"capabilities": [{"capability": "postcopy-ram", "state": True},
                                                                     {"capability": "postcopy-blocktime", "state": True}]})

        mig_line = len(src.lines)  # source lines from here on were printed during the migration
        src_cpu0, dst_cpu0 = src.cpu_sample(), dst.cpu_sample()
        src_vcpu = max(src_cpu0[1], key=src_cpu0[1].get)  # the busiest thread so far: the vCPU
        t_start = time.monotonic()
        qs.cmd("migrate", {"uri": f"tcp:127.0.0.1:{port}"})
        switched = False
        if mode == "postcopy":
            qs.cmd("migrate-start-postcopy")
            switched = True
        final = None
        while final is None:
            try:
                r = qs.cmd("query-migrate")
            except vmm.QmpClosed:
                # the ferry source exits right after completing; its last event has the figures
                qs.drain()
                done = qs.event("FERRY_MIGRATION_DONE")
                if not done:
                    raise RuntimeError(f"{kind}: source QMP closed without FERRY_MIGRATION_DONE: {tail(src)}")
                final = done.get("data", {})
                break
            if r.get("status") in ("completed", "failed", "cancelled"):
                final = r
                break
            if mode == "hybrid" and kind == "qemu" and not switched and r.get("ram", {}).get("dirty-sync-count", 0) >= 3:
                qs.cmd("migrate-start-postcopy")
                switched = True
            if time.monotonic() - t_start > 600:
                raise RuntimeError(f"{kind}: migration still {r.get('status')} after 600 s")
            time.sleep(POLL_S)
        t_done = time.monotonic()
        src_cpu1, dst_cpu1 = src.cpu_sample(), dst.cpu_sample()  # both stay (ferry: --keep-source)
        if final.get("status") != "completed":
            raise RuntimeError(f"{kind}: migration {final.get('status')}: {final.get('error-desc')}")

        # postcopy: the destination completes when its last page is in; its figures then
        dst_final, latency, dst_done_line = None, None, None
        if mode != "precopy":
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                r = qd.execute("query-migrate").get("return", {})
                if r.get("status") in ("completed", "failed"):
                    dst_final = r
                    break
                time.sleep(POLL_S)
            dst_done_line = len(dst.lines)
            # ticks: until the destination completed, and one more
            after_ticks = max(after_ticks, len(dst.ticks()) + 1)
            if kind == "ferry":
                latency = qd.execute("ferry-query-migrate-latency").get("return")
        # the destination's first ticks after the switch
        last = None
        for _ in range(after_ticks):
            last = dst.wait_line(TICK_RX.pattern, 30, 0 if last is None else last[0] + 1)
            if not last:
                raise RuntimeError(f"{kind}: destination printed too few ticks: {tail(dst)}")
        dst_ticks = dst.ticks()[:after_ticks]
        dst_hist = stall_histogram(dst, 0, (dst_ticks[-1][0] + 3) if dst_ticks else None)
        # the destination's vCPU thread: the one that ran most since the switch
        dst_cpu2 = dst.cpu_sample()
        dst_vcpu = max(dst_cpu2[1], key=lambda t: dst_cpu2[1][t] - dst_cpu1[1].get(t, 0))

        def cpu_ms(a, b, vcpu):
            """CPU ms of the process between samples a and b, less its vCPU thread's."""
            if not a or not b:
                return None
            return (b[0] - a[0]) - (b[1].get(vcpu, 0) - a[1].get(vcpu, 0))
        # QMP STOP (source) / RESUME (destination) event times (QEMU emits them, ferry does not
        # on migration)
        qd.execute("query-status")
        try:
            qs.execute("query-status")
        except vmm.QmpClosed:
            pass
        stop_ev = qs.event("STOP")
        resume_ev = qd.event("RESUME")

        def ts(e):
            return e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6

        event_downtime_ms = (ts(resume_ev) - ts(stop_ev)) * 1000 if stop_ev and resume_ev else None
        try:
            qs.execute("quit")
        except vmm.QmpClosed:
            pass  # a ferry source without --keep-source has exited already
        src.proc.wait(timeout=30)
        src.reader.join(timeout=5)
        src_ticks = src.ticks(mig_line)  # ticks printed while migrating
        # the noise floor: the two ticks before the migration (host scheduling, other load)
        pre_ticks = src.ticks(0, mig_line)[-2:]
        all_src_ticks = src.ticks()
        ram = final.get("ram", {})
        m = re.search(r"downtime: pause (\d+) us, last round (\d+) us, state (\d+) us, ready\+go\+resumed (\d+) us",
                      src.stderr_text())
        breakdown = dict(zip(("pause", "last_round", "state", "ready_go_resumed"), map(int, m.groups()))) if m else None
        first = dst_ticks[0]
        last_src = all_src_ticks[-1]
        # wall-clock gap between the source's last tick line and the destination's first,
        # less the guest seconds between them: time the guest did not see (frozen TSC)
        ticks_apart = first[2] - last_src[2]
        hidden_ms = ((first[1] - last_src[1]) - ticks_apart) * 1000.0
        stall_src = max((t[4] for t in src_ticks), default=0)
        stall_dst_first = first[4]
        stall_dst = max(t[4] for t in dst_ticks)
        res = {
            "status": final.get("status"),
            "total_ms": final.get("total-time"),
            "downtime_ms": final.get("downtime"),
            "setup_ms": final.get("setup-time"),
            "bytes": ram.get("transferred"),
            "rounds": ram.get("dirty-sync-count"),
            "ram_normal_pages": ram.get("normal"),
            "ram_duplicate_pages": ram.get("duplicate"),
            "ram_skipped_pages": ram.get("skipped"),
            "mbps": ram.get("mbps"),
            "harness_ms": (t_done - t_start) * 1000.0,
            "src_cpu_ms": cpu_ms(src_cpu0, src_cpu1, src_vcpu),
            "dst_cpu_ms": cpu_ms(dst_cpu0, dst_cpu1, dst_vcpu),
            "src_vcpu_cpu_ms": (src_cpu1[1].get(src_vcpu, 0) - src_cpu0[1][src_vcpu]) if src_cpu1 else None,
            "stall_max_us": max(stall_src, stall_dst),
            "stall_source_us": stall_src,
            "stall_before_us": max((t[4] for t in pre_ticks), default=None),
            "stall_dst_first_us": stall_dst_first,
            "stall_dst_us": stall_dst,
            "hidden_ms": hidden_ms,
            "wall_stall_ms": stall_dst_first / 1000.0 + max(hidden_ms, 0.0),
            "event_downtime_ms": event_downtime_ms,
            "tick_source_last": last_src[2],
            "tick_dst_first": first[2],
            "source_ticks_during": [(t[2], t[4]) for t in src_ticks],
            "dst_ticks": [(t[2], t[4], t[5]) for t in dst_ticks],
            "corrupt_dst": max(t[5] for t in dst_ticks),
            "final": final,
            "ferry_downtime_breakdown_us": breakdown,
            "mode": mode,
            "dst_stall_hist": dst_hist,
            "dst_stall_median_us": hist_median_us(dst_hist),
            "dst_final": dst_final,
            "postcopy_blocktime_ms": (dst_final or {}).get("postcopy-blocktime"),
            "fault_latency": {k: v for k, v in latency.items() if k != "series"} if latency else None,
            "fault_series": latency.get("series") if latency else None,
            "fault_p50_us": latency.get("p50-us") if latency else None,
            "fault_max_us": latency.get("max-us") if latency else None,
        }
        try:
            qd.execute("quit")
        except vmm.QmpClosed:
            pass
        return res
    finally:
        for q in (qs, qd):
            if q:
                q.close()
        for v in (src, dst):
            if v:
                v.stop()
        shutil.rmtree(tmp, ignore_errors=True)


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

    cases = []
    t_bench = time.monotonic()
    for name, group, mem, cmdline in specs:
        case = {"name": name, "group": group, "mem_mib": mem, "cmdline": cmdline, "results": {k: {"runs": []} for k in kinds}}
        for r in range(args.runs):
            for kind in kinds:
                print(f"{name}: {kind} run {r + 1}/{args.runs} ...", end=" ", flush=True)
                res = one_migration(kind, mem, cmdline, args.mode, args.max_bandwidth, preempt=args.preempt)
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

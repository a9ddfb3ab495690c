"""Running one live migration of the test guest between two VMM processes (ferry, or QEMU
microvm), and reading what it did: the VMMs' own figures, the guest's tick and stall
lines, CPU time, fault latency. Shared by bench/migration/run.py and the lab
(bench/lab/ferry-lab).

The two VMMs may sit on two "hosts": a `Net` gives the argv prefix that runs a process
on each side (e.g. `ip netns exec NS`) and the destination's address; the default is
both on this host, over loopback."""
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

import vmm


@dataclass
class Net:
    """Where the source and the destination run, and the destination's address."""
    src_wrap: list = field(default_factory=list)
    dst_wrap: list = field(default_factory=list)
    dst_host: str = "127.0.0.1"


LOOPBACK = Net()

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


def start_pair(kind, mem_mb, cmdline, tmp, net=LOOPBACK, cpus=1, tls_dir=None):
    """(source Vm, destination Vm, source QMP path, destination QMP path, port).
    tls_dir: migrate over TLS with the X.509 credentials there (tls_certs.make_x509_dir)."""
    src_sock, dst_sock = os.path.join(tmp, "src.sock"), os.path.join(tmp, "dst.sock")
    if kind == "ferry":
        tls = ("--tls-creds", tls_dir) if tls_dir else ()
        dst = Vm([*net.dst_wrap, vmm.FERRY, "run", "--mem", f"{mem_mb}M", "--cpus", str(cpus), "--incoming",
                  f"tcp:{net.dst_host}:0", "--qmp", dst_sock, *tls], os.path.join(tmp, "dst.err"))
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
        src = Vm([*net.src_wrap, *vmm.ferry_cmd(mem_mb, cmdline, cpus=cpus, extra=("--qmp", src_sock, "--keep-source", *tls))],
                 os.path.join(tmp, "src.err"), env={"FERRY_LOG": "info"})
    else:
        port = vmm.free_tcp_port()

        def tls(endpoint):  # QEMU's migration property tls-creds set from the start, so -incoming listens with TLS
            return ("-object", f"tls-creds-x509,id=tls0,dir={tls_dir},endpoint={endpoint}",
                    "-global", "migration.tls-creds=tls0") if tls_dir else ()
        qmp_dst = ("-qmp", f"unix:{dst_sock},server=on,wait=off", "-incoming", f"tcp:{net.dst_host}:{port}", *tls("server"))
        dst = Vm([*net.dst_wrap, *vmm.qemu_cmd(mem_mb, cmdline, cpus=cpus, extra=qmp_dst)], os.path.join(tmp, "dst.err"))
        src = Vm([*net.src_wrap, *vmm.qemu_cmd(mem_mb, cmdline, cpus=cpus,
                                               extra=("-qmp", f"unix:{src_sock},server=on,wait=off", *tls("client")))],
                 os.path.join(tmp, "src.err"))
    return src, dst, src_sock, dst_sock, port


def one_migration(kind, mem_mb, cmdline, mode="precopy", max_bandwidth=None, after_ticks=3, preempt=False,
                  net=LOOPBACK, cpus=1, params=None, timeout_s=600, tls_dir=None):
    """Boots the guest on a source, migrates it (`mode`), and returns its figures (a dict);
    raises RuntimeError when it fails. `params`: more migrate-set-parameters (both VMMs);
    a migration still going after `timeout_s` fails (not converged)."""
    tmp = tempfile.mkdtemp(prefix=f"ferry-bench-mig-{kind}-")
    src = dst = qs = qd = None
    try:
        src, dst, src_sock, dst_sock, port = start_pair(kind, mem_mb, cmdline, tmp, net, cpus, tls_dir)
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
        extra_params = params
        params = {"downtime-limit": DOWNTIME_LIMIT_MS}
        if kind == "qemu":
            params["max-bandwidth"] = QEMU_NO_CAP
        if max_bandwidth:
            params["max-bandwidth"] = max_bandwidth
        params.update(extra_params or {})
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
        qs.cmd("migrate", {"uri": f"tcp:{net.dst_host}:{port}"})
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
            if time.monotonic() - t_start > timeout_s:
                raise RuntimeError(f"{kind}: migration still {r.get('status')} after {timeout_s} s (not converged)")
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



"""Shared helpers for ferry's benchmarks: launching ferry or QEMU microvm on the
test guest, reading its serial lines with timestamps, and measuring RSS."""
import hashlib
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("FERRY_BUILD_DIR", os.path.join(ROOT, "build"))
# An installed ferry-lab points these at the installed binaries (FERRY_BIN, FERRY_GUEST).
FERRY = os.environ.get("FERRY_BIN", os.path.join(BUILD, "ferry"))
GUEST = os.environ.get("FERRY_GUEST", os.path.join(BUILD, "guest", "ferry-testguest.elf"))
QEMU = "/usr/bin/qemu-system-x86_64"


def snapshot_binaries():
    """Runs copies of ferry and the test guest (other work in the tree may rebuild them
    meanwhile): points FERRY and GUEST at copies in a temporary folder and returns
    (folder, {"ferry"|"guest": {path, mtime, sha256_16}}); the caller removes the folder."""
    global FERRY, GUEST
    snap_dir = tempfile.mkdtemp(prefix="ferry-bench-bin-")
    binary = {}
    for attr in ("FERRY", "GUEST"):
        src_path = globals()[attr]
        dst_path = os.path.join(snap_dir, os.path.basename(src_path))
        shutil.copy2(src_path, dst_path)
        with open(dst_path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:16]
        binary[attr.lower()] = {"path": src_path, "mtime": time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                time.localtime(os.stat(src_path).st_mtime)), "sha256_16": digest}
        globals()[attr] = dst_path
    return snap_dir, binary


def run_facts(with_qemu, load_start, binary, commit, t_bench):
    """What every bench summary records about its run: QEMU's version (if it ran), the
    host's CPUs and load, the binaries measured, the git head, duration and time."""
    return {
        "qemu_version": subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        if with_qemu else None,
        "host": {"cpus": os.cpu_count(), "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "ferry_binary": binary,
        "git_head": commit,
        "bench_seconds": time.monotonic() - t_bench,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(path, summary):
    """Writes a bench's summary (creating its folder) and says where."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)
    print(f"wrote {path}")


def host_tsc_khz():
    """The host TSC rate, from what ferry hands the guest; QEMU guests get it on the command line."""
    out = subprocess.run([FERRY, "run", "--kernel", GUEST, "--mem", "16M", "--cmdline", "mode=idle ticks=1"],
                         capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"guest: tsc_khz=(\d+)", out)
    return int(m.group(1)) if m else None


def ferry_cmd(mem_mb, cmdline, cpus=1, extra=()):
    return [FERRY, "run", "--kernel", GUEST, "--mem", f"{mem_mb}M", "--cpus", str(cpus),
            "--cmdline", cmdline, *extra]


def qemu_cmd(mem_mb, cmdline, cpus=1, extra=(), machine_opts=""):
    """machine_opts: more microvm options, e.g. "acpi=off" (with ACPI on, QEMU 7.2 does not
    append virtio_mmio.device= entries to the command line; see qemu_blk_args)."""
    machine = "microvm,x-option-roms=off,rtc=off" + ("," + machine_opts if machine_opts else "")
    return [QEMU, "-M", machine, "-enable-kvm", "-cpu", "host,-arch-capabilities",
            "-m", f"{mem_mb}M", "-smp", str(cpus), "-nodefaults", "-no-user-config", "-nographic",
            "-serial", "stdio", "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
            "-kernel", GUEST, "-append", cmdline, *extra]


def qemu_blk_args(image, cache="writeback", aio="threads"):
    """QEMU arguments for one virtio-blk disk the test guest can drive: a modern (version 2)
    virtio-mmio transport (QEMU's default is legacy). Use with qemu_cmd(...,
    machine_opts="acpi=off"), so that microvm appends `virtio_mmio.device=512@0xfeb00e00:12`."""
    return ["-global", "virtio-mmio.force-legacy=false", "-device", "virtio-blk-device,drive=d0",
            "-drive", f"id=d0,file={image},format=raw,if=none,cache={cache},aio={aio}"]


class Guest:
    """A VMM process whose stdout (the guest console) is read line by line."""

    def __init__(self, argv):
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.buf = b""
        self.lines = []  # (seconds since start, text)

    def wait_line(self, pattern, timeout):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for i in range(seen, len(self.lines)):
                if rx.search(self.lines[i][1]):
                    return self.lines[i]
            seen = len(self.lines)
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.stdout is None:
                return None
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if not r:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            now = time.monotonic() - self.t0
            if not chunk:
                return None
            self.buf += chunk
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                self.lines.append((now, line.decode(errors="replace")))

    def rss_kib(self, exclude_at_least_kib):
        """(total RSS, RSS of mappings smaller than exclude_at_least_kib) in KiB: the second
        is the VMM's own memory, with guest RAM mappings left out."""
        total = own = 0
        size = 0
        with open(f"/proc/{self.proc.pid}/smaps") as f:
            for line in f:
                if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                    a, b = line.split()[0].split("-")
                    size = (int(b, 16) - int(a, 16)) // 1024
                elif line.startswith("Rss:"):
                    kib = int(line.split()[1])
                    total += kib
                    if size < exclude_at_least_kib:
                        own += kib
        return total, own

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def free_tcp_port():
    """A loopback TCP port that was free a moment ago (for QEMU's -incoming)."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QmpClosed(Exception):
    """The QMP server closed the connection (a ferry migration source exits once done)."""


class Qmp:
    """A minimal QMP client (stdlib only) for ferry's and QEMU's monitors on a UNIX socket.
    Events that arrive while waiting for a reply are kept, in order, in self.events, each
    with the host monotonic time it was read at under the key "_read_at"."""

    def __init__(self, path, timeout=30.0, negotiate=True):
        import socket
        deadline = time.monotonic() + timeout
        while True:  # the VMM creates the socket shortly after it starts
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.events = []
        self.greeting = self._recv()
        if negotiate:
            self.cmd("qmp_capabilities")

    def _recv(self):
        import json
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except OSError as e:
                raise QmpClosed(str(e)) from e
            if not chunk:
                raise QmpClosed("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, name, arguments=None):
        """The whole reply ({"return": ...} or {"error": ...})."""
        import json
        req = {"execute": name}
        if arguments is not None:
            req["arguments"] = arguments
        try:
            self.sock.sendall(json.dumps(req).encode() + b"\n")
        except OSError as e:
            raise QmpClosed(str(e)) from e
        while True:
            msg = self._recv()
            if "event" in msg:
                msg["_read_at"] = time.monotonic()
                self.events.append(msg)
                continue
            return msg

    def cmd(self, name, arguments=None):
        """The reply's return value; an error reply raises RuntimeError."""
        reply = self.execute(name, arguments)
        if "error" in reply:
            raise RuntimeError(f"QMP {name}: {reply['error']}")
        return reply.get("return")

    def drain(self):
        """Read what is left until the server closes the connection (keeps the events)."""
        try:
            while True:
                msg = self._recv()
                if "event" in msg:
                    msg["_read_at"] = time.monotonic()
                    self.events.append(msg)
        except (QmpClosed, OSError, ValueError):
            pass

    def event(self, name):
        for e in self.events:
            if e.get("event") == name:
                return e
        return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

"""Shared helpers for ferry's benchmarks: launching ferry or QEMU microvm on the
test guest, reading its serial lines with timestamps, and measuring RSS."""
import os
import re
import select
import subprocess
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("FERRY_BUILD_DIR", os.path.join(ROOT, "build"))
FERRY = os.path.join(BUILD, "ferry")
GUEST = os.path.join(BUILD, "guest", "ferry-testguest.elf")
QEMU = "/usr/bin/qemu-system-x86_64"


def host_tsc_khz():
    """The host TSC rate, from what ferry hands the guest; QEMU guests get it on the command line."""
    out = subprocess.run([FERRY, "run", "--kernel", GUEST, "--mem", "16M", "--cmdline", "mode=idle ticks=1"],
                         capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"guest: tsc_khz=(\d+)", out)
    return int(m.group(1)) if m else None


def ferry_cmd(mem_mb, cmdline, cpus=1, extra=()):
    return [FERRY, "run", "--kernel", GUEST, "--mem", f"{mem_mb}M", "--cpus", str(cpus),
            "--cmdline", cmdline, *extra]


def qemu_cmd(mem_mb, cmdline, cpus=1, extra=()):
    return [QEMU, "-M", "microvm,x-option-roms=off,rtc=off", "-enable-kvm", "-cpu", "host",
            "-m", f"{mem_mb}M", "-smp", str(cpus), "-nodefaults", "-no-user-config", "-nographic",
            "-serial", "stdio", "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
            "-kernel", GUEST, "-append", cmdline, *extra]


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

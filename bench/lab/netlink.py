"""Two "hosts" on one machine: two network namespaces joined by a veth pair, each end
with its own address, the link shaped with tc netem (rate, delay, loss) on both ends.
Nothing is routed outside: the namespaces have no other interface. Needs root.

    with TwoHosts(link) as hosts:
        hosts.src_wrap, hosts.dst_wrap   # argv prefixes: run a process on that host
        hosts.dst_host                   # the destination's address
"""
import os
import subprocess

from scenario import parse_ms, parse_percent, parse_rate_bits

SRC_ADDR, DST_ADDR = "10.199.0.1", "10.199.0.2"


class LabError(Exception):
    pass


def need_root():
    if os.geteuid() != 0:
        raise LabError("the lab builds network namespaces and shapes a link with tc: run it as root (sudo)")
    for tool in ("ip", "tc"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            raise LabError(f"'{tool}' is missing (Debian: iproute2)")


def qdisc_args(link):
    """The tc qdisc (after `root`) that shapes a link, or [] when it needs none: tbf for a
    rate alone (in every kernel that has tc), netem when there is a delay or a loss."""
    rate = parse_rate_bits(link["rate"])
    delay = parse_ms(link["delay"])
    loss = parse_percent(link["loss"])
    if delay == 0 and loss == 0:
        if rate is None:
            return []
        # A burst of 10 ms at the rate (at least 64 KiB), and at most 50 ms queued.
        burst = max(rate // 8 // 100, 64 * 1024)
        return ["tbf", "rate", f"{rate}bit", "burst", str(burst), "latency", "50ms"]
    args = ["netem"]
    if rate is not None:
        args += ["rate", f"{rate}bit"]
    if delay > 0:
        args += ["delay", f"{delay}ms"]
    if loss > 0:
        args += ["loss", f"{loss}%"]
    # Room for a bandwidth-delay product of a 10 Gbit link with some delay.
    return args + ["limit", "100000"]


class TwoHosts:
    def __init__(self, link, tag=None):
        tag = tag or str(os.getpid())
        self.link = link
        self.src_ns, self.dst_ns = f"ferrylab-{tag}-src", f"ferrylab-{tag}-dst"
        self.veth = (f"flab{tag}a"[:15], f"flab{tag}b"[:15])
        self.src_wrap = ["ip", "netns", "exec", self.src_ns]
        self.dst_wrap = ["ip", "netns", "exec", self.dst_ns]
        self.dst_host = DST_ADDR
        self.made = []

    def _run(self, *args, ns=None):
        """Runs a command here, or in namespace `ns`; LabError with its stderr when it fails."""
        argv = (["ip", "netns", "exec", ns] if ns else []) + list(args)
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            raise LabError(f"{' '.join(argv)}: {r.stderr.strip()}")

    def __enter__(self):
        try:
            for ns in (self.src_ns, self.dst_ns):
                self._run("ip", "netns", "add", ns)
                self.made.append(ns)
            a, b = self.veth
            self._run("ip", "link", "add", a, "netns", self.src_ns, "type", "veth", "peer", "name", b, "netns", self.dst_ns)
            for ns, dev, addr in ((self.src_ns, a, SRC_ADDR), (self.dst_ns, b, DST_ADDR)):
                # Each run's connections start afresh: no TCP metrics (ssthresh, RTT) saved
                # from the run before to the same address, which made one run's losses slow
                # the next one's start (a 200 ms retransmission timeout).
                self._run("sh", "-c", "echo 1 > /proc/sys/net/ipv4/tcp_no_metrics_save", ns=ns)
                self._run("ip", "link", "set", "lo", "up", ns=ns)
                self._run("ip", "addr", "add", f"{addr}/30", "dev", dev, ns=ns)
                self._run("ip", "link", "set", dev, "up", ns=ns)
                shape = qdisc_args(self.link)
                if shape:
                    try:
                        self._run("tc", "qdisc", "add", "dev", dev, "root", *shape, ns=ns)
                    except LabError as e:
                        if shape[0] == "netem":
                            raise LabError(f"{e}: a delay or a loss needs tc netem, which this kernel lacks "
                                           "(CONFIG_NET_SCH_NETEM, module sch_netem)") from None
                        raise
        except BaseException:
            self.close()
            raise
        return self

    def close(self):
        """Deletes the namespaces (and with them the veth pair and its qdiscs)."""
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.made = []

    def __exit__(self, *exc):
        self.close()
        return False


def leftovers():
    """Namespaces an interrupted lab left behind (there should be none)."""
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [line.split()[0] for line in r.stdout.splitlines() if line.startswith("ferrylab-")]

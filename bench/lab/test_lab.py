"""Unit tests of ferry-lab's logic (no root, no VMs): scenarios, the matrix, the link's
qdisc, result rows, percentiles, histograms, the summary and the plot data.
Run: python3 -m unittest discover -s bench/lab -p 'test_*.py'"""
import os
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import netlink  # noqa: E402
import report  # noqa: E402
import scenario  # noqa: E402


def write(text):
    f = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    f.write(text)
    f.close()
    return f.name


class ScenarioTest(unittest.TestCase):
    def load_text(self, text):
        path = write(text)
        try:
            return scenario.load(path)
        finally:
            os.unlink(path)

    def error(self, text):
        with self.assertRaises(scenario.ScenarioError) as cm:
            self.load_text(text)
        return str(cm.exception)

    def test_presets_load(self):
        for name in ("smoke", "talk", "full"):
            sc = scenario.load(os.path.join(HERE, "scenarios", f"{name}.toml"))
            self.assertEqual(sc["name"], name)
            self.assertTrue(scenario.runs(sc))

    def test_defaults_and_matrix(self):
        sc = self.load_text('mode = ["precopy", "postcopy"]\ndirty_rate = ["0", "50M"]\nrepetitions = 2\n'
                            '[[link]]\nrate = "1gbit"\n[[link]]\nrate = "10gbit"\ndelay = "1ms"\n')
        runs = scenario.runs(sc)
        # 2 reps x 2 links x 2 modes x 2 rates x 2 VMMs
        self.assertEqual(len(runs), 32)
        self.assertEqual([r["vmm"] for r in runs[:2]], ["ferry", "qemu"])  # side by side
        self.assertEqual({r["link_name"] for r in runs}, {"1gbit", "10gbit+1ms"})
        self.assertEqual(runs[0]["repetition"], 1)
        self.assertEqual(runs[-1]["repetition"], 2)

    def test_errors_name_the_key(self):
        self.assertIn("unknown key(s) modes", self.error('modes = ["precopy"]\n'))
        self.assertIn("'vmm': 'kvmtool' is not one of", self.error('vmm = ["kvmtool"]\n'))
        self.assertIn("'mem': '12Q' is not a size", self.error('mem = ["12Q"]\n'))
        self.assertIn("'repetitions': '0' is not a positive", self.error("repetitions = 0\n"))
        self.assertIn("link 1: 'fast' is not a link rate", self.error('[[link]]\nrate = "fast"\n'))
        self.assertIn("link 1: unknown key(s) jitter", self.error('[[link]]\njitter = "1ms"\n'))
        self.assertIn("'101%' is not a loss rate", self.error('[[link]]\nloss = "101%"\n'))
        self.assertIn("params: unknown x-max-rounds", self.error("[params]\nx-max-rounds = 3\n"))
        self.assertIn("does not fit", self.error('mem = ["64M"]\nwss = ["64M"]\n'))
        self.assertIn("not valid TOML", self.error("mode = [\n"))
        self.assertIn("'mode' is empty", self.error("mode = []\n"))

    def test_missing_file(self):
        with self.assertRaises(scenario.ScenarioError) as cm:
            scenario.load("/nonexistent/scenario.toml")
        self.assertIn("No such file", str(cm.exception))

    def test_units(self):
        self.assertEqual(scenario.parse_size("256M"), 256 << 20)
        self.assertEqual(scenario.parse_size("1g"), 1 << 30)
        self.assertEqual(scenario.parse_rate_bits("10gbit"), 10**10)
        self.assertIsNone(scenario.parse_rate_bits("unlimited"))
        self.assertEqual(scenario.parse_ms("0.5ms"), 0.5)

    def test_guest_cmdline(self):
        run = {"workload": "verify", "wss": "64M", "dirty_rate": "0", "cpus": 2}
        self.assertEqual(scenario.guest_cmdline(run), "mode=verify wss=64M rate=0 cpus=2")


class LinkTest(unittest.TestCase):
    def test_qdisc(self):
        self.assertEqual(netlink.qdisc_args({"rate": "unlimited", "delay": "0ms", "loss": "0%"}), [])
        tbf = netlink.qdisc_args({"rate": "1gbit", "delay": "0ms", "loss": "0%"})
        self.assertEqual(tbf[:3], ["tbf", "rate", "1000000000bit"])
        self.assertGreaterEqual(int(tbf[tbf.index("burst") + 1]), 64 * 1024)
        netem = netlink.qdisc_args({"rate": "10gbit", "delay": "1ms", "loss": "0.1%"})
        self.assertEqual(netem[0], "netem")
        self.assertIn("delay", netem)
        self.assertIn("loss", netem)


def sample_row(vmm, mode, total, stall_us, ok=True, hist=None, series=None, rep=1):
    run = {"scenario": "t", "repetition": rep, "vmm": vmm, "mode": mode, "mem": "256M", "wss": "32M",
           "dirty_rate": "8M", "cpus": 1, "workload": "verify", "link": {"rate": "1gbit"}, "link_name": "1gbit",
           "params": {}}
    res = {"total_ms": total, "downtime_ms": 1, "bytes": 1 << 20, "stall_max_us": stall_us, "corrupt_dst": 0,
           "dst_stall_hist": hist or {16: 3, 64: 1}, "fault_series": series,
           "fault_latency": {"p50-us": 100, "max-us": 900} if series else None}
    return report.row(run, res if ok else None, None if ok else "boom")


class ReportTest(unittest.TestCase):
    def test_percentile(self):
        self.assertIsNone(report.percentile([], 0.5))
        self.assertEqual(report.percentile([5, 1, 3], 0.5), 3)
        self.assertEqual(report.percentile([1, 2, 3, 4], 1.0), 4)
        self.assertEqual(report.percentile([1, 2, 3, 4], 0.0), 1)

    def test_hist_cdf(self):
        cdf = report.hist_cdf({"64": 1, "16": 3})
        self.assertEqual(cdf, [(16, 0.75), (64, 1.0)])
        self.assertEqual(report.hist_cdf({}), [])
        self.assertEqual(report.merge_hists([{"16": 1}, {16: 2, 32: 1}]), {16: 3, 32: 1})

    def test_row_keeps_the_scenario_and_marks_failures(self):
        r = sample_row("ferry", "precopy", 300, 1000)
        self.assertTrue(r["ok"])
        self.assertEqual(r["vmm"], "ferry")
        self.assertEqual(r["total_ms"], 300)
        bad = report.row({"vmm": "qemu"}, None, "qemu: migration still active after 30 s (not converged)")
        self.assertFalse(bad["ok"])
        self.assertFalse(bad["converged"])

    def test_summary_and_markdown(self):
        rows = [sample_row("ferry", "precopy", t, 2000, rep=i) for i, t in enumerate((100, 300, 200))]
        rows.append(sample_row("qemu", "precopy", 500, 4000))
        rows.append(sample_row("qemu", "precopy", 0, 0, ok=False, rep=2))
        s = report.summarize(rows)
        key = (("1gbit", "precopy", "256M", "32M", "8M", 1), "ferry")
        self.assertEqual(s[key]["total_ms"], (200, 100, 300))
        self.assertEqual(s[(key[0], "qemu")]["failed"], 1)
        md = report.markdown(rows, "t")
        self.assertIn("| 1gbit | precopy | 256M | 32M | 8M | 1 | ferry | 3/3 | 200 (100-300) |", md)
        self.assertIn("| qemu | 1/2 |", md)
        self.assertIn("Failed runs:", md)

    def test_plot_data(self):
        rows = [sample_row("ferry", "postcopy", 400, 3000, series=[[1000, 0x1000, 250], [2000000, 0x2000, 1500]]),
                sample_row("qemu", "postcopy", 300, 2000)]
        latency, bars, cdf = report.plot_data(rows)
        self.assertEqual(latency["ferry postcopy 1gbit 8M/s"], [(0.001, 0.25), (2.0, 1.5)])
        self.assertEqual(bars[("postcopy", "8M", "1gbit")], {"ferry": (400, 3.0), "qemu": (300, 2.0)})
        self.assertEqual(cdf["qemu postcopy"][-1][1], 1.0)

    def test_incomplete(self):
        full = sample_row("ferry", "postcopy", 400, 3000, series=[[1, 2, 3]])
        self.assertEqual(report.incomplete([full]), [])
        qemu = sample_row("qemu", "postcopy", 300, 2000)
        self.assertEqual(report.incomplete([qemu]), ["qemu postcopy 1gbit #1: postcopy_blocktime_ms"])
        self.assertIn("(failed)", report.incomplete([sample_row("ferry", "precopy", 0, 0, ok=False)])[0])

    def test_jsonl_round_trip(self):
        rows = [sample_row("ferry", "precopy", 100, 1000)]
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "r.jsonl")
            report.write_jsonl(p, rows)
            self.assertEqual(report.read_jsonl(p)[0]["total_ms"], 100)


if __name__ == "__main__":
    unittest.main()

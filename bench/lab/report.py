"""The lab's results: one JSON line per run (the scenario row, then what it measured),
a Markdown summary (median and range per case), and the plots (PNG, matplotlib)."""
import json
import os
import statistics

# Result fields kept in each JSON line, from migration_run.one_migration's dict.
FIELDS = ("status", "total_ms", "downtime_ms", "setup_ms", "bytes", "rounds", "mbps", "stall_max_us",
          "stall_dst_first_us", "wall_stall_ms", "dst_stall_hist", "dst_stall_median_us", "postcopy_blocktime_ms",
          "fault_latency", "fault_series", "corrupt_dst", "event_downtime_ms", "src_cpu_ms", "dst_cpu_ms")


def row(run, result=None, error=None, facts=None):
    """The JSON line of one run: the scenario row, then its figures (or its error)."""
    out = dict(run)
    out["ok"] = error is None
    out["converged"] = error is None or "not converged" not in error
    if error is not None:
        out["error"] = error
    for k in FIELDS:
        out[k] = (result or {}).get(k)
    if out.get("dst_stall_hist"):
        out["dst_stall_hist"] = {str(k): v for k, v in sorted(out["dst_stall_hist"].items())}
    out.update(facts or {})
    return out


REQUIRED = ("total_ms", "downtime_ms", "bytes", "stall_max_us", "corrupt_dst", "dst_stall_hist")


def incomplete(rows):
    """What each row lacks of the figures every run must have: ["ferry postcopy #1: fault_latency", ...]."""
    out = []
    for r in rows:
        need = list(REQUIRED)
        if r["mode"] != "precopy":
            need.append("fault_latency" if r["vmm"] == "ferry" else "postcopy_blocktime_ms")
        missing = [k for k in need if r.get(k) is None]
        if not r.get("ok"):
            missing = ["(failed)"]
        if missing:
            out.append(f"{r['vmm']} {r['mode']} {r['link_name']} #{r['repetition']}: {', '.join(missing)}")
    return out


def percentile(values, q):
    """The q-th percentile (0..1) by the nearest rank; None for no values."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    i = min(len(vals) - 1, max(0, int(round(q * (len(vals) - 1)))))
    return vals[i]


def hist_cdf(hist):
    """[(bucket_us, fraction of stalls at or below it)] from a {bucket_us: count} histogram
    (the test guest's: bucket b counts gaps from b to 2b us)."""
    items = sorted((int(b), n) for b, n in hist.items())
    total = sum(n for _, n in items)
    if not total:
        return []
    out, seen = [], 0
    for b, n in items:
        seen += n
        out.append((b, seen / total))
    return out


def merge_hists(hists):
    out = {}
    for h in hists:
        for b, n in (h or {}).items():
            out[int(b)] = out.get(int(b), 0) + n
    return out


def case_key(r):
    return (r["link_name"], r["mode"], r["mem"], r["wss"], r["dirty_rate"], r["cpus"])


def summarize(rows):
    """{(case, vmm): {"runs", "failed", metric: (median, min, max)}} over the successful runs."""
    groups = {}
    for r in rows:
        g = groups.setdefault((case_key(r), r["vmm"]), {"rows": []})
        g["rows"].append(r)
    out = {}
    for key, g in groups.items():
        ok = [r for r in g["rows"] if r["ok"]]
        s = {"runs": len(g["rows"]), "failed": len(g["rows"]) - len(ok),
             "corrupt": max((r.get("corrupt_dst") or 0 for r in ok), default=0)}
        metrics = {"total_ms": lambda r: r.get("total_ms"), "downtime_ms": lambda r: r.get("downtime_ms"),
                   "stall_ms": lambda r: (r.get("stall_max_us") or 0) / 1000 if r.get("stall_max_us") is not None else None,
                   "fault_p50_us": lambda r: (r.get("fault_latency") or {}).get("p50-us"),
                   "fault_max_us": lambda r: (r.get("fault_latency") or {}).get("max-us"),
                   "blocktime_ms": lambda r: r.get("postcopy_blocktime_ms")}
        for name, get in metrics.items():
            vals = [v for v in (get(r) for r in ok) if v is not None]
            s[name] = (statistics.median(vals), min(vals), max(vals)) if vals else None
        out[key] = s
    return out


def _cell(v, fmt="{:.0f}"):
    if v is None:
        return "-"
    med, lo, hi = v
    if fmt.format(lo) == fmt.format(hi):
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(lo)}-{fmt.format(hi)})"


def markdown(rows, title):
    """The summary table: one line per case and VMM, medians with (min-max)."""
    lines = [f"# {title}", "", "Medians, with (min-max) over the repetitions. Stall: the longest gap the guest itself saw "
             "(max_stall_us of its tick lines, source and destination). Fault latency: ferry's per-fault figures "
             "(QEMU reports only blocktime).", "",
             "| link | mode | RAM | wss | dirty rate | vCPUs | VMM | runs | total ms | downtime ms | max stall ms | "
             "fault p50 us | fault max us | blocktime ms | corrupt |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (case, vmm), s in sorted(summarize(rows).items()):
        link, mode, mem, wss, rate, cpus = case
        runs = f"{s['runs'] - s['failed']}/{s['runs']}"
        lines.append(f"| {link} | {mode} | {mem} | {wss} | {rate} | {cpus} | {vmm} | {runs} | {_cell(s['total_ms'])} | "
                     f"{_cell(s['downtime_ms'])} | {_cell(s['stall_ms'], '{:.1f}')} | {_cell(s['fault_p50_us'])} | "
                     f"{_cell(s['fault_max_us'])} | {_cell(s['blocktime_ms'])} | {s['corrupt']} |")
    failed = [r for r in rows if not r["ok"]]
    if failed:
        lines += ["", "Failed runs:", ""]
        lines += [f"- {r['vmm']} {r['mode']} {r['link_name']} {r['mem']} rate {r['dirty_rate']} #{r['repetition']}: "
                  f"{r.get('error')}" for r in failed]
    return "\n".join(lines) + "\n"


def plot_data(rows):
    """What the plots draw, computed apart from matplotlib (unit-tested):
    latency: {label: [(seconds since postcopy began, latency ms)]} for ferry's postcopy runs;
    bars: {(mode, dirty_rate, link): {vmm: (median total ms, median max stall ms)}};
    cdf: {label: [(stall us, fraction)]} per VMM and mode."""
    latency, bars, cdf = {}, {}, {}
    for r in rows:
        if not r["ok"]:
            continue
        label = f"{r['vmm']} {r['mode']} {r['link_name']} {r['dirty_rate']}/s"
        for at_us, _gpa, lat_us in r.get("fault_series") or []:
            latency.setdefault(label, []).append((at_us / 1e6, lat_us / 1000))
    for (case, vmm), s in summarize(rows).items():
        link, mode, _mem, _wss, rate, _cpus = case
        if s["total_ms"] is None:
            continue
        bars.setdefault((mode, rate, link), {})[vmm] = (s["total_ms"][0], s["stall_ms"][0] if s["stall_ms"] else 0)
    by = {}
    for r in rows:
        if r["ok"] and r.get("dst_stall_hist"):
            by.setdefault(f"{r['vmm']} {r['mode']}", []).append(r["dst_stall_hist"])
    for label, hists in by.items():
        cdf[label] = hist_cdf(merge_hists(hists))
    return latency, bars, cdf


def plots(rows, out_dir):
    """Writes fault-latency.png, total-and-stall.png and stall-cdf.png; returns their paths
    ([] and a reason when matplotlib is missing)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is missing (Debian: python3-matplotlib); no plots"
    latency, bars, cdf = plot_data(rows)
    paths = []
    # QEMU has no per-fault figures: both VMMs' blocktime (the time during which every
    # vCPU waited on a fault), median per case, goes in a box beside the points.
    blocktime = {}
    for r in rows:
        if r["ok"] and r.get("postcopy_blocktime_ms") is not None:
            blocktime.setdefault(f"{r['vmm']} {r['mode']} {r['link_name']} {r['dirty_rate']}/s", []).append(r["postcopy_blocktime_ms"])

    fig, ax = plt.subplots(figsize=(10, 5))
    for label, pts in sorted(latency.items()):
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=4, label=label)
    if blocktime:
        text = "blocktime, median ms\n" + "\n".join(f"{k}: {statistics.median(v):.0f}" for k, v in sorted(blocktime.items()))
        ax.text(1.02, 1.0, text, transform=ax.transAxes, fontsize=7, va="top", family="monospace")
    ax.set_xlabel("seconds since postcopy began")
    ax.set_ylabel("userfault latency, ms (fault to page placed)")
    ax.set_yscale("log")
    ax.set_title("Postcopy userfault latency")
    if latency:
        ax.legend(fontsize=7, loc="lower right")
    paths.append(os.path.join(out_dir, "fault-latency.png"))
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 5))
    keys = sorted(bars)
    vmms = sorted({v for k in keys for v in bars[k]})
    width = 0.8 / max(1, len(vmms))
    for i, vmm in enumerate(vmms):
        xs = [j + i * width for j in range(len(keys))]
        a1.bar(xs, [bars[k].get(vmm, (0, 0))[0] for k in keys], width, label=vmm)
        a2.bar(xs, [bars[k].get(vmm, (0, 0))[1] for k in keys], width, label=vmm)
    for a, ylabel in ((a1, "total migration time, ms"), (a2, "max guest-perceived stall, ms")):
        a.set_xticks([j + width * (len(vmms) - 1) / 2 for j in range(len(keys))])
        a.set_xticklabels([f"{m}\n{r}/s\n{link}" for m, r, link in keys], fontsize=7)
        a.set_ylabel(ylabel)
        a.legend()
    fig.suptitle("Total time and perceived stall per mode and dirty rate (medians)")
    paths.append(os.path.join(out_dir, "total-and-stall.png"))
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 5))
    for label, pts in sorted(cdf.items()):
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("guest-perceived stall, us (lower bound of the guest's log2 bucket)")
    ax.set_ylabel("fraction of stalls")
    ax.set_title("CDF of the stalls the guest saw on the destination")
    if cdf:
        ax.legend(fontsize=8)
    paths.append(os.path.join(out_dir, "stall-cdf.png"))
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths, None


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]

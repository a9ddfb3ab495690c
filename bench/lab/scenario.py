"""Lab scenarios: a TOML file that sets the matrix of migrations to run, checked whole
before anything starts (a bad file gets one clear message naming the key), and its
expansion into runs.

    name = "smoke"
    repetitions = 1
    vmm = ["ferry", "qemu"]            # ferry, qemu
    mode = ["precopy", "postcopy"]     # precopy, postcopy, hybrid
    mem = ["256M"]                     # guest RAM
    wss = ["64M"]                      # the test guest's working set
    dirty_rate = ["0", "16M"]          # bytes/s the guest rewrites of it (0: none)
    cpus = [1]
    workload = "verify"                # verify (every page checked) or dirty
    timeout = 300                      # s: a migration still going then is "not converged"
    [[link]]                           # one or more; each a shaped veth between two namespaces
    rate = "1gbit"                     # Nkbit|Nmbit|Ngbit, or "unlimited"
    delay = "0ms"                      # one way, each direction
    loss = "0%"
    [params]                           # migrate-set-parameters for both VMMs
    downtime-limit = 300
"""
import itertools
import re
import tomllib

VMMS = ("ferry", "qemu")
MODES = ("precopy", "postcopy", "hybrid")
WORKLOADS = ("verify", "dirty")
KEYS = {"name", "repetitions", "vmm", "mode", "mem", "wss", "dirty_rate", "cpus", "workload", "timeout", "link", "params"}
LINK_KEYS = {"rate", "delay", "loss"}
PARAMS = {"downtime-limit", "max-bandwidth", "max-postcopy-bandwidth"}


class ScenarioError(Exception):
    """A scenario that cannot run; the message names the file and the key."""


def parse_size(text):
    """'256M' -> bytes (K, M, G: powers of 1024; a plain number is bytes)."""
    m = re.fullmatch(r"(\d+)([KMG]?)", str(text).strip(), re.IGNORECASE)
    if not m:
        raise ValueError(f"'{text}' is not a size (e.g. 256M, 1G)")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2).upper()]


def parse_rate_bits(text):
    """'1gbit' -> bits/s; 'unlimited' -> None."""
    t = str(text).strip().lower()
    if t == "unlimited":
        return None
    m = re.fullmatch(r"(\d+)(kbit|mbit|gbit)", t)
    if not m:
        raise ValueError(f"'{text}' is not a link rate (e.g. 1gbit, 10gbit, 100mbit, unlimited)")
    return int(m.group(1)) * {"kbit": 10**3, "mbit": 10**6, "gbit": 10**9}[m.group(2)]


def parse_ms(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)ms", str(text).strip())
    if not m:
        raise ValueError(f"'{text}' is not a delay (e.g. 0ms, 0.5ms)")
    return float(m.group(1))


def parse_percent(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)%", str(text).strip())
    if not m or float(m.group(1)) > 100:
        raise ValueError(f"'{text}' is not a loss rate (e.g. 0%, 0.1%)")
    return float(m.group(1))


def _list(doc, key, default, check, where):
    v = doc.get(key, default)
    if not isinstance(v, list):
        v = [v]
    if not v:
        raise ScenarioError(f"{where}: '{key}' is empty")
    out = []
    for x in v:
        try:
            out.append(check(x))
        except (ValueError, TypeError) as e:
            raise ScenarioError(f"{where}: '{key}': {e}") from None
    return out


def _one_of(choices):
    def check(x):
        if x not in choices:
            raise ValueError(f"'{x}' is not one of {', '.join(choices)}")
        return x
    return check


def _positive_int(x):
    if not isinstance(x, int) or isinstance(x, bool) or x < 1:
        raise ValueError(f"'{x}' is not a positive integer")
    return x


def _size_text(x):
    parse_size(x)
    return str(x)


def load(path):
    """The scenario in `path`, checked; ScenarioError says what is wrong."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ScenarioError(f"{path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: not valid TOML: {e}") from None
    return check(doc, path)


def check(doc, where="scenario"):
    unknown = set(doc) - KEYS
    if unknown:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(KEYS))})")
    sc = {
        "name": str(doc.get("name", "scenario")),
        "repetitions": _list(doc, "repetitions", 1, _positive_int, where)[0],
        "vmm": _list(doc, "vmm", ["ferry", "qemu"], _one_of(VMMS), where),
        "mode": _list(doc, "mode", ["precopy"], _one_of(MODES), where),
        "mem": _list(doc, "mem", ["256M"], _size_text, where),
        "wss": _list(doc, "wss", ["64M"], _size_text, where),
        "dirty_rate": _list(doc, "dirty_rate", ["0"], _size_text, where),
        "cpus": _list(doc, "cpus", [1], _positive_int, where),
        "workload": _list(doc, "workload", "verify", _one_of(WORKLOADS), where)[0],
        "timeout": _list(doc, "timeout", 300, _positive_int, where)[0],
    }
    links = doc.get("link", [{"rate": "unlimited"}])
    if isinstance(links, dict):
        links = [links]
    if not isinstance(links, list) or not links:
        raise ScenarioError(f"{where}: 'link' must be one or more [[link]] tables")
    sc["link"] = []
    for i, link in enumerate(links):
        lw = f"{where}: link {i + 1}"
        if not isinstance(link, dict):
            raise ScenarioError(f"{lw}: not a table")
        bad = set(link) - LINK_KEYS
        if bad:
            raise ScenarioError(f"{lw}: unknown key(s) {', '.join(sorted(bad))} (known: {', '.join(sorted(LINK_KEYS))})")
        try:
            parsed = {"rate": str(link.get("rate", "unlimited")), "delay": str(link.get("delay", "0ms")),
                      "loss": str(link.get("loss", "0%"))}
            parse_rate_bits(parsed["rate"])
            parse_ms(parsed["delay"])
            parse_percent(parsed["loss"])
        except ValueError as e:
            raise ScenarioError(f"{lw}: {e}") from None
        sc["link"].append(parsed)
    params = doc.get("params", {})
    if not isinstance(params, dict):
        raise ScenarioError(f"{where}: 'params' must be a table")
    bad = set(params) - PARAMS
    if bad:
        raise ScenarioError(f"{where}: params: unknown {', '.join(sorted(bad))} (known: {', '.join(sorted(PARAMS))})")
    for k, v in params.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ScenarioError(f"{where}: params: '{k}' must be a non-negative integer")
    sc["params"] = dict(params)
    for mem in sc["mem"]:
        for wss in sc["wss"]:
            if parse_size(wss) >= parse_size(mem):
                raise ScenarioError(f"{where}: the working set {wss} does not fit in guest RAM {mem}")
    return sc


def link_name(link):
    """'1gbit', '10gbit+1ms', 'unlimited+0.1%loss'."""
    name = link["rate"]
    if parse_ms(link["delay"]) > 0:
        name += f"+{link['delay']}"
    if parse_percent(link["loss"]) > 0:
        name += f"+{link['loss']}loss"
    return name


def runs(sc):
    """Every run of the matrix, as dicts, in the order they run: each repetition goes
    through the whole matrix, ferry and QEMU side by side for each case."""
    out = []
    cases = itertools.product(sc["link"], sc["mode"], sc["mem"], sc["wss"], sc["dirty_rate"], sc["cpus"])
    cases = list(cases)
    for rep in range(sc["repetitions"]):
        for link, mode, mem, wss, rate, cpus in cases:
            for vmm in sc["vmm"]:
                out.append({"scenario": sc["name"], "repetition": rep + 1, "vmm": vmm, "mode": mode, "mem": mem,
                            "wss": wss, "dirty_rate": rate, "cpus": cpus, "workload": sc["workload"],
                            "link": dict(link), "link_name": link_name(link), "params": dict(sc["params"])})
    return out


def guest_cmdline(run):
    """The test guest's command line for a run."""
    rate = "0" if parse_size(run["dirty_rate"]) == 0 else run["dirty_rate"]
    line = f"mode={run['workload']} wss={run['wss']} rate={rate}"
    if run["cpus"] > 1:
        line += f" cpus={run['cpus']}"
    return line

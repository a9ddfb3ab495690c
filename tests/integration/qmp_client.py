#!/usr/bin/env python3
"""A stdlib-only QMP client that checks ferry's monitor the way any QMP tool would use it.

Run by tests/integration/qmp_test.cpp against a running `ferry run --qmp PATH`:

    qmp_client.py SOCKET protocol          greeting, negotiation, every bad input, id echo
    qmp_client.py SOCKET stop              two clients see STOP; query-status says paused
    qmp_client.py SOCKET cont              RESUME; query-status says running
    qmp_client.py SOCKET cpus N PID        query-cpus-fast: N vCPUs, distinct TIDs of PID
    qmp_client.py SOCKET memory            ferry-query-memory answers with the RAM regions
    qmp_client.py SOCKET quit              {} then SHUTDOWN host-qmp-quit, then EOF
    qmp_client.py SOCKET slow              a client that never reads is dropped, others go on
    qmp_client.py SOCKET shutdown REASON GUEST [SECONDS]
                                           prints "ready" once negotiated, then expects
                                           SHUTDOWN with that reason and guest flag
                                           within SECONDS (default 120)

Exit status 0 when every check holds; otherwise 1 with the failed check on stderr.
"""

import json
import os
import random
import socket
import sys
import time

TIMEOUT = 60.0


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


class Qmp:
    def __init__(self, path, negotiate=True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(path)
        self.buf = b""
        self.events = []
        self.greeting = self.recv()
        if negotiate:
            check(self.cmd("qmp_capabilities") == {"return": {}}, "qmp_capabilities returns {}")

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def recv(self):
        """The next message, event or not."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Failure("the server closed the connection; unparsed: %r" % self.buf[:200])
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def reply(self):
        """The next reply; events on the way are kept in self.events."""
        while True:
            msg = self.recv()
            if "event" in msg:
                check("timestamp" in msg and set(msg["timestamp"]) == {"seconds", "microseconds"},
                      "event has a timestamp: %r" % msg)
                self.events.append(msg)
                continue
            return msg

    def cmd(self, name, arguments=None, **extra):
        req = {"execute": name}
        if arguments is not None:
            req["arguments"] = arguments
        req.update(extra)
        self.send_raw(json.dumps(req).encode() + b"\n")
        return self.reply()

    def wait_event(self, name, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name:
                    return self.events.pop(i)
            check(time.monotonic() < deadline, "event %s within %ss" % (name, timeout))
            msg = self.recv()
            check("event" in msg, "only events expected while waiting for %s, got %r" % (name, msg))
            self.events.append(msg)

    def closed_by_server(self, timeout=TIMEOUT):
        """True once the server has closed the connection (EOF or reset)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


def error_of(reply, cls="GenericError"):
    check("error" in reply, "an error reply: %r" % reply)
    check(reply["error"]["class"] == cls, "error class %s: %r" % (cls, reply))
    return reply["error"]["desc"]


def expect_error(reply, desc, cls="GenericError"):
    got = error_of(reply, cls)
    check(got == desc, "error desc %r, got %r" % (desc, got))


def scenario_protocol(path):
    q = Qmp(path, negotiate=False)
    g = q.greeting
    check(set(g) == {"QMP"}, "greeting has only QMP: %r" % g)
    check(g["QMP"]["version"]["qemu"] == {"micro": 0, "minor": 0, "major": 0}, "greeting version: %r" % g)
    check(g["QMP"]["version"]["package"].startswith("ferry "), "greeting package: %r" % g)
    check(g["QMP"]["capabilities"] == [], "no capabilities offered: %r" % g)

    # Before negotiation.
    r = q.cmd("query-status", id="early")
    expect_error(r, "Expecting capabilities negotiation with 'qmp_capabilities'", "CommandNotFound")
    check(r.get("id") == "early", "id echoed before negotiation: %r" % r)
    expect_error(q.cmd("no-such-command"), "Expecting capabilities negotiation with 'qmp_capabilities'",
                 "CommandNotFound")
    expect_error(q.cmd("qmp_capabilities", {"enable": ["oob"]}), "Capability oob not available")
    check(q.cmd("qmp_capabilities", id=1) == {"return": {}, "id": 1}, "negotiation with an id")

    # Command mode.
    expect_error(q.cmd("qmp_capabilities"), "Capabilities negotiation is already complete, command ignored",
                 "CommandNotFound")
    r = q.cmd("query-status", id={"any": ["json", 1]})
    check(r == {"return": {"status": "running", "running": True, "singlestep": False}, "id": {"any": ["json", 1]}},
          "query-status running with the id echoed: %r" % r)
    r = q.cmd("query-version")
    check(r["return"]["qemu"] == {"micro": 0, "minor": 0, "major": 0}, "query-version: %r" % r)
    names = {c["name"] for c in q.cmd("query-commands")["return"]}
    want = {"qmp_capabilities", "query-status", "stop", "cont", "system_reset", "quit", "query-cpus-fast",
            "query-version", "query-commands", "ferry-query-memory"}
    check(want <= names, "query-commands lists %s, got %s" % (sorted(want), sorted(names)))

    # Bad input, each with QEMU's error.
    q.send_raw(b'{"execute": }\n')
    desc = error_of(q.reply())
    check(desc.startswith("JSON parse error, "), "malformed JSON: %r" % desc)
    q.send_raw(b"[1, 2]\n")
    expect_error(q.reply(), "QMP input must be a JSON object")
    q.send_raw(b"42\n")
    expect_error(q.reply(), "QMP input must be a JSON object")
    q.send_raw(b'"execute"\n')
    expect_error(q.reply(), "QMP input must be a JSON object")
    q.send_raw(b"nonsense\n")
    check(error_of(q.reply()).startswith("JSON parse error, "), "a bare word is a parse error")
    q.send_raw(b'{"\xff\xfe": 1}\n')
    check(error_of(q.reply()).startswith("JSON parse error, "), "invalid UTF-8 is a parse error")
    expect_error(q.cmd(None, None), "QMP input member 'execute' must be a string")
    q.send_raw(b'{"arguments": {}, "id": 5}\n')
    r = q.reply()
    expect_error(r, "QMP input lacks member 'execute'")
    check(r.get("id") == 5, "id echoed on a bad request: %r" % r)
    q.send_raw(b'{"execute": "query-status", "arguments": [1]}\n')
    expect_error(q.reply(), "QMP input member 'arguments' must be an object")
    q.send_raw(b'{"execute": "query-status", "bogus": 1}\n')
    expect_error(q.reply(), "QMP input member 'bogus' is unexpected")
    expect_error(q.cmd("qmp_capabilities", {"enable": "oob"}), "Invalid parameter type for 'enable', expected: array")
    expect_error(q.cmd("qmp_capabilities", {"enable": [7]}), "Invalid parameter type for 'enable[0]', expected: string")
    expect_error(q.cmd("query-status", {"verbose": True}), "Parameter 'verbose' is unexpected")
    expect_error(q.cmd("frobnicate"), "The command frobnicate has not been found", "CommandNotFound")
    q.send_raw(b"[" * 2000 + b"]" * 2000 + b"\n")
    expect_error(q.reply(), "JSON nesting depth limit exceeded")

    # Framing: two requests on one line, one request split over three sends and lines.
    q.send_raw(b'{"execute": "query-status", "id": 1}{"execute": "query-version", "id": 2}\r\n')
    check(q.reply().get("id") == 1 and q.reply().get("id") == 2, "two requests on one line, replies in order")
    for part in (b'{"execute":', b'\n  "query-status",', b' "id": 3}\n'):
        q.send_raw(part)
        time.sleep(0.05)
    check(q.reply() == {"return": {"status": "running", "running": True, "singlestep": False}, "id": 3},
          "a request split across sends")

    # A huge line: the connection is closed; other clients and new ones still work.
    other = Qmp(path)
    huge = Qmp(path)
    try:
        huge.send_raw(b'{"execute": "' + b"a" * (80 * 1024))
    except (BrokenPipeError, ConnectionResetError):
        pass
    check(huge.closed_by_server(), "a 80 KiB unfinished object closes the connection")
    huge.close()
    check(other.cmd("query-status")["return"]["running"], "another client still works after the huge line")
    fresh = Qmp(path)
    check(fresh.cmd("query-status")["return"]["running"], "a new client works after the huge line")

    # Clients that disconnect mid-command, or before reading their replies.
    for data in (b'{"execute": "query-st', b'{"execute": "qmp_capabilities"}\n{"execute": "query-status"}\n',
                 b'{"execute": "qmp_capabilities"}\n{"execute": "query-status", "argu'):
        c = Qmp(path, negotiate=False)
        c.send_raw(data)
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    c.close()  # gone before the greeting is read

    # Garbage: random bytes, and random JSON-ish text, from clients that then vanish.
    rng = random.Random(5)
    for i in range(40):
        c = Qmp(path, negotiate=(i % 2 == 0))
        if i < 20:
            data = bytes(rng.randrange(256) for _ in range(8192))
        else:
            data = "".join(rng.choice('{}[]":,\\ \n\r\tae1.-"execute"') for _ in range(8192)).encode()
        try:
            c.send_raw(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        c.close()
    check(other.cmd("query-status")["return"]["running"], "still running after clients vanished mid-command")
    check(q.cmd("query-status")["return"]["running"], "the first client is still served")
    for c in (q, other, fresh):
        c.close()


def scenario_stop(path):
    a, b = Qmp(path), Qmp(path)
    silent = Qmp(path, negotiate=False)  # never negotiates: must get no events
    r = a.cmd("stop", id="s")
    check(r == {"return": {}, "id": "s"}, "stop returns {}: %r" % r)
    ev = a.wait_event("STOP")
    check("data" not in ev or ev["data"] == {}, "STOP has no data: %r" % ev)
    b.wait_event("STOP")
    r = b.cmd("query-status")
    check(r["return"] == {"status": "paused", "running": False, "singlestep": False}, "paused: %r" % r)
    check(a.cmd("stop") == {"return": {}}, "stop when paused is fine")
    silent.sock.settimeout(0.5)
    try:
        data = silent.sock.recv(65536)
        check(not data, "an unnegotiated client gets no events: %r" % data)
    except socket.timeout:
        pass
    for c in (a, b, silent):
        c.close()


def scenario_cont(path):
    q = Qmp(path)
    check(q.cmd("query-status")["return"]["status"] == "paused", "paused before cont")
    check(q.cmd("cont") == {"return": {}}, "cont returns {}")
    q.wait_event("RESUME")
    r = q.cmd("query-status")
    check(r["return"] == {"status": "running", "running": True, "singlestep": False}, "running again: %r" % r)
    check(q.cmd("cont") == {"return": {}}, "cont when running is fine")
    q.close()


def scenario_reset(path):
    q = Qmp(path)
    r = q.cmd("system_reset", id="r")
    check(r == {"return": {}, "id": "r"}, "system_reset returns {}: %r" % r)
    ev = q.wait_event("RESET")
    check(ev.get("data") == {"guest": False, "reason": "host-qmp-system-reset"}, "RESET data: %r" % ev)
    q.close()


def scenario_cpus(path, n, pid):
    q = Qmp(path)
    cpus = q.cmd("query-cpus-fast")["return"]
    check(len(cpus) == n, "%d vCPUs: %r" % (n, cpus))
    tids = set()
    for i, c in enumerate(cpus):
        check(c["cpu-index"] == i, "cpu-index %d: %r" % (i, c))
        check(c["qom-path"] == "/machine/unattached/device[%d]" % i, "qom-path: %r" % c)
        check(c["target"] == "x86_64", "target: %r" % c)
        check(c["props"] == {"core-id": i, "thread-id": 0, "socket-id": 0}, "props: %r" % c)
        tid = c["thread-id"]
        check(isinstance(tid, int) and tid > 0, "a thread id: %r" % c)
        check(tid != pid, "a vCPU thread is not the main thread: %r" % c)
        check(os.path.exists("/proc/%d/task/%d" % (pid, tid)), "thread %d belongs to ferry %d" % (tid, pid))
        tids.add(tid)
    check(len(tids) == n, "distinct thread ids: %r" % cpus)
    q.close()


def scenario_memory(path):
    q = Qmp(path)
    r = q.cmd("ferry-query-memory")
    check("return" in r, "ferry-query-memory answers: %r" % r)
    print(json.dumps(r["return"]))
    q.close()


def scenario_quit(path):
    q = Qmp(path)
    watcher = Qmp(path)
    check(q.cmd("quit", id=9) == {"return": {}, "id": 9}, "quit returns {}")
    for c in (q, watcher):
        ev = c.wait_event("SHUTDOWN")
        check(ev["data"] == {"guest": False, "reason": "host-qmp-quit"}, "SHUTDOWN host-qmp-quit: %r" % ev)
        check(c.closed_by_server(), "the connection closes after SHUTDOWN")
        c.close()


def scenario_slow(path):
    slow = Qmp(path)
    # Never read: the replies pile up until the server drops this client.
    request = b'{"execute": "query-commands"}\n'
    sent = 0
    try:
        for _ in range(20000):
            slow.send_raw(request)
            sent += 1
    except (BrokenPipeError, ConnectionResetError):
        pass
    q = Qmp(path)
    check(q.cmd("query-status")["return"]["running"], "another client is served while one does not read")
    check(slow.closed_by_server(), "the client that does not read is dropped (after %d requests)" % sent)
    slow.close()
    check(q.cmd("query-status")["return"]["running"], "still served after the drop")
    q.close()


def scenario_shutdown(path, reason, guest, timeout=120.0):
    q = Qmp(path)
    print("ready", flush=True)
    q.sock.settimeout(timeout)
    ev = q.wait_event("SHUTDOWN", timeout=timeout)
    check(ev["data"] == {"guest": guest, "reason": reason}, "SHUTDOWN %s: %r" % (reason, ev))
    q.close()


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, scenario, rest = argv[1], argv[2], argv[3:]
    try:
        if scenario == "protocol":
            scenario_protocol(path)
        elif scenario == "stop":
            scenario_stop(path)
        elif scenario == "cont":
            scenario_cont(path)
        elif scenario == "reset":
            scenario_reset(path)
        elif scenario == "cpus":
            scenario_cpus(path, int(rest[0]), int(rest[1]))
        elif scenario == "memory":
            scenario_memory(path)
        elif scenario == "quit":
            scenario_quit(path)
        elif scenario == "slow":
            scenario_slow(path)
        elif scenario == "shutdown":
            scenario_shutdown(path, rest[0], rest[1] == "true", float(rest[2]) if len(rest) > 2 else 120.0)
        else:
            print("unknown scenario %s" % scenario, file=sys.stderr)
            return 2
    except Failure as e:
        print("qmp_client %s: FAILED: %s" % (scenario, e), file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print("qmp_client %s: FAILED: %s: %s" % (scenario, type(e).__name__, e), file=sys.stderr)
        return 1
    print("qmp_client %s: ok" % scenario, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python3
"""soak-migrate: many consecutive restarts with connection migration on
(issue 11's soak): idle keep-alive connections must survive every restart,
and neither generation may leak a connection, an fd or a process.

Starts examples/hello (default; plain HTTP/1.1, --threads 2) or
examples/echo (--server echo), opens --conns idle keep-alive connections
(default 300), then does --restarts restarts (default 1,000), one at a time:
SIGHUP, wait for the new generation in the pid file, wait for the old one
to exit, then send one request on every connection (hello: GET /, which must
be answered "Hello, World!" without "Connection: close"; echo: a distinct
message, echoed exactly). After every restart it records the serving
generation's open fd count (/proc/PID/fd) and RSS, and checks that the old
generation exited with status 0 (drained, not cut by the hammer timeout) and
was reaped (this script is a child subreaper: every generation ends up its
child), so no zombie and no straggler is left.

At the end it closes the clients and checks that the serving generation is
back to its fds without them, then prints one JSON line: restarts done,
seconds, restarts/s, fd count min/max, RSS first/last (KiB), client failures,
load average. Exit status 1 on any failure: a connection closed, not
answered or answered wrongly; an fd count that changed; an old generation
that did not exit within --exit-timeout or exited non-zero; a process other
than the serving generation left; the client sockets not released at the
end; RSS growth over --rss-bound-kb (default 4096). Bounded: at most
--max-seconds (default 1800) in total, each wait bounded; everything
started is killed at the end; traffic only to 127.0.0.1.

Usage:
    bench/soak-migrate.py --binary build/examples/hello [--restarts 1000]
    bench/soak-migrate.py --server echo --binary build/examples/echo
    bench/soak-migrate.py --binary build/examples/hello --restarts 3 \
        --exit-timeout 3 --server-arg=--no-migrate    (must fail: proof it can)
A short variant (50 restarts) runs in CI's gcc stage as
it-http-migrate-soak-50 (tests/it-http-migrate.py).
"""
import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))
from handofftest.conns import ask_each, echo_answer, http_response  # noqa: E402
from handofftest.proc import free_port, raise_nofile, read_pid, rss_kb  # noqa: E402

PR_SET_CHILD_SUBREAPER = 36
GET = b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n"


def log(msg):
    sys.stderr.write("[soak-migrate %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


def sockets(pid):
    n = 0
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:"):
                    n += 1
            except OSError:
                pass
    except OSError:
        return -1
    return n


def children():
    """Pids whose parent is this process (the generations, once reparented)."""
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(st[1]) == me:
            out.append((int(d), st[0]))
    return out


class Reaper:
    """Collects the exit statuses of this process's children (the old
    generations: their parents exited before them, so they are ours)."""

    def __init__(self):
        self.status = {}

    def poll(self):
        while True:
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.status[pid] = os.waitstatus_to_exitcode(st)

    def wait(self, pid, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.poll()
            if pid in self.status:
                return self.status[pid]
            time.sleep(0.002)
        return None


def ask_all(conns, server, tag, timeout=30):
    """One request on every connection; returns [(index, problem)]."""
    def message(i):
        return GET if server == "hello" else b"%s.%d;" % (tag, i)

    def hello_answer(i, got):
        r = http_response(got)
        if r is None:
            return None
        head, body = r
        if (not head.startswith(b"http/1.1 200") or b"connection: close" in head
                or body != b"Hello, World!"):
            return "response %r" % got[:160]
        return ""
    return ask_each(conns, message, hello_answer if server == "hello" else echo_answer(message),
                    timeout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", required=True, help="examples/hello or examples/echo")
    ap.add_argument("--server", choices=("hello", "echo"), default="hello")
    ap.add_argument("--restarts", type=int, default=1000)
    ap.add_argument("--conns", type=int, default=300)
    ap.add_argument("--max-seconds", type=float, default=1800)
    ap.add_argument("--exit-timeout", type=float, default=30,
                    help="seconds an old generation may take to hand over and exit")
    ap.add_argument("--rss-bound-kb", type=int, default=4096)
    ap.add_argument("--json", help="also write the result line to this file")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="one more argument for the server (repeatable), e.g. --server-arg=--no-migrate "
                    "to see the soak fail")
    a = ap.parse_args()

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    raise_nofile(a.conns + 200)
    tmp = tempfile.mkdtemp(prefix="soak-migrate-")
    port = free_port()
    pidfile = os.path.join(tmp, "server.pid")
    logf = open(os.path.join(tmp, "server.log"), "wb")
    argv = [os.path.abspath(a.binary), "--listen", "127.0.0.1:%d" % port, "--pid-file", pidfile]
    if a.server == "hello":
        argv += ["--threads", "2"]
    argv += a.server_arg
    p = subprocess.Popen(argv, stdout=logf, stderr=logf)
    reaper = Reaper()
    failures = []
    conns = []
    t_start = time.monotonic()
    fds, rss, load0 = [], [], os.getloadavg()
    done = 0

    def fail(msg):
        failures.append(msg)
        log("FAIL: " + msg)

    try:
        end = time.monotonic() + 20
        while time.monotonic() < end and read_pid(pidfile) != p.pid:
            time.sleep(0.01)
        if read_pid(pidfile) != p.pid:
            raise SystemExit("the server did not start (log: %s)" % logf.name)
        for _ in range(a.conns):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.setblocking(False)
            conns.append(s)
        bad = ask_all(conns, a.server, b"c")
        if bad:
            raise SystemExit("new connections not served: %s" % bad[:3])
        base_fds = fd_count(p.pid)
        log("%s pid %d: %d connections, %d fds; %d restarts" % (
            a.server, p.pid, a.conns, base_fds, a.restarts))
        deadline = t_start + a.max_seconds
        for i in range(a.restarts):
            if time.monotonic() > deadline:
                fail("--max-seconds reached after %d restarts" % done)
                break
            old = read_pid(pidfile)
            os.kill(old, signal.SIGHUP)
            t0 = time.monotonic()
            new = 0
            while time.monotonic() < t0 + 30:
                new = read_pid(pidfile)
                if new and new != old:
                    break
                time.sleep(0.002)
            if not new or new == old:
                fail("restart %d: no new generation within 30 s" % (i + 1))
                break
            st = reaper.wait(old, a.exit_timeout)
            if st is None:
                fail("restart %d: generation %d did not exit within %.0f s" % (
                    i + 1, old, a.exit_timeout))
                break
            if st != 0:
                fail("restart %d: generation %d exited with status %d" % (i + 1, old, st))
            bad = ask_all(conns, a.server, b"r%d" % i)
            if bad:
                fail("restart %d: %d connections failed: %s" % (i + 1, len(bad), bad[:3]))
                break
            # The new generation closes its channel to the exited one at
            # its loop's next turn: the count settles within a moment.
            n = fd_count(new)
            settle = time.monotonic() + 2
            while fds and n != fds[0] and time.monotonic() < settle:
                time.sleep(0.005)
                n = fd_count(new)
            fds.append(n)
            rss.append(rss_kb(new))
            others = [c for c in children() if c[0] != new]
            if others:
                fail("restart %d: other processes left: %s" % (i + 1, others))
            done += 1
            if done % 100 == 0:
                log("%d restarts, %.0f s: fds %d..%d, RSS %d..%d KiB" % (
                    done, time.monotonic() - t_start, min(fds), max(fds), min(rss), max(rss)))
        secs = time.monotonic() - t_start
        last = read_pid(pidfile)
        with_clients = sockets(last)
        for s in conns:
            s.close()
        conns = []
        want = with_clients - a.conns
        end = time.monotonic() + 10
        while time.monotonic() < end and sockets(last) != want:
            time.sleep(0.01)
        left = sockets(last)
        # (Meaningful only if every connection was in `last`: no failure yet.)
        if left != want and not failures:
            fail("after the clients closed, the serving generation holds %d sockets, want %d"
                 % (left, want))
        if fds and min(fds) != max(fds):
            fail("the serving generation's fd count changed: %d..%d" % (min(fds), max(fds)))
        if rss and rss[-1] - rss[0] > a.rss_bound_kb:
            fail("RSS grew from %d to %d KiB" % (rss[0], rss[-1]))
        res = {"server": a.server, "restarts": done, "conns": a.conns,
               "seconds": round(secs, 1), "restarts_per_s": round(done / secs, 2) if secs else 0,
               "fds_min": min(fds) if fds else None, "fds_max": max(fds) if fds else None,
               "rss_first_kb": rss[0] if rss else None, "rss_last_kb": rss[-1] if rss else None,
               "failures": len(failures), "load_before": [round(x, 2) for x in load0],
               "load_after": [round(x, 2) for x in os.getloadavg()]}
        print(json.dumps(res), flush=True)
        if a.json:
            with open(a.json, "w") as f:
                f.write(json.dumps(res) + "\n")
    finally:
        for s in conns:
            s.close()
        pids = {p.pid, read_pid(pidfile) or 0} | {c[0] for c in children()}
        for pid in pids:
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.1)
        reaper.poll()
        logf.close()
    if failures:
        log("log: %s" % logf.name)
        sys.exit(1)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

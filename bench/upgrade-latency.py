#!/usr/bin/env python3
"""upgrade-latency: time from the upgrade trigger (SIGHUP) to the successor
being ready, over N restarts, beside the bare cost of fork+exec of the same
binary.

"Ready" is observed the way systemd observes it: the old generation sends
MAINPID=<new pid> + READY=1 to NOTIFY_SOCKET once the new one has passed the
handshake; this script is that NOTIFY_SOCKET. The baseline spawns the same
binary with --help and waits for it to exit (fork, exec, dynamic loading,
main, exit), the floor any re-exec upgrade pays.

Prints one JSON line: medians and percentiles in ms, and the ratio.
Usage: upgrade-latency.py --echo build/examples/echo [--restarts 100]
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--echo", required=True)
    ap.add_argument("--restarts", type=int, default=100)
    a = ap.parse_args()
    if not 1 <= a.restarts <= 10000:
        ap.error("--restarts in 1..10000")
    echo = os.path.abspath(a.echo)
    tmp = tempfile.mkdtemp(prefix="handoff-bench-")
    ns = os.path.join(tmp, "notify")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(ns)
    rx.settimeout(10)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    env = dict(os.environ, NOTIFY_SOCKET=ns)
    p = subprocess.Popen([echo, "--listen", "127.0.0.1:%d" % port, "--drain-timeout", "5"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    pids = {p.pid}
    upgrade = []
    try:
        msg = rx.recv(4096).decode()
        if "READY=1" not in msg:
            raise SystemExit("no READY=1 from the server: %r" % msg)
        pid = p.pid
        deadline = time.monotonic() + 120
        for _ in range(a.restarts):
            if time.monotonic() > deadline:
                raise SystemExit("time budget exceeded")
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGHUP)
            new = None
            while new is None:
                for line in rx.recv(4096).decode().splitlines():
                    if line.startswith("MAINPID="):
                        new = int(line[8:])
            upgrade.append((time.perf_counter() - t0) * 1000)
            pid = new
            pids.add(pid)
        spawn = []
        for _ in range(a.restarts):
            t0 = time.perf_counter()
            c = subprocess.Popen([echo, "--help"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, close_fds=False)
            c.wait()
            spawn.append((time.perf_counter() - t0) * 1000)
    finally:
        for q in pids:
            try:
                os.kill(q, signal.SIGKILL)
            except OSError:
                pass
        p.wait()
        rx.close()
        os.unlink(ns)
        os.rmdir(tmp)
    mu, ms = statistics.median(upgrade), statistics.median(spawn)
    res = {"tool": "upgrade-latency", "restarts": a.restarts,
           "upgrade_ms": {"median": round(mu, 3), "p90": round(pct(upgrade, 90), 3),
                          "max": round(max(upgrade), 3)},
           "fork_exec_ms": {"median": round(ms, 3), "p90": round(pct(spawn, 90), 3),
                            "max": round(max(spawn), 3)},
           "ratio_upgrade_to_fork_exec": round(mu / ms, 2)}
    sys.stderr.write("upgrade (SIGHUP -> successor ready): median %.2f ms, p90 %.2f ms\n"
                     "bare fork+exec of the same binary:    median %.2f ms, p90 %.2f ms\n"
                     "ratio %.2f\n" % (mu, pct(upgrade, 90), ms, pct(spawn, 90), mu / ms))
    print(json.dumps(res))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""soak: many consecutive restarts of the example HTTP server under wrk load.

Runs RESTARTS restarts (default 1,000) in segments of 100. During a segment
wrk loads the server at saturation while this script sends SIGHUP, waits for
the new generation to take over (pid file), and sends the next one. Between
segments wrk is stopped, old generations are given time to exit, and the
serving process is measured: open fds, resident memory, zombies.

Asserts: zero failed requests (wrk socket errors and non-2xx), no zombie, the
same fd count at every checkpoint, and RSS growth of the serving process
bounded by --rss-bound-kb (default 4096 KiB) between the first and the last
checkpoint. Prints one JSON line. Every wait is bounded; everything started
is killed at the end.

Usage: soak.py --hello build/examples/hello [--restarts 1000]
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time


def log(msg):
    sys.stderr.write("soak: %s\n" % msg)
    sys.stderr.flush()


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))
from handofftest.proc import alive, poll_until, read_pid, rss_kb  # noqa: E402
from handofftest.wrk import parse as wrk_summary  # noqa: E402


def zombies():
    out = []
    me = os.getpid()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    rest = f.read().rsplit(")", 1)[1].split()
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            if rest[0] == "Z" and (int(rest[1]) == me or b"hello" in cmd):
                out.append(int(d))
    return out


def established(port):
    """Connections on the server's port that are not closed yet."""
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                for line in f.readlines()[1:]:
                    parts = line.split()
                    # server side, ESTABLISHED or CLOSE_WAIT: an fd may still be open
                    if parts[1].endswith(":%04X" % port) and parts[3] in ("01", "08"):
                        n += 1
        except OSError:
            pass
    return n


def wait_until(pred, timeout, what):
    v = poll_until(pred, timeout, interval=0.002)
    if not v:
        raise SystemExit("soak: timed out waiting for %s" % what)
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hello", required=True)
    ap.add_argument("--restarts", type=int, default=1000)
    ap.add_argument("--segment", type=int, default=100)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rss-bound-kb", type=int, default=4096)
    ap.add_argument("--time-budget", type=float, default=900, help="seconds, whole run")
    a = ap.parse_args()
    if not 1 <= a.restarts <= 100000 or a.segment < 1:
        ap.error("bad --restarts/--segment")
    t_start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="handoff-soak-")
    pidfile = os.path.join(tmp, "hello.pid")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    url = "http://127.0.0.1:%d/" % port
    logf = open(os.path.join(tmp, "hello.log"), "w")
    p = subprocess.Popen([os.path.abspath(a.hello), "--listen", "127.0.0.1:%d" % port,
                          "--pid-file", pidfile, "--drain-timeout", "10"],
                         stdout=logf, stderr=logf, start_new_session=True)
    seen = {p.pid}
    wrk = None
    result = {"tool": "soak", "restarts_planned": a.restarts, "checkpoints": []}
    ok = False
    try:
        pid = wait_until(lambda: (lambda q: q if q and alive(q) else 0)(read_pid(pidfile)), 10,
                         "the server")
        done = 0
        total_reqs = total_fail = 0
        restart_ms = []
        while done < a.restarts:
            if time.monotonic() - t_start > a.time_budget:
                raise SystemExit("soak: time budget exceeded after %d restarts" % done)
            # Checkpoint: no load, old generations gone.
            wait_until(lambda: all(not alive(q) for q in seen if q != pid), 20,
                       "old generations to exit")
            p.poll()  # generation 1 is our own child: reap it before counting zombies
            # wrk's connections must be gone before fds are counted.
            wait_until(lambda: established(port) == 0, 20, "client connections to close")
            cp = {"after_restarts": done, "pid": pid, "fds": len(os.listdir("/proc/%d/fd" % pid)),
                  "rss_kb": rss_kb(pid), "zombies": len(zombies())}
            result["checkpoints"].append(cp)
            log("checkpoint after %d restarts: pid %d, %d fds, RSS %d KiB, zombies %d"
                % (done, pid, cp["fds"], cp["rss_kb"], cp["zombies"]))
            n = min(a.segment, a.restarts - done)
            wrk = subprocess.Popen(["wrk", "-t2", "-c%d" % a.connections, "-d600s", "--timeout",
                                    "5s", url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            time.sleep(0.3)
            for _ in range(n):
                t0 = time.monotonic()
                os.kill(pid, signal.SIGHUP)
                new = wait_until(lambda: (lambda q: q if q != pid and alive(q) else 0)(
                    read_pid(pidfile)), 10, "restart %d" % (done + 1))
                restart_ms.append((time.monotonic() - t0) * 1000)
                seen.add(new)
                pid = new
                done += 1
            time.sleep(0.3)
            wrk.send_signal(signal.SIGINT)  # wrk stops and prints its summary
            out = wrk.communicate(timeout=20)[0].decode()
            wrk = None
            r = wrk_summary(out)
            total_reqs += r["requests"]
            total_fail += r["failed"]
            log("segment: %d restarts, %d requests, %d failed" % (n, r["requests"], r["failed"]))
        wait_until(lambda: all(not alive(q) for q in seen if q != pid), 20, "old generations")
        p.poll()
        wait_until(lambda: established(port) == 0, 20, "client connections to close")
        cp = {"after_restarts": done, "pid": pid, "fds": len(os.listdir("/proc/%d/fd" % pid)),
              "rss_kb": rss_kb(pid), "zombies": len(zombies())}
        result["checkpoints"].append(cp)
        first, last = result["checkpoints"][0], cp
        restart_ms.sort()
        result.update({
            "restarts_done": done, "requests": total_reqs, "failed_requests": total_fail,
            "generations": len(seen),
            "fds_first": first["fds"], "fds_last": last["fds"],
            "fds_constant": len({c["fds"] for c in result["checkpoints"]}) == 1,
            "rss_kb_first": first["rss_kb"], "rss_kb_last": last["rss_kb"],
            "rss_bound_kb": a.rss_bound_kb,
            "zombies_max": max(c["zombies"] for c in result["checkpoints"]),
            "restart_ms_median": round(restart_ms[len(restart_ms) // 2], 2),
            "restart_ms_p99": round(restart_ms[int(len(restart_ms) * 0.99)], 2),
            "seconds": round(time.monotonic() - t_start, 1),
        })
        ok = (total_fail == 0 and result["fds_constant"] and result["zombies_max"] == 0
              and last["rss_kb"] - first["rss_kb"] <= a.rss_bound_kb)
        result["pass"] = ok
    finally:
        if wrk is not None:
            wrk.kill()
        for q in seen:
            try:
                os.kill(q, signal.SIGKILL)
            except OSError:
                pass
        p.wait()
        logf.close()
    print(json.dumps(result))
    log("%s: %d restarts, %d requests, %d failed, fds %d -> %d, RSS %d -> %d KiB"
        % ("PASS" if ok else "FAIL", result.get("restarts_done", 0), result.get("requests", 0),
           result.get("failed_requests", -1), result.get("fds_first", 0),
           result.get("fds_last", 0), result.get("rss_kb_first", 0),
           result.get("rss_kb_last", 0)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

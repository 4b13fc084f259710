#!/usr/bin/env python3
"""Unmodified servers under `handoff run --preload` (issue 12), against
the same servers without handoff:

1. Restarts under load. Each server is restarted N times while a probe
   opens a new connection per request (100/s), wrk keeps connections
   alive (HTTP servers; redis-benchmark -k 0 for Redis), and a slow
   request (2 s) is in flight at each restart where the server can make
   one. Modes:
     preload  handoff run --preload, `handoff reload`
     plain    the server alone: its graceful stop signal, wait for it to
              exit, start it again (what a restart is without handoff)
     native   the server's own reload, where it has one: nginx SIGHUP,
              lighttpd SIGUSR1 (graceful restart); Redis and the Python
              app have none
   Counted: refused connections and other probe failures by kind, the
   probe's latency (a connection waiting in the listen queue), wrk's
   socket errors (connect = refused, read = a kept-alive connection
   closed under a request), slow requests lost, the restart's duration.
2. Throughput at steady state: the server started directly and under
   `handoff run --preload`, side by side, loaded one at a time, in
   alternating order, --rounds rounds of --duration seconds: medians and
   their ratio (wrk, 32 connections; redis-benchmark -k 1 GET for Redis),
   and the CPU time the server's process tree (with the supervisor)
   spends per request, which a busy machine disturbs less than req/s.

    bench/preload-servers.py --handoff build/tools/handoff
        [--servers python-app,redis,lighttpd,nginx] [--restarts 20]
        [--rounds 5 --duration 5] [--no-restarts] [--no-throughput]
        [--json FILE] [--keep]

The server configurations are tests/lib/handofftest/servers.py (the same
as tests/it-preload-servers.py). The Python app runs as one process in
every mode (--workers 1). Benchmarks that compare numbers need a quiet
machine. Everything started is a descendant of this script (a subreaper)
and is killed at the end; every wait and load loop is bounded.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
from benchcommon import kill_descendants, log, reap, set_subreaper  # noqa: E402
from handofftest import servers  # noqa: E402
from handofftest.load import Probe, has_ipv6, in_thread, wrk_start, wrk_stop  # noqa: E402
from handofftest.proc import descendants, free_port  # noqa: E402
from handofftest.wrk import run as wrk_run  # noqa: E402

ALL = ["python-app", "redis", "lighttpd", "nginx"]
NATIVE = {"nginx": signal.SIGHUP, "lighttpd": signal.SIGUSR1}
NEEDS = {"redis": ["redis-server", "redis-benchmark"], "lighttpd": ["lighttpd"], "nginx": ["nginx"]}
# handoff run options per server (as tests/it-preload-servers.py).
SUP_OPTS = {"python-app": ["--drain-timeout", "10"],
            "redis": [],
            "lighttpd": ["--stop-signal", "INT", "--drain-timeout", "15"],
            "nginx": ["--stop-signal", "QUIT", "--drain-timeout", "15"]}


def wait_for(fn, seconds, step=0.02):
    """Seconds until fn() returned without raising, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        try:
            fn()
            return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(step)
    return None


class Instance:
    """One server configuration in a directory of its own, started
    directly or under handoff run --preload."""

    def __init__(self, name, root, tag, handoff):
        self.name, self.handoff = name, handoff
        self.dir = os.path.join(root, "%s-%s" % (name, tag))
        os.makedirs(self.dir)
        self.slow_backend = None
        if name == "python-app":
            self.srv = servers.python_app(free_port())
        elif name == "redis":
            self.srv = servers.redis(free_port(), self.dir)
            self.port = int(self.srv.listen[0].rsplit(":", 1)[1])
        elif name == "lighttpd":
            self.srv = servers.lighttpd(free_port(), free_port(), self.dir)
        else:
            self.slow_backend = servers.SlowBackend()
            self.srv = servers.nginx([free_port() for _ in range(5)], self.dir, self.slow_backend.port, has_ipv6())
        self.proc = None
        self.log = open(os.path.join(self.dir, "out.log"), "a")
        self.control = os.path.join(self.dir, "ctl.sock")

    def start(self, preload):
        if preload:
            argv = [self.handoff, "run", "-q", "--control", self.control, "--preload", "--max-draining", "8"]
            for spec in self.srv.listen:
                argv += ["--listen", spec]
            argv += SUP_OPTS[self.name] + ["--"] + self.srv.command
        else:
            argv = self.srv.command
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env, cwd=self.dir)
        if wait_for(self.srv.probe, 30) is None:
            raise SystemExit("%s did not answer within 30 s; see %s/out.log" % (self.name, self.dir))

    def stop(self, timeout=40):
        """The graceful stop (for handoff run: TERM, which stops the
        workers with their signal); True if it exited in time."""
        if not self.proc or self.proc.poll() is not None:
            return True
        self.proc.send_signal(self.srv.stop_signal if self.proc.args[0] != self.handoff else signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return False

    def close(self):
        self.stop()
        if self.slow_backend:
            self.slow_backend.close()
        self.log.close()


def restart_once(inst, mode):
    """One restart; returns its duration in ms (until the server answers
    again, for plain) or raises."""
    t = time.monotonic()
    if mode == "preload":
        r = subprocess.run([inst.handoff, "reload", "--control", inst.control], capture_output=True, text=True,
                           timeout=60)
        if r.returncode != 0:
            raise RuntimeError("reload failed: %s%s" % (r.stdout, r.stderr))
    elif mode == "plain":
        if not inst.stop():
            raise RuntimeError("did not stop within 40 s")
        inst.start(False)
    else:
        os.kill(inst.proc.pid, NATIVE[inst.name])
    return (time.monotonic() - t) * 1000


def restarts(inst, mode, n, pause=0.4):
    """n restarts under load (see the top); returns what the load saw."""
    slow, threads, times, errors = [], [], [], []
    wrk = wrk_start(inst.srv.url, int(n * (pause + 3) + 30), connections=8) if inst.srv.url else None
    bench = servers.redis_benchmark(inst.port, 0) if inst.name == "redis" else None
    took, lock = [], threading.Lock()

    def timed():
        t0 = time.monotonic()
        inst.srv.probe()
        with lock:
            took.append(time.monotonic() - t0)
    with Probe(timed) as probe:
        time.sleep(1)
        for _ in range(n):
            if inst.srv.slow:
                threads.append(in_thread(slow, inst.srv.slow))
                time.sleep(0.3)
            try:
                times.append(restart_once(inst, mode))
            except (RuntimeError, SystemExit, subprocess.TimeoutExpired) as e:
                errors.append(str(e)[:300])
                break
            time.sleep(pause)
        time.sleep(1)
    for t in threads:
        t.join(15)
    r = {"server": inst.name, "mode": mode, "restarts": len(times), "errors": errors,
         "probe_ok": probe.ok, "probe_failures": len(probe.failures), "probe_kinds": probe.kinds(),
         "slow_ok": slow.count("ok"), "slow_total": len(slow), "probe_ms": percentiles(took),
         "restart_ms_median": round(statistics.median(times), 1) if times else None}
    if wrk:
        w = wrk_stop(wrk)
        r["wrk"] = {k: w[k] for k in ("requests", "connect", "read", "write", "timeout", "non2xx")}
    if bench:
        b = bench()
        r["redis_benchmark"] = {"runs": b["runs"], "failed_runs": b["failed_runs"], "errors": b["errors"][:3]}
    return r


def tree_cpu(pid):
    """CPU seconds (user + system) of pid and its descendants: the server
    and, under handoff run, the supervisor too."""
    total = 0.0
    for p in [pid] + descendants(pid):
        try:
            with open("/proc/%d/stat" % p) as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def percentiles(xs):
    """p50, p99 and the maximum of xs (seconds), in ms."""
    if not xs:
        return None
    xs = sorted(xs)
    return {"p50": round(xs[len(xs) // 2] * 1000, 1), "p99": round(xs[min(len(xs) - 1, len(xs) * 99 // 100)] * 1000, 1),
            "max": round(xs[-1] * 1000, 1)}


def rate(inst, args):
    """(requests/s, requests) of one load round."""
    if inst.name == "redis":
        n = 20000 * args.duration
        p = subprocess.run(["redis-benchmark", "-p", str(inst.port), "-c", str(args.connections), "-n", str(n),
                            "-k", "1", "-t", "get", "-q"], capture_output=True, text=True,
                           timeout=args.duration * 20 + 60)
        for line in (p.stdout + p.stderr).replace("\r", "\n").splitlines():
            if "requests per second" in line:
                return float(line.split(":")[1].split()[0]), n
        raise SystemExit("redis-benchmark printed no rate: %s" % p.stdout[-300:])
    w, out = wrk_run(inst.srv.url, args.duration, connections=args.connections, threads=1)
    if not w["rps"] or w["failed"]:
        raise SystemExit("wrk: no rate or failures:\n%s" % out)
    return w["rps"], w["requests"]


def throughput(name, root, args):
    direct, shim = Instance(name, root, "direct", args.handoff), Instance(name, root, "shim", args.handoff)
    try:
        direct.start(False)
        shim.start(True)
        res = {"direct": [], "preload": []}
        cpu = {"direct": [], "preload": []}  # CPU microseconds per request
        for r in range(args.rounds):
            order = [("direct", direct), ("preload", shim)]
            if r % 2:
                order.reverse()
            for label, inst in order:
                c0 = tree_cpu(inst.proc.pid)
                rps, n = rate(inst, args)
                res[label].append(rps)
                cpu[label].append(round((tree_cpu(inst.proc.pid) - c0) * 1e6 / max(n, 1), 2))
                log("%s throughput round %d/%d %-7s %10.0f req/s %8.2f CPU us/request" %
                    (name, r + 1, args.rounds, label, rps, cpu[label][-1]))
        md, mp = statistics.median(res["direct"]), statistics.median(res["preload"])
        pair = statistics.median(p / d for p, d in zip(res["preload"], res["direct"]))
        cd, cp = statistics.median(cpu["direct"]), statistics.median(cpu["preload"])
        return {"server": name, "direct_rps": res["direct"], "preload_rps": res["preload"],
                "median_direct": md, "median_preload": mp, "ratio": round(mp / md, 4),
                "median_round_ratio": round(pair, 4), "direct_cpu_us": cpu["direct"],
                "preload_cpu_us": cpu["preload"], "median_cpu_us_direct": cd, "median_cpu_us_preload": cp,
                "cpu_ratio": round(cp / cd, 4) if cd else None}
    finally:
        direct.close()
        shim.close()


def fmt_restart(r):
    kinds = ", ".join("%s %d" % kv for kv in sorted(r["probe_kinds"].items())) or "-"
    w = r.get("wrk")
    wtxt = ("wrk %d req, errors connect %d read %d write %d timeout %d, non2xx %d" %
            (w["requests"], w["connect"], w["read"], w["write"], w["timeout"], w["non2xx"]) if w else "")
    if "redis_benchmark" in r:
        b = r["redis_benchmark"]
        wtxt = "redis-benchmark -k 0: %d/%d runs failed" % (b["failed_runs"], b["runs"])
    lat = r["probe_ms"] and "p50 %(p50)s p99 %(p99)s max %(max)s ms" % r["probe_ms"]
    return ("%-10s %-8s restarts %2d  probe ok %5d failed %4d (%s), %s  slow %d/%d  %s  restart %s ms%s" %
            (r["server"], r["mode"], r["restarts"], r["probe_ok"], r["probe_failures"], kinds, lat, r["slow_ok"],
             r["slow_total"], wtxt, r["restart_ms_median"], ("  ERROR " + r["errors"][0]) if r["errors"] else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--handoff", required=True)
    ap.add_argument("--servers", default=",".join(ALL))
    ap.add_argument("--restarts", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--no-restarts", action="store_true")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the servers' directories (logs) in /tmp")
    args = ap.parse_args()
    args.handoff = os.path.abspath(args.handoff)
    names = [s for s in args.servers.split(",") if s]
    bad = [s for s in names if s not in ALL]
    if bad or not 1 <= args.restarts <= 100 or not 1 <= args.rounds <= 50 or not 1 <= args.duration <= 60:
        sys.exit("--servers from %s; --restarts 1..100, --rounds 1..50, --duration 1..60" % ",".join(ALL))
    if not shutil.which("wrk"):
        sys.exit("wrk is needed (apt-get install wrk)")
    skipped = [s for s in names if any(not shutil.which(t) for t in NEEDS.get(s, []))]
    for s in skipped:
        log("skipping %s: %s not installed" % (s, " or ".join(NEEDS[s])))
    names = [s for s in names if s not in skipped]
    set_subreaper()
    root = tempfile.mkdtemp(prefix="preload-servers-")
    out = {"restarts": [], "throughput": [], "skipped": skipped}
    try:
        if not args.no_restarts:
            for name in names:
                for mode in ["preload", "plain"] + (["native"] if name in NATIVE else []):
                    inst = Instance(name, root, mode, args.handoff)
                    try:
                        inst.start(mode == "preload")
                        r = restarts(inst, mode, args.restarts)
                    finally:
                        inst.close()
                    out["restarts"].append(r)
                    log(fmt_restart(r))
        if not args.no_throughput:
            for name in names:
                out["throughput"].append(throughput(name, root, args))
    finally:
        left = kill_descendants()
        reap()
        if left:
            log("had to SIGKILL %d leftover processes" % len(left))
        if args.keep:
            log("kept %s" % root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print("== restarts under load (%d each)" % args.restarts)
    for r in out["restarts"]:
        print(fmt_restart(r))
    print("== throughput, direct vs under handoff run --preload (%d rounds of %d s, %d connections)" %
          (args.rounds, args.duration, args.connections))
    for t in out["throughput"]:
        print("%-10s direct %10.0f  preload %10.0f req/s  ratio %.4f (%+.2f%%), median per-round ratio %.4f;"
              "  CPU per request direct %.2f us, preload %.2f us, ratio %s" %
              (t["server"], t["median_direct"], t["median_preload"], t["ratio"], (t["ratio"] - 1) * 100,
               t["median_round_ratio"], t["median_cpu_us_direct"], t["median_cpu_us_preload"], t["cpu_ratio"]))
    print(json.dumps(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

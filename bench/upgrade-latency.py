#!/usr/bin/env python3
"""upgrade-latency: time from the upgrade trigger (SIGHUP) to the successor
being ready, median of N restarts, for echo (the core alone) and hello (the
HTTP module: OpenSSL, worker threads), beside the floor any re-exec upgrade
pays: posix_spawn+wait of /bin/true and of the same binary with --help.

"Ready" is observed the way systemd observes it: the old generation sends
MAINPID=<new pid> + READY=1 to NOTIFY_SOCKET once the new one has passed the
handshake; this script is that NOTIFY_SOCKET. Between two restarts it waits
(untimed) until the old generation has exited.

  upgrade-latency.py --echo B/examples/echo [--hello B/examples/hello]
      [--before-echo A/examples/echo --before-hello A/examples/hello]
      [--restarts 100] [--ballast 256] [--breakdown]

--before-*: the same servers of another build (say, the previous commit),
  restarted interleaved with the first ones (after, before, after, ...) in
  the same run, so that the ratio does not depend on the machine's load
  drifting between two runs.
--ballast MB: echo also runs with MB MiB touched (--ballast), a large
  process, where fork() copying page tables shows.
--breakdown: the servers come from a build with -DHANDOFF_TRACE=ON
  (src/shared/trace.h): every step of the upgrade is timestamped into a
  file, and each step's median is printed. Each server is run twice, with
  the vfork-style start and with fork() (HFTRACE_FORK=1), interleaved.

Prints a table on stderr and one JSON line on stdout (medians in ms).
"""
import argparse
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time

STEPS = [
    ("kill", "P0-sigread", "signal delivered, loop wakes (old)"),
    ("P0-sigread", "P1-upgrade", "signal handling to upgrade start (old)"),
    ("P1-upgrade", "P2-plan", "resolve argv[0], env + fd plan (old)"),
    ("P2-plan", "P3a-fork", "socketpair, HELLO, error pipe (old)"),
    ("P3a-fork", "P3b-forked", "fork/clone + child until execve done (old)"),
    ("P3b-forked", "P3c-exec-ok", "exec result read (old)"),
    ("P3c-exec-ok", "C0-ctor", "new image: ld.so loads+relocates libs, ctors"),
    ("C0-ctor", "C1-new", "main() up to handoff_new() (app)"),
    ("C1-new", "C2-new-done", "handoff_new(): inherit fds, HELLO (new)"),
    ("C2-new-done", "C3-ready", "app setup: listeners, threads, TLS (app)"),
    ("C3-ready", "P6-ready-recv", "handoff_ready() -> old reads READY"),
    ("P6-ready-recv", "P7-mainpid", "old: hand-over bookkeeping, sd_notify"),
    ("P7-mainpid", "P8-pidfile", "old: pid file write"),
]
# Steps that are the library's (the rest: kernel exec, dynamic linking, the
# application's own setup).
LIBRARY = {"P0-sigread", "P1-upgrade", "P2-plan", "P3a-fork", "P3b-forked", "P3c-exec-ok",
           "C2-new-done", "P6-ready-recv", "P7-mainpid", "P8-pidfile"}


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def baseline(argv, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)])
        os.waitpid(pid, 0)
        out.append((time.perf_counter() - t0) * 1000)
    return out


class Server:
    """One server process chain, restarted by SIGHUP, with its own
    NOTIFY_SOCKET (and trace file)."""

    def __init__(self, label, argv, tmp, env_extra, settle_kb=0):
        self.label, self.argv, self.samples, self.pids = label, argv, [], set()
        self.settle_kb = settle_kb
        d = tempfile.mkdtemp(prefix="s-", dir=tmp)
        self.trace = os.path.join(d, "trace")
        self.rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.rx.bind(os.path.join(d, "notify"))
        self.rx.settimeout(20)
        env = dict(os.environ, NOTIFY_SOCKET=os.path.join(d, "notify"), HFTRACE_FILE=self.trace)
        env.update(env_extra)
        self.pid = os.posix_spawn(argv[0], argv, env, setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)])
        self.first = self.pid
        self.pids.add(self.pid)
        if "READY=1" not in self.rx.recv(4096).decode(errors="replace"):
            raise SystemExit("%s: no READY=1" % label)
        self.settle()

    def settle(self):
        """Untimed: a --ballast server touches its memory after ready; the
        next SIGHUP waits until it has (else the signal waits for that)."""
        end = time.monotonic() + 30
        while self.settle_kb and time.monotonic() < end:
            try:
                with open("/proc/%d/status" % self.pid) as f:
                    rss = [int(x.split()[1]) for x in f if x.startswith("VmRSS:")]
            except OSError:
                return
            if rss and rss[0] >= self.settle_kb:
                return
            time.sleep(0.005)

    def restart(self):
        old = self.pid
        with open(self.trace, "a") as f:
            f.write("0 kill %d\n" % time.monotonic_ns())
        t0 = time.perf_counter()
        os.kill(old, signal.SIGHUP)
        new = None
        while new is None:
            for line in self.rx.recv(4096).decode(errors="replace").splitlines():
                if line.startswith("MAINPID="):
                    new = int(line[8:])
        self.samples.append((time.perf_counter() - t0) * 1000)
        self.pid = new
        self.pids.add(new)
        end = time.monotonic() + 15
        while alive(old) and time.monotonic() < end:
            time.sleep(0.002)
        if alive(old):
            raise SystemExit("%s: old generation %d did not exit" % (self.label, old))
        if old == self.first:
            try:
                os.waitpid(old, 0)
            except ChildProcessError:
                pass
        self.settle()

    def stop(self):
        for q in self.pids:
            try:
                os.kill(q, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.waitpid(self.first, 0)
        except ChildProcessError:
            pass
        self.rx.close()

    def steps(self):
        """Per step, the list of durations (us) over the restarts."""
        rounds, cur = [], None
        try:
            lines = open(self.trace).read().splitlines()
        except OSError:
            return {}
        for line in lines:
            _, name, t = line.split()
            if name == "kill":
                cur = {"kill": int(t)}
                rounds.append(cur)
            elif cur is not None and name not in cur:
                cur[name] = int(t)
        out = {}
        for r in rounds:
            for a_, b_, _ in STEPS:
                if a_ in r and b_ in r:
                    out.setdefault(b_, []).append((r[b_] - r[a_]) / 1e3)
        return out


def summary(xs):
    return {"median": round(statistics.median(xs), 3), "p10": round(pct(xs, 10), 3),
            "p90": round(pct(xs, 90), 3), "n": len(xs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--echo")
    ap.add_argument("--hello")
    ap.add_argument("--before-echo")
    ap.add_argument("--before-hello")
    ap.add_argument("--restarts", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2, help="hello's worker threads (default 2)")
    ap.add_argument("--ballast", type=int, default=0, metavar="MB",
                    help="also run echo with MB MiB touched")
    ap.add_argument("--breakdown", action="store_true",
                    help="servers built with -DHANDOFF_TRACE=ON: median of every step")
    a = ap.parse_args()
    if not (a.echo or a.hello):
        ap.error("--echo and/or --hello")
    if not 1 <= a.restarts <= 2000 or not 0 <= a.ballast <= 4096:
        ap.error("--restarts in 1..2000, --ballast in 0..4096")
    tmp = tempfile.mkdtemp(prefix="handoff-upl-")

    def echo_argv(path, extra=()):
        return [os.path.abspath(path), "--listen", "127.0.0.1:%d" % free_port(),
                "--drain-timeout", "5"] + list(extra)

    def hello_argv(path):
        return [os.path.abspath(path), "--listen", "127.0.0.1:%d" % free_port(),
                "--threads", str(a.threads), "--drain-timeout", "5"]

    plan = []  # (label, argv, env[, settle_kb])
    variants = [("", {})]
    if a.breakdown:
        variants = [("", {}), (" fork", {"HFTRACE_FORK": "1"})]
    for suffix, env in variants:
        for tag, path in (("", a.echo), ("before ", a.before_echo)):
            if path:
                plan.append((tag + "echo" + suffix, echo_argv(path), env))
                if a.ballast:
                    plan.append((tag + "echo+%dMB" % a.ballast + suffix,
                                 echo_argv(path, ["--ballast", str(a.ballast)]), env,
                                 a.ballast * 1024))
        for tag, path in (("", a.hello), ("before ", a.before_hello)):
            if path:
                plan.append((tag + "hello" + suffix, hello_argv(path), env))
    servers = []
    try:
        for p in plan:
            servers.append(Server(p[0], p[1], tmp, p[2], p[3] if len(p) > 3 else 0))
        time.sleep(0.3)
        deadline = time.monotonic() + 60 + a.restarts * len(servers) * 2
        for i in range(a.restarts):
            if time.monotonic() > deadline:
                raise SystemExit("time budget exceeded")
            order = servers if i % 2 == 0 else list(reversed(servers))
            for s in order:
                s.restart()
                time.sleep(0.02)
        base = {"posix_spawn /bin/true": baseline(["/bin/true"], a.restarts)}
        for p in (a.echo, a.hello):
            if p:
                base["posix_spawn %s --help" % os.path.basename(p)] = baseline(
                    [os.path.abspath(p), "--help"], a.restarts)
    finally:
        for s in servers:
            s.stop()
    res = {"tool": "upgrade-latency", "restarts": a.restarts, "load1": os.getloadavg()[0],
           "upgrade_ms": {s.label: summary(s.samples) for s in servers},
           "baseline_ms": {k: summary(v) for k, v in base.items()}}
    w = sys.stderr.write
    w("SIGHUP -> MAINPID/READY=1 received, %d restarts each, load average %.1f\n"
      % (a.restarts, res["load1"]))
    for s in servers:
        m = res["upgrade_ms"][s.label]
        w("  %-24s median %7.3f ms  p10 %7.3f  p90 %7.3f\n" % (s.label, m["median"], m["p10"],
                                                              m["p90"]))
    for k, m in res["baseline_ms"].items():
        w("  %-40s median %7.3f ms\n" % (k, m["median"]))
    ratios = {}
    for s in servers:
        if s.label.startswith("before "):
            after = res["upgrade_ms"].get(s.label[len("before "):])
            if after:
                ratios[s.label[len("before "):]] = round(
                    after["median"] / res["upgrade_ms"][s.label]["median"], 3)
    for s in servers:
        if s.label.endswith(" fork"):
            after = res["upgrade_ms"].get(s.label[:-len(" fork")])
            if after:
                ratios[s.label[:-len(" fork")] + " vfork/fork"] = round(
                    after["median"] / res["upgrade_ms"][s.label]["median"], 3)
    if ratios:
        res["ratio_after_before"] = ratios
        for k, v in ratios.items():
            w("  ratio %-30s %.3f\n" % (k, v))
    if a.breakdown:
        res["steps_us"] = {}
        w("\nstep medians in us (%s)\n" % ", ".join(s.label for s in servers))
        w("%-46s" % "step" + "".join("%13s" % s.label[:12] for s in servers) + "\n")
        per = [s.steps() for s in servers]
        if not any(per):
            raise SystemExit("no trace: build the servers with -DHANDOFF_TRACE=ON")
        lib = [0.0] * len(servers)
        for a_, b_, what in STEPS:
            row = []
            for j, st in enumerate(per):
                xs = st.get(b_)
                m = statistics.median(xs) if xs else float("nan")
                row.append(m)
                if xs and b_ in LIBRARY:
                    lib[j] += m
            res["steps_us"][what] = {s.label: round(m, 1) for s, m in zip(servers, row)}
            w("%-46s" % (("* " if b_ in LIBRARY else "  ") + what)[:46] +
              "".join("%13.1f" % m for m in row) + "\n")
        w("%-46s" % "* library's share (sum of starred medians)" +
          "".join("%13.1f" % x for x in lib) + "\n")
        res["library_us"] = {s.label: round(x, 1) for s, x in zip(servers, lib)}
    print(json.dumps(res))


if __name__ == "__main__":
    main()

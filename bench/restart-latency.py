#!/usr/bin/env python3
"""restart-latency: time from the restart trigger to the successor being
ready, for the HTTP example `hello` (SIGHUP) and for nginx's binary upgrade
(USR2), interleaved (hello, nginx, hello, nginx, ...), both idle.

Observed the same way for both, by polling from outside every 0.5 ms:
  hello  SIGHUP -> the pid file names the new process. libhandoff rewrites
         it only after the new generation passed the readiness handshake
         (its listeners and worker threads are up), right after telling
         NOTIFY_SOCKET MAINPID=/READY=1, which is also recorded.
  nginx  USR2 -> the pid file names the new master (it has parsed its
         configuration and inherited the listeners), and -> all its
         worker processes exist and have set their title ("nginx: worker
         process"), the point at which it can serve. Then, untimed: WINCH
         and QUIT to the old master, as in peers/nginx/restart-upgrade.
Between two restarts each script waits (untimed) until the old generation
has exited.

  bench/restart-latency.py --hello build-bench/examples/hello \
      --peers ../shared/bench/peers [--restarts 20] [--workers 2]

Prints one JSON line (every sample and the medians, in ms).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchcommon as bc  # noqa: E402

POLL = 0.0005


def restart_hello(srv, notify):
    old = srv.pid()
    t0 = time.perf_counter()
    os.kill(old, signal.SIGHUP)
    t_notify = t_pid = None
    deadline = t0 + 20
    new = 0
    while t_pid is None and time.perf_counter() < deadline:
        try:
            while True:
                msg = notify.recv(4096).decode(errors="replace")
                if "MAINPID=" in msg and t_notify is None:
                    t_notify = time.perf_counter()
        except BlockingIOError:
            pass
        p = srv.pid()
        if p and p != old and bc.alive(p):
            t_pid = time.perf_counter()
            new = p
            break
        time.sleep(POLL)
    if t_pid is None:
        raise SystemExit("hello: no new generation within 20 s")
    if t_notify is None:  # sent just before the pid file was written
        try:
            if "MAINPID=" in notify.recv(4096).decode(errors="replace"):
                t_notify = time.perf_counter()
        except BlockingIOError:
            pass
    bc.wait_until(15, lambda: not bc.alive(old), step=0.01)
    bc.reap()
    return {"pid_file_ms": (t_pid - t0) * 1000,
            "notify_ms": None if t_notify is None else (t_notify - t0) * 1000,
            "new_pid": new}


def restart_nginx(srv):
    old = srv.pid()
    t0 = time.perf_counter()
    os.kill(old, signal.SIGUSR2)
    deadline = t0 + 20
    t_pid = t_workers = None
    new = 0
    while time.perf_counter() < deadline:
        if t_pid is None:
            p = srv.pid()
            if p and p != old and bc.alive(p):
                t_pid = time.perf_counter()
                new = p
        if t_pid is not None:
            # workers get higher pids than their master, unless pids wrap
            lo = new if time.perf_counter() - t_pid < 1 else 0
            ws = [c for c in bc.children(new, min_pid=lo)
                  if bc.cmdline(c).startswith("nginx: worker process")]
            if len(ws) >= srv.workers:
                t_workers = time.perf_counter()
                break
        time.sleep(POLL)
    if t_workers is None:
        raise SystemExit("nginx: the new master or its workers did not come up within 20 s")
    os.kill(old, signal.SIGWINCH)
    os.kill(old, signal.SIGQUIT)
    if not bc.wait_until(15, lambda: not bc.alive(old), step=0.01):
        raise SystemExit("nginx: old master %d still alive" % old)
    bc.reap()
    return {"pid_file_ms": (t_pid - t0) * 1000, "workers_ms": (t_workers - t0) * 1000,
            "new_pid": new}


def summary(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    s = sorted(xs)
    return {"median": round(statistics.median(s), 3), "min": round(s[0], 3),
            "p90": round(s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))], 3),
            "max": round(s[-1], 3), "n": len(s)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hello", required=True)
    ap.add_argument("--peers", required=True, help="the shared harness's peers/ directory")
    ap.add_argument("--restarts", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--port", type=int, default=0, help="first port to try (default: 28300)")
    ap.add_argument("--json-out")
    a = ap.parse_args()
    if not 1 <= a.restarts <= 500 or not 1 <= a.workers <= 64:
        ap.error("--restarts in 1..500, --workers in 1..64")
    bc.set_subreaper()
    tmp = tempfile.mkdtemp(prefix="handoff-rl-")
    notify_path = os.path.join(tmp, "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.setblocking(False)
    os.environ["NOTIFY_SOCKET"] = notify_path  # hello inherits it; nginx ignores it
    ports = bc.PortAllocator(a.port or 28300)
    hello = bc.Server("hello", ports.get(), a.workers, tmp, hello=os.path.abspath(a.hello))
    nginx = bc.Server("nginx", ports.get(), a.workers, tmp, peers=os.path.abspath(a.peers))
    del os.environ["NOTIFY_SOCKET"]
    res = {"tool": "restart-latency", "restarts": a.restarts, "workers": a.workers,
           "hello": [], "nginx": []}
    t_budget = time.monotonic() + 60 + a.restarts * 20
    try:
        os.environ["NOTIFY_SOCKET"] = notify_path
        hello.start()
        del os.environ["NOTIFY_SOCKET"]
        nginx.start()
        for i in range(a.restarts):
            if time.monotonic() > t_budget:
                raise SystemExit("time budget exceeded")
            order = [("hello", lambda: restart_hello(hello, notify)),
                     ("nginx", lambda: restart_nginx(nginx))]
            if i % 2:
                order.reverse()
            for name, fn in order:
                time.sleep(0.1)
                res[name].append(fn())
        if not (bc.http_ok(hello.port) and bc.http_ok(nginx.port)):
            raise SystemExit("a server stopped answering after the restarts")
    finally:
        hello.stop()
        nginx.stop()
        bc.kill_descendants()
        notify.close()
        shutil.rmtree(tmp, ignore_errors=True)
    res["summary"] = {
        "hello_pid_file_ms": summary([r["pid_file_ms"] for r in res["hello"]]),
        "hello_notify_ms": summary([r["notify_ms"] for r in res["hello"]]),
        "nginx_pid_file_ms": summary([r["pid_file_ms"] for r in res["nginx"]]),
        "nginx_workers_ms": summary([r["workers_ms"] for r in res["nginx"]]),
    }
    s = res["summary"]
    bc.log("restart -> ready, median of %d: hello %.2f ms (pid file), nginx %.2f ms (pid file), "
           "%.2f ms (workers up)" % (a.restarts, s["hello_pid_file_ms"]["median"],
                                     s["nginx_pid_file_ms"]["median"],
                                     s["nginx_workers_ms"]["median"]))
    line = json.dumps(res)
    if a.json_out:
        with open(a.json_out, "a") as f:
            f.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()

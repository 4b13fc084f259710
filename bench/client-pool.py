#!/usr/bin/env python3
"""client-pool: what restarts do to idle keep-alive connections.

A pool of N keep-alive clients that pause 0.5-2.5 s between requests (as
browsers, HTTP client pools and load balancers do) runs against a server
while it is restarted R times. Per system, it counts:

  closed_idle     connections the server closed while they were idle (each
                  one is a race: a request sent at that instant is lost)
  answered_close  responses with "Connection: close"
  reopened        connections the client had to open again
  lost            requests sent that got no complete response
  bad             wrong status or body, or bytes that came while idle

  bench/client-pool.py [--systems handoff,nginx,haproxy,h2o] [--conns 1000]
      [--restarts 20] [--duration 60] [--workers 2] [--tls] [--json-out F]

Systems: handoff (examples/hello, SIGHUP; built by this script in
build-bench/ unless --hello is given), nginx (HUP), haproxy (-W, USR2),
h2o (Server::Starter, HUP). Peers come from the shared harness's peers/
(default ../shared/bench/peers). --tls runs handoff over HTTPS only (the
peers' setups are plain HTTP). One JSON line per system on stdout; a
markdown table on stderr. All traffic goes to 127.0.0.1, every run is
bounded in time, and everything started is stopped by pid at the end.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))
import benchcommon as bc  # noqa: E402
from clientpool import ClientPool  # noqa: E402

BODY = b"Hello, World!"
RESTART_SCRIPT = {"nginx": "nginx/restart", "haproxy": "haproxy/restart", "h2o": "h2o/restart"}


def build_hello():
    build = os.path.join(REPO, "build-bench")
    subprocess.run(["cmake", "-S", REPO, "-B", build, "-G", "Ninja",
                    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_TESTING=OFF"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", build, "--target", "hello"], check=True,
                   stdout=subprocess.DEVNULL)
    return os.path.join(build, "examples", "hello")


def make_cert(d):
    key, crt = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "2", "-subj", "/CN=127.0.0.1"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return crt, key


class HelloTLS(bc.Server):
    """examples/hello over TLS (bc.Server starts it plain)."""

    def __init__(self, *a, cert=None, key=None, **kw):
        super().__init__(*a, **kw)
        self.cert, self.key = cert, key

    def start(self, timeout=20):
        logf = open(os.path.join(self.rundir, "start.log"), "ab")
        self.proc = subprocess.Popen(
            [self.hello, "--listen", "127.0.0.1:%d" % self.port, "--threads", str(self.workers),
             "--pid-file", self.pidfile, "--tls-cert", self.cert, "--tls-key", self.key],
            stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        import socket
        import ssl

        def up():
            if not bc.alive(bc.read_pid(self.pidfile)):
                return False
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    with ctx.wrap_socket(s) as t:
                        t.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        return t.recv(12).startswith(b"HTTP/1.1 200")
            except OSError:
                return False
        if not bc.wait_until(timeout, up):
            raise SystemExit("hello (TLS) did not become ready")
        return self


def restart(system, srv, peers):
    if system == "handoff":
        pid = srv.pid()
        os.kill(pid, 1)  # SIGHUP
        # done when the pid file names the successor (it wrote it at ready)
        bc.wait_until(20, lambda: srv.pid() not in (0, pid) and bc.alive(srv.pid()))
        return 0
    env = dict(srv.env(), PID=str(srv.pid()))
    return subprocess.run([os.path.join(peers, RESTART_SCRIPT[system])], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=30).returncode


def run_system(system, a, port, rundir, hello, peers, certs):
    kind = "hello" if system == "handoff" else system
    if system == "handoff" and a.tls:
        srv = HelloTLS(kind, port, a.workers, rundir, hello=hello, cert=certs[0], key=certs[1])
    else:
        srv = bc.Server(kind, port, a.workers, rundir, hello=hello, peers=peers, nofile=65536)
    srv.start()
    pool = ClientPool("127.0.0.1", port, conns=a.conns, expect_body=BODY, tls=a.tls,
                      pause_min=a.pause_min, pause_max=a.pause_max, seed=1)
    every = a.duration / (a.restarts + 1)
    plan = [every * (i + 1) for i in range(a.restarts)]
    done = []
    worker = {"t": None}

    def tick(elapsed):
        t = worker["t"]
        if plan and elapsed >= plan[0] and (t is None or not t.is_alive()):
            plan.pop(0)

            def go():
                t0 = time.monotonic()
                rc = restart(system, srv, peers)
                done.append({"at_s": round(elapsed, 2), "rc": rc,
                             "ms": round((time.monotonic() - t0) * 1000, 1)})
            worker["t"] = threading.Thread(target=go, daemon=True)
            worker["t"].start()
    try:
        counts = pool.run(a.duration, on_tick=tick)
        if worker["t"]:
            worker["t"].join(30)
    finally:
        srv.stop()
    n = max(1, len(done))
    out = {"tool": "client-pool", "system": system, "tls": a.tls, "conns": a.conns,
           "workers": a.workers, "duration_s": a.duration, "restarts_planned": a.restarts,
           "restarts_done": sum(1 for d in done if d["rc"] == 0),
           "pause_s": [a.pause_min, a.pause_max], **counts,
           "per_restart": {k: round(counts[k] / n, 1)
                           for k in ("closed_idle", "answered_close", "reopened", "lost")},
           "first_events": pool.events[:20], "restarts": done}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--systems", default="handoff,nginx,haproxy,h2o")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--restarts", type=int, default=20)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pause-min", type=float, default=0.5)
    ap.add_argument("--pause-max", type=float, default=2.5)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--port", type=int, default=28300)
    ap.add_argument("--hello", help="examples/hello binary (default: build a Release one)")
    ap.add_argument("--peers", default=os.path.join(os.path.dirname(REPO), "shared", "bench",
                                                    "peers"))
    ap.add_argument("--json-out")
    a = ap.parse_args()
    bc.set_subreaper()
    bc.raise_nofile(a.conns * 2 + 1024)
    systems = [s for s in a.systems.split(",") if s]
    for s in systems:
        if s not in ("handoff",) + tuple(RESTART_SCRIPT):
            raise SystemExit("unknown system %r" % s)
        if s != "handoff" and a.tls:
            raise SystemExit("--tls: only handoff (the peers' setups are plain HTTP)")
        if s != "handoff" and not os.path.isdir(os.path.join(a.peers, s)):
            raise SystemExit("peer %s not found under %s (--peers)" % (s, a.peers))
    hello = a.hello or (build_hello() if "handoff" in systems else None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="client-pool.") as rundir:
        certs = make_cert(rundir) if a.tls else None
        for i, s in enumerate(systems):
            bc.log("client-pool: %s, %d connections, %d restarts in %.0f s"
                   % (s, a.conns, a.restarts, a.duration))
            r = run_system(s, a, a.port + 10 * i, rundir, hello, a.peers, certs)
            rows.append(r)
            line = json.dumps(r)
            print(line, flush=True)
            if a.json_out:
                with open(a.json_out, "a") as f:
                    f.write(line + "\n")
    sys.stderr.write("\n| system | restarts | closed while idle | answered close | reopened "
                     "| lost | bad | (per restart: closed / close / reopened / lost) |\n"
                     "|---|--:|--:|--:|--:|--:|--:|---|\n")
    for r in rows:
        pr = r["per_restart"]
        sys.stderr.write("| %s%s | %d | %d | %d | %d | %d | %d | %s / %s / %s / %s |\n" % (
            r["system"], " (TLS)" if r["tls"] else "", r["restarts_done"], r["closed_idle"],
            r["answered_close"], r["reopened"], r["lost"],
            r["bad_response"] + r["unexpected_data"], pr["closed_idle"], pr["answered_close"],
            pr["reopened"], pr["lost"]))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""h2-bench: HTTP/2 over TLS, handoff's hello against nginx 1.22 (http2 on)
and h2o, at 1 and 2 workers, in one run.

  bench/h2-bench.py [--hello PATH] [--rounds N] [--seconds S] [--conns N]
                    [--idle N] [--out FILE.json]

Throughput: h2load (nghttp2-client) over TLS 1.3 with ALPN h2,
`h2load -t2 -c32 -m10 -D S --warm-up-time 1 --log-file F https://.../`,
rounds interleaved (hello, nginx, h2o at 1 worker, then at 2, the order
reversed every other round); requests/s from h2load, p99 computed from
the per-request log (h2load prints no percentiles); medians over rounds.
Every server answers GET / with the 13 bytes "Hello, World!" from memory
(nginx `return 200`, h2o an mruby handler as in the shared peer, hello its
handler), keeps connections for as many requests as h2load sends, and uses
the same ECDSA P-256 certificate.

Memory: user-space memory (Pss and Private, /proc/PID/smaps_rollup summed
over the server's processes) per idle HTTP/2 TLS connection: --idle
connections each do the TLS handshake (ALPN h2), the preface, SETTINGS
(acknowledged) and one GET, read the whole response and stay open; the
difference before/after, divided by the count. "After" is taken 2 s after
the last connection's GET: hello gives an HTTP/2 connection's nghttp2
memory back once it has been idle for 500 ms (earlier it would still be
counted), nginx and h2o free what they free at once.

Prints one JSON object (and writes it to --out) with the raw rounds, the
medians and the ratios hello/nginx and hello/h2o. Everything runs on
127.0.0.1; every process started is a descendant of this one (subreaper)
and is killed at the end. Needs nghttp2-client, nginx, h2o, openssl.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
import benchcommon as bc  # noqa: E402

try:
    import hpack  # noqa: F401  (only to check the H2 client below is usable)
except ImportError:
    sys.path.append("/usr/lib/python3/dist-packages")

BODY = b"Hello, World!"

NGINX_CONF = """worker_processes {workers};
worker_rlimit_nofile 65536;
pid {pidfile};
error_log {dir}/error.log warn;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    http2_max_concurrent_streams 100;
    client_body_temp_path {dir}/cb; proxy_temp_path {dir}/px; fastcgi_temp_path {dir}/fc;
    uwsgi_temp_path {dir}/uw; scgi_temp_path {dir}/sc;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            default_type text/plain;
            return 200 "Hello, World!";
        }}
    }}
}}
"""

H2O_CONF = """listen:
  host: 127.0.0.1
  port: {port}
  ssl:
    certificate-file: {cert}
    key-file: {key}
    minimum-version: TLSv1.2
num-threads: {workers}
error-log: {dir}/error.log
http2-max-concurrent-requests-per-connection: 100
hosts:
  default:
    paths:
      /:
        mruby.handler: |
          Proc.new do |env|
            [200, {{"content-type" => "text/plain"}}, ["Hello, World!"]]
          end
"""


def log(msg):
    bc.log(msg)


class Srv:
    def __init__(self, kind, workers, port, tmp, hello, cert, key):
        self.kind, self.workers, self.port = kind, workers, port
        self.dir = os.path.join(tmp, "%s-%d-%d" % (kind, workers, port))
        os.makedirs(self.dir, exist_ok=True)
        self.pidfile = os.path.join(self.dir, "server.pid")
        self.hello, self.cert, self.key = hello, cert, key

    def start(self):
        if not bc.port_free(self.port):
            raise SystemExit("port %d is in use" % self.port)
        logf = open(os.path.join(self.dir, "out.log"), "ab")
        fmt = dict(workers=self.workers, pidfile=self.pidfile, dir=self.dir, port=self.port,
                   cert=self.cert, key=self.key)
        if self.kind == "hello":
            subprocess.Popen([self.hello, "--listen", "127.0.0.1:%d" % self.port, "--threads",
                              str(self.workers), "--tls-cert", self.cert, "--tls-key", self.key,
                              "--http2", "--max-requests", "100000000", "--pid-file",
                              self.pidfile], stdout=logf, stderr=logf,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        elif self.kind == "nginx":
            conf = os.path.join(self.dir, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(**fmt))
            r = subprocess.run(["/usr/sbin/nginx", "-p", self.dir, "-c", conf, "-e",
                                os.path.join(self.dir, "error.log")], stdout=logf,
                               stderr=logf, stdin=subprocess.DEVNULL, timeout=30)
            if r.returncode:
                raise SystemExit("nginx failed to start (see %s)" % self.dir)
        elif self.kind == "h2o":
            conf = os.path.join(self.dir, "h2o.conf")
            with open(conf, "w") as f:
                f.write(H2O_CONF.format(**fmt))
            # Started as root, h2o writes its pid file after dropping to
            # "nobody": it runs in the foreground, so its pid is ours to keep.
            p = subprocess.Popen([shutil.which("h2o"), "-c", conf], stdout=logf, stderr=logf,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
            with open(self.pidfile, "w") as f:
                f.write("%d\n" % p.pid)
        logf.close()
        ok = bc.wait_until(20, lambda: bc.alive(bc.read_pid(self.pidfile)) and
                           h2_get_ok(self.port))
        if not ok:
            raise SystemExit("%s did not come up (see %s)" % (self.kind, self.dir))
        return self

    def pids(self):
        p = bc.read_pid(self.pidfile)
        return [p] + [c for c in bc.descendants(p) if bc.alive(c)]

    def stop(self):
        for p in self.pids():
            try:
                os.kill(p, 15)
            except OSError:
                pass
        bc.wait_until(10, lambda: not any(bc.alive(p) for p in self.pids()))
        bc.reap()
        bc.wait_until(5, lambda: bc.port_free(self.port))


# ---------------------------------------------------------------------------
# A minimal HTTP/2 client for the readiness check and the idle connections


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(t, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([t, flags]) + struct.pack(">I", sid) + \
        payload


def lit(n, v):
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


_CTX = None


def tls_h2(port, timeout=5):
    global _CTX
    if _CTX is None:  # one context: loading CA certificates per connection is slow
        _CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        _CTX.check_hostname = False
        _CTX.verify_mode = ssl.CERT_NONE
        _CTX.set_alpn_protocols(["h2"])
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    t = _CTX.wrap_socket(s, server_hostname="localhost")
    if t.selected_alpn_protocol() != "h2":
        t.close()
        raise OSError("ALPN did not choose h2")
    return t


def h2_get(t):
    """Preface, SETTINGS, GET /, the whole response; ACKs the server's
    SETTINGS. Returns the body."""
    hb = lit(b":method", b"GET") + lit(b":scheme", b"https") + \
        lit(b":authority", b"localhost") + lit(b":path", b"/")
    t.sendall(PREFACE + frame(4, 0, 0) + frame(1, 0x5, 1, hb))
    buf, body, done = b"", b"", False
    while not done:
        d = t.recv(65536)
        if not d:
            raise OSError("closed")
        buf += d
        while len(buf) >= 9:
            n = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + n:
                break
            ft, fl, sid, p = buf[3], buf[4], int.from_bytes(buf[5:9], "big"), buf[9:9 + n]
            buf = buf[9 + n:]
            if ft == 4 and not fl & 1:
                t.sendall(frame(4, 1, 0))
            elif ft == 0 and sid == 1:
                body += p
                done = bool(fl & 1)
            elif ft == 1 and sid == 1 and fl & 1:
                done = True
            elif ft in (3, 7):
                raise OSError("stream reset or GOAWAY")
    return body


def h2_get_ok(port):
    try:
        t = tls_h2(port, timeout=2)
        ok = h2_get(t) == BODY
        t.close()
        return ok
    except (OSError, ssl.SSLError):
        return False


# ---------------------------------------------------------------------------


def memory(pids):
    tot = {"pss": 0, "private": 0, "rss": 0}
    for p in pids:
        try:
            with open("/proc/%d/smaps_rollup" % p) as f:
                for line in f:
                    k, _, v = line.partition(":")
                    v = v.split()
                    if not v:
                        continue
                    kb = int(v[0]) * 1024
                    if k == "Pss":
                        tot["pss"] += kb
                    elif k == "Rss":
                        tot["rss"] += kb
                    elif k in ("Private_Clean", "Private_Dirty"):
                        tot["private"] += kb
        except OSError:
            pass
    return tot


def idle_memory(srv, n, settle=2.0):
    time.sleep(settle)
    before = memory(srv.pids())
    conns = []
    try:
        for i in range(n):
            t = tls_h2(srv.port)
            if h2_get(t) != BODY:
                raise SystemExit("%s: bad response on idle connection %d" % (srv.kind, i))
            conns.append(t)
        time.sleep(settle)
        after = memory(srv.pids())
        # Every connection is still open (a read would block, not return EOF).
        for t in conns:
            t.setblocking(False)
            try:
                if t.recv(1) == b"":
                    raise SystemExit("%s closed an idle connection" % srv.kind)
            except ssl.SSLWantReadError:
                pass
    finally:
        for t in conns:
            try:
                t.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                t.close()
            except OSError:
                pass
    return {"conns": n, "before": before, "after": after,
            "per_conn": {k: (after[k] - before[k]) / n for k in before}}


def h2load(port, seconds, logfile, clients, streams, threads):
    cmd = ["h2load", "-t%d" % threads, "-c%d" % clients, "-m%d" % streams, "-D%d" % seconds,
           "--warm-up-time", "1", "--log-file", logfile, "https://127.0.0.1:%d/" % port]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    out = p.stdout + p.stderr
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored", out)
    if not m or not r:
        raise SystemExit("h2load output not understood:\n" + out[-2000:])
    proto = re.search(r"Application protocol: (\S+)", out)
    lat = []
    with open(logfile) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) == 3 and parts[1] != "-1":
                lat.append(int(parts[2]))
    os.unlink(logfile)
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000.0 if lat else None
    p50 = lat[len(lat) // 2] / 1000.0 if lat else None
    return {"rps": float(m.group(1)), "requests": int(r.group(1)),
            "succeeded": int(r.group(4)), "failed": int(r.group(5)),
            "p50_ms": p50, "p99_ms": p99, "protocol": proto.group(1) if proto else None,
            "cmd": " ".join(cmd)}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hello", default=os.path.join(REPO, "build-bench", "examples", "hello"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--streams", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2, help="h2load threads")
    ap.add_argument("--idle", type=int, default=2000, help="idle connections for memory")
    ap.add_argument("--only", default="throughput,memory")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    for tool in ("h2load", "h2o", "openssl"):
        if not shutil.which(tool):
            raise SystemExit("%s not found (scripts/deps.sh)" % tool)
    if not os.path.exists("/usr/sbin/nginx") or not os.access(a.hello, os.X_OK):
        raise SystemExit("nginx or %s missing (build hello: cmake --build build-bench "
                         "--target hello)" % a.hello)
    bc.set_subreaper()
    bc.raise_nofile(65536)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)  # so that finally: cleans up
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    tmp = tempfile.mkdtemp(prefix="h2-bench-")
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-keyout", key, "-out", cert], check=True,
                   capture_output=True)
    ports = bc.PortAllocator(28600)
    kinds = ["hello", "nginx", "h2o"]
    res = {"machine": {"nproc": os.cpu_count(), "kernel": os.uname().release,
                       "nginx": subprocess.run(["/usr/sbin/nginx", "-v"], capture_output=True,
                                               text=True).stderr.strip(),
                       "h2o": subprocess.run(["h2o", "--version"], capture_output=True,
                                             text=True).stdout.splitlines()[0],
                       "h2load": subprocess.run(["h2load", "--version"], capture_output=True,
                                                text=True).stdout.strip()},
           "params": vars(a), "throughput": [], "memory": []}
    sections = a.only.split(",")
    try:
        if "throughput" in sections:
            for r in range(a.rounds):
                for w in (1, 2):
                    order = kinds if r % 2 == 0 else list(reversed(kinds))
                    for kind in order:
                        srv = Srv(kind, w, ports.get(), tmp, a.hello, cert, key).start()
                        try:
                            x = h2load(srv.port, a.seconds, os.path.join(tmp, "h2load.log"),
                                       a.conns, a.streams, a.threads)
                        finally:
                            srv.stop()
                        x.update(kind=kind, workers=w, round=r + 1)
                        res["throughput"].append(x)
                        log("round %d %s-%d: %.0f req/s, p99 %.2f ms, %d failed (%s)" % (
                            r + 1, kind, w, x["rps"], x["p99_ms"] or -1, x["failed"],
                            x["protocol"]))
        if "memory" in sections:
            for w in (1, 2):
                for kind in kinds:
                    srv = Srv(kind, w, ports.get(), tmp, a.hello, cert, key).start()
                    try:
                        m = idle_memory(srv, a.idle)
                    finally:
                        srv.stop()
                    m.update(kind=kind, workers=w)
                    res["memory"].append(m)
                    log("%s-%d: %.0f B Pss, %.0f B private per idle HTTP/2 TLS connection" % (
                        kind, w, m["per_conn"]["pss"], m["per_conn"]["private"]))
    finally:
        bc.kill_descendants()
        shutil.rmtree(tmp, ignore_errors=True)
    summ = {}
    for w in (1, 2):
        for kind in kinds:
            rs = [x for x in res["throughput"] if x["kind"] == kind and x["workers"] == w]
            ms = [x for x in res["memory"] if x["kind"] == kind and x["workers"] == w]
            summ["%s-%d" % (kind, w)] = {
                "rps": med([x["rps"] for x in rs]), "p99_ms": med([x["p99_ms"] for x in rs]),
                "failed": sum(x["failed"] for x in rs),
                "idle_pss": ms[0]["per_conn"]["pss"] if ms else None,
                "idle_private": ms[0]["per_conn"]["private"] if ms else None}
        h = summ["hello-%d" % w]
        for peer in ("nginx", "h2o"):
            p = summ["%s-%d" % (peer, w)]
            summ["hello/%s-%d" % (peer, w)] = {k: ratio(h[k], p[k]) for k in
                                               ("rps", "p99_ms", "idle_pss", "idle_private")}
    res["summary"] = summ
    out = json.dumps(res, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(out)
    print(out)
    print("\n| server | workers | req/s | p99 ms | failed | idle Pss B/conn | "
          "idle private B/conn |", file=sys.stderr)
    print("|---|---|---|---|---|---|---|", file=sys.stderr)
    for w in (1, 2):
        for kind in kinds:
            s = summ["%s-%d" % (kind, w)]
            print("| %s | %d | %s | %s | %d | %s | %s |" % (
                kind, w, "%.0f" % s["rps"] if s["rps"] else "-",
                "%.2f" % s["p99_ms"] if s["p99_ms"] else "-", s["failed"],
                "%.0f" % s["idle_pss"] if s["idle_pss"] is not None else "-",
                "%.0f" % s["idle_private"] if s["idle_private"] is not None else "-"),
                file=sys.stderr)
    for w in (1, 2):
        for peer in ("nginx", "h2o"):
            print("hello/%s at %d worker(s): %s" % (peer, w, summ["hello/%s-%d" % (peer, w)]),
                  file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""idle-conns: user-space memory a server spends per idle keep-alive
connection, plain HTTP or HTTPS.

Reads the server's memory (Rss, Pss and Private = Private_Clean +
Private_Dirty from /proc/PID/smaps_rollup, summed over the process named by
--pidfile and all its descendants, e.g. nginx's master and workers), opens
--conns connections to 127.0.0.1:--port (with --tls: completes a TLS
handshake on each, ALPN http/1.1, no certificate check), does one keep-alive
GET on each (reads the whole response) and holds them all open and idle,
reads the memory again after --settle seconds, checks that every connection
is still open, and closes them all (with RST, so that no TIME_WAIT is left
behind). Non-blocking sockets on one epoll selector, at most --batch
connecting, handshaking or waiting for their response at a time; the whole
run is bounded by --timeout seconds.

  bench/idle-conns.py --port 28100 --pidfile /run/x.pid [--tls] [--conns 10000]

Prints one JSON line: memory before/after and the difference per
connection (bytes), for each of rss, pss, private. Kernel memory (socket
buffers, struct sock) is not user-space memory and is not counted.

Side by side in one run (--compare): starts each server itself on a free
port of 127.0.0.1, one at a time, with the same number of workers and the
same self-signed certificate (RSA 2048, made with openssl), measures it as
above and stops it; rounds interleave the servers (A B C, then C B A) and
the summary gives medians.

  bench/idle-conns.py --compare --hello build/examples/hello \\
      [--servers hello,nginx,h2o] [--modes plain,tls] [--workers 1] \\
      [--rounds 2] [--conns 4000] [--tls-conns 2000]

  hello  examples/hello --threads W (RLIMIT_NOFILE raised before exec)
  nginx  /usr/sbin/nginx, worker_processes W, worker_connections 16384,
         worker_rlimit_nofile, `return 200 "Hello, World!"`, access_log off;
         HTTPS: `listen ... ssl` with nginx's TLS defaults (which set
         SSL_MODE_RELEASE_BUFFERS; no session cache, session tickets on)
  h2o    h2o 2.2 (as the invoking user), num-threads W, max-connections 20000, the same mruby
         handler as ../shared/bench/peers/h2o; HTTPS: `ssl:` on the listener
         with h2o's defaults

Prints a table (bytes per connection, medians) on stderr and one JSON line
with every run and the summary on stdout.
"""
import argparse
import json
import os
import pwd
import selectors
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchcommon as bc  # noqa: E402

REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
TCP_ESTABLISHED = 1


def complete(buf):
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    clen = 0
    for line in buf[:end].split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            clen = int(v.strip())
    return len(buf) >= end + 4 + clen


def server_pids(pidfile):
    p = bc.read_pid(pidfile)
    if not bc.alive(p):
        raise SystemExit("pid file %s names no live process" % pidfile)
    return [p] + [c for c in bc.descendants(p) if bc.alive(c)]


def client_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def open_all(port, n, batch, deadline, tls=False):
    """n connections, each with one answered GET. Returns (sockets,
    connect retries). States: connecting -> [handshake ->] reading."""
    ctx = client_context() if tls else None
    sel = selectors.DefaultSelector()
    done, pending, bufs = [], 0, {}
    opened = 0
    failures = 0

    def retry(s, err):
        nonlocal pending, opened, failures
        failures += 1
        sel.unregister(s)
        s.close()
        pending -= 1
        opened -= 1  # try again
        if failures > n // 10 + 100:
            raise SystemExit("too many failed connects or handshakes (last: %s)" % err)

    def send_request(s):
        try:
            s.send(REQ)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            raise SystemExit("could not send a 37-byte request at once")
        bufs[s] = b""
        sel.modify(s, selectors.EVENT_READ, "reading")

    def handshake(s):
        try:
            s.do_handshake()
        except ssl.SSLWantReadError:
            sel.modify(s, selectors.EVENT_READ, "handshake")
            return
        except ssl.SSLWantWriteError:
            sel.modify(s, selectors.EVENT_WRITE, "handshake")
            return
        except (ssl.SSLError, OSError) as e:
            retry(s, e)
            return
        send_request(s)

    while len(done) < n:
        if time.monotonic() > deadline:
            raise SystemExit("timed out with %d of %d connections set up" % (len(done), n))
        while opened < n and pending < batch:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            sel.register(s, selectors.EVENT_WRITE, "connecting")
            opened += 1
            pending += 1
        for key, _ev in sel.select(timeout=0.1):
            s = key.fileobj
            if key.data == "connecting":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    retry(s, "errno %d" % err)
                    continue
                if tls:
                    sel.unregister(s)
                    s = ctx.wrap_socket(s, server_side=False, do_handshake_on_connect=False)
                    sel.register(s, selectors.EVENT_WRITE, "handshake")
                    handshake(s)
                else:
                    send_request(s)
            elif key.data == "handshake":
                handshake(s)
            else:
                try:
                    chunk = s.recv(4096)
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue
                except (OSError, ssl.SSLError):
                    chunk = b""
                if not chunk:
                    raise SystemExit("the server closed a connection before responding")
                bufs[s] += chunk
                if complete(bufs[s]):
                    if not bufs[s].startswith(b"HTTP/1.1 200"):
                        raise SystemExit("unexpected response: %r" % bufs[s][:40])
                    del bufs[s]
                    sel.unregister(s)
                    done.append(s)
                    pending -= 1
    sel.close()
    return done, failures


def still_open(socks):
    """How many of socks the server has not closed (TCP state established:
    a connection the server closed is in CLOSE_WAIT on this side). Works for
    TLS sockets too, without reading from them."""
    n = 0
    for s in socks:
        try:
            if s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == TCP_ESTABLISHED:
                n += 1
        except OSError:
            pass
    return n


def close_all(socks):
    linger = struct.pack("ii", 1, 0)
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        except OSError:
            pass
        s.close()


def measure(port, pidfile, conns, tls=False, batch=200, settle=1.0, timeout=90.0, label=""):
    """One measurement of a running server; returns the result dict."""
    deadline = time.monotonic() + timeout
    time.sleep(settle)
    pids = server_pids(pidfile)
    before = bc.memory(pids)
    t0 = time.monotonic()
    socks, failures = open_all(port, conns, batch, deadline, tls)
    setup_s = time.monotonic() - t0
    try:
        time.sleep(settle)
        pids_after = server_pids(pidfile)
        after = bc.memory(pids_after)
        n_open = still_open(socks)
    finally:
        close_all(socks)
    res = {"tool": "idle-conns", "label": label, "tls": bool(tls), "conns": conns,
           "open_at_measure": n_open, "connect_retries": failures,
           "setup_s": round(setup_s, 2), "procs_before": len(pids),
           "procs_after": len(pids_after), "before": before, "after": after,
           "per_conn": {k: round((after[k] - before[k]) / conns, 1) for k in before}}
    if n_open != conns:
        res["error"] = "only %d of %d connections still open at the measurement" % (n_open,
                                                                                   conns)
    sys.stderr.write("idle-conns %s%s: %d conns, per connection: pss %.0f B, private %.0f B, "
                     "rss %.0f B\n" % (label, " (TLS)" if tls else "", conns,
                                       res["per_conn"]["pss"], res["per_conn"]["private"],
                                       res["per_conn"]["rss"]))
    return res


# ---------------------------------------------------------------------------
# --compare: start each server ourselves

NGINX_CONF = """\
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {pidfile};
error_log {rundir}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {rundir}/tmp/client_body;
    proxy_temp_path       {rundir}/tmp/proxy;
    fastcgi_temp_path     {rundir}/tmp/fastcgi;
    uwsgi_temp_path       {rundir}/tmp/uwsgi;
    scgi_temp_path        {rundir}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port}{ssl};
{ssl_conf}        location / {{
            default_type text/plain;
            return 200 "Hello, World!";
        }}
    }}
}}
"""

H2O_CONF = """\
user: {user}
listen:
  host: 127.0.0.1
  port: {port}
{ssl_conf}num-threads: {workers}
max-connections: 20000
pid-file: {pidfile}
error-log: {rundir}/error.log
hosts:
  default:
    paths:
      /:
        mruby.handler: |
          Proc.new do |env|
            [200, {{"content-type" => "text/plain"}}, ["Hello, World!"]]
          end
"""


def make_cert(d, key_type):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", key_type, "-nodes", "-subj",
                    "/CN=localhost", "-days", "2", "-keyout", key, "-out", cert],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    return cert, key


class Peer:
    """One server started by this script on 127.0.0.1:port."""

    def __init__(self, kind, port, workers, tls, rundir, hello, cert, nofile):
        self.kind, self.port, self.workers, self.tls = kind, port, workers, tls
        self.rundir = os.path.join(rundir, "%s-%s-%d" % (kind, "tls" if tls else "plain", port))
        os.makedirs(self.rundir, exist_ok=True)
        self.pidfile = os.path.join(self.rundir, "server.pid")
        self.hello, self.cert, self.nofile = hello, cert, nofile
        self.proc = None

    def start(self, timeout=20):
        if not bc.port_free(self.port):
            raise SystemExit("port %d is in use" % self.port)
        logf = open(os.path.join(self.rundir, "start.log"), "ab")
        n = self.nofile

        def pre():
            bc.raise_nofile(n)
        if self.kind == "hello":
            argv = [self.hello, "--listen", "127.0.0.1:%d" % self.port, "--threads",
                    str(self.workers), "--pid-file", self.pidfile]
            if self.tls:
                argv += ["--tls-cert", self.cert[0], "--tls-key", self.cert[1]]
            self.proc = subprocess.Popen(argv, stdout=logf, stderr=logf,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=pre)
        elif self.kind == "nginx":
            os.makedirs(os.path.join(self.rundir, "tmp"), exist_ok=True)
            conf = os.path.join(self.rundir, "nginx.conf")
            ssl_conf = ("        ssl_certificate %s;\n        ssl_certificate_key %s;\n"
                        % self.cert) if self.tls else ""
            with open(conf, "w") as f:
                f.write(NGINX_CONF.format(workers=self.workers, nofile=self.nofile,
                                          pidfile=self.pidfile, rundir=self.rundir,
                                          port=self.port, ssl=" ssl" if self.tls else "",
                                          ssl_conf=ssl_conf))
            r = subprocess.run(["/usr/sbin/nginx", "-p", self.rundir, "-c", conf, "-e",
                                os.path.join(self.rundir, "error.log")],
                               stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, timeout=30,
                               preexec_fn=pre)
            if r.returncode:
                raise SystemExit("nginx failed to start (see %s)" % self.rundir)
        elif self.kind == "h2o":
            h2o = shutil.which("h2o") or "/usr/bin/h2o"
            conf = os.path.join(self.rundir, "h2o.conf")
            ssl_conf = ("  ssl:\n    certificate-file: %s\n    key-file: %s\n"
                        % self.cert) if self.tls else ""
            with open(conf, "w") as f:
                f.write(H2O_CONF.format(port=self.port, workers=self.workers,
                                        pidfile=self.pidfile, rundir=self.rundir,
                                        ssl_conf=ssl_conf,
                                        user=pwd.getpwuid(os.getuid()).pw_name))
            self.proc = subprocess.Popen([h2o, "-c", conf], stdout=logf, stderr=logf,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=pre)
        else:
            raise SystemExit("unknown server %s" % self.kind)
        logf.close()
        ok = bc.wait_until(timeout, lambda: bc.alive(bc.read_pid(self.pidfile)) and
                           self.ready())
        if not ok:
            self.stop()
            raise SystemExit("%s on port %d did not become ready (see %s)"
                             % (self.kind, self.port, self.rundir))
        return self

    def ready(self):
        if not self.tls:
            return bc.http_ok(self.port)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                with client_context().wrap_socket(s) as t:
                    t.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                    return t.recv(64).startswith(b"HTTP/1.1 200")
        except (OSError, ssl.SSLError):
            return False

    def stop(self, grace=5.0):
        pids = set()
        p = bc.read_pid(self.pidfile)
        if bc.alive(p):
            pids.add(p)
            pids.update(bc.descendants(p))
        if self.proc and self.proc.poll() is None:
            pids.add(self.proc.pid)
        for q in pids:
            try:
                os.kill(q, signal.SIGQUIT if self.kind == "nginx" and q == p else signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(bc.alive(q) for q in pids):
            bc.reap()
            time.sleep(0.05)
        for q in pids:
            if bc.alive(q):
                try:
                    os.kill(q, signal.SIGKILL)
                except OSError:
                    pass
        if self.proc:
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        bc.reap()


def median(xs):
    s = sorted(xs)
    if not s:
        return float("nan")
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2


def compare(a):
    if not a.hello and "hello" in a.servers:
        raise SystemExit("--compare needs --hello PATH (examples/hello)")
    bc.set_subreaper()
    nofile = max(a.conns, a.tls_conns) + 2048
    bc.raise_nofile(nofile)
    tmp = tempfile.mkdtemp(prefix="idle-conns-")
    cert = make_cert(tmp, a.key_type) if "tls" in a.modes else None
    ports = bc.PortAllocator(a.base_port)
    runs = []
    try:
        for r in range(a.rounds):
            order = a.servers if r % 2 == 0 else list(reversed(a.servers))
            for mode in a.modes:
                tls = mode == "tls"
                for kind in order:
                    peer = Peer(kind, ports.get(), a.workers, tls, tmp,
                                os.path.abspath(a.hello) if a.hello else None, cert, nofile)
                    peer.start()
                    try:
                        j = measure(peer.port, peer.pidfile, a.tls_conns if tls else a.conns,
                                    tls=tls, batch=a.batch, settle=a.settle,
                                    timeout=a.timeout, label="%s-%d" % (kind, a.workers))
                    finally:
                        peer.stop()
                    if "error" in j:
                        raise SystemExit("idle-conns %s %s: %s" % (kind, mode, j["error"]))
                    j.update(server=kind, mode=mode, workers=a.workers, round=r + 1)
                    runs.append(j)
    finally:
        bc.kill_descendants()
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {}
    sys.stderr.write("\nidle-conns --compare: bytes per idle connection, median of %d round(s), "
                     "%d worker(s)\n" % (a.rounds, a.workers))
    sys.stderr.write("%-6s %-6s %7s %9s %9s %9s\n" % ("mode", "server", "conns", "Pss",
                                                     "Private", "Rss"))
    for mode in a.modes:
        for kind in a.servers:
            rs = [x for x in runs if x["server"] == kind and x["mode"] == mode]
            s = {k: median([x["per_conn"][k] for x in rs]) for k in ("pss", "private", "rss")}
            s["conns"] = rs[0]["conns"] if rs else 0
            summary["%s-%s" % (kind, mode)] = s
            sys.stderr.write("%-6s %-6s %7d %9.0f %9.0f %9.0f\n" % (
                mode, kind, s["conns"], s["pss"], s["private"], s["rss"]))
    print(json.dumps({"tool": "idle-conns", "compare": True, "workers": a.workers,
                      "rounds": a.rounds, "runs": runs, "summary": summary}))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int)
    ap.add_argument("--pidfile")
    ap.add_argument("--tls", action="store_true", help="connect with TLS")
    ap.add_argument("--conns", type=int, default=None,
                    help="connections (default 10000; --compare: 4000 plain)")
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=90.0)
    ap.add_argument("--label", default="")
    ap.add_argument("--compare", action="store_true",
                    help="start and measure each of --servers in turn")
    ap.add_argument("--hello", help="--compare: path of examples/hello")
    ap.add_argument("--servers", default="hello,nginx,h2o")
    ap.add_argument("--modes", default="plain,tls")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tls-conns", type=int, default=2000,
                    help="--compare: connections for HTTPS (default 2000)")
    ap.add_argument("--key-type", default="rsa:2048",
                    help="--compare: openssl req -newkey argument (default rsa:2048)")
    ap.add_argument("--base-port", type=int, default=28300)
    a = ap.parse_args()
    if a.compare:
        a.conns = a.conns or 4000
        a.servers = [s for s in a.servers.split(",") if s]
        a.modes = [m for m in a.modes.split(",") if m]
        if set(a.modes) - {"plain", "tls"} or set(a.servers) - {"hello", "nginx", "h2o"}:
            ap.error("--servers from hello,nginx,h2o; --modes from plain,tls")
        for n in (a.conns, a.tls_conns):
            if not 1 <= n <= 30000:
                ap.error("connections in 1..30000")
        return compare(a)
    a.conns = a.conns or 10000
    if a.port is None or not a.pidfile:
        ap.error("--port and --pidfile are required (or use --compare)")
    if not 1 <= a.conns <= 30000:
        ap.error("--conns in 1..30000")
    bc.raise_nofile(a.conns + 1024)
    res = measure(a.port, a.pidfile, a.conns, tls=a.tls, batch=a.batch, settle=a.settle,
                  timeout=a.timeout, label=a.label)
    print(json.dumps(res))
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Unmodified servers from Debian under `handoff run --preload`, each
reloaded 20 times under load: wrk (keep-alive), a probe that opens a new
connection per request, and a slow request before every reload where the
server can make one. Expected: no refused connection, no probe failure,
every reload done. What a server's own drain loses (keep-alive connections
it closes, Redis's blocked clients) is reported, not asserted.

    it-preload-servers.py --handoff H CASE...        (all: every case)

bench/preload-servers.py measures the same servers restarted plainly and
their throughput with and without the shim.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import handofftest as T  # noqa: E402
from handofftest import check, free_port, log  # noqa: E402
from handofftest.load import Probe, has_ipv6, http_once, in_thread, wrk_start, wrk_stop  # noqa: E402
from handofftest.supervisor import Supervisor  # noqa: E402

ARGS = None
TMP = None
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
HERE = os.path.dirname(os.path.abspath(__file__))


def preload_supervisor(command, listen, extra=()):
    return Supervisor(TMP, command, listen=listen, extra=["--preload"] + list(extra),
                      env={"LD_PRELOAD": ""})


def reload(sup):
    t = time.monotonic()
    rc, out, err = sup.ctl("reload", timeout=60)
    check(rc == 0, "reload failed (%d): %s%s\n%s" % (rc, out, err, sup.log()[-3000:]))
    return (time.monotonic() - t) * 1000


def reload_under_load(sup, probe_once, reloads, wrk_url=None, slow_once=None, pause=0.4, extra_load=None):
    """The reloads under load; returns what the load saw."""
    slow, threads, times = [], [], []
    wrk = wrk_start(wrk_url, int(reloads * (pause + 1.5) + 10)) if wrk_url else None
    extra = extra_load() if extra_load else None
    with Probe(probe_once) as probe:
        time.sleep(1)
        for _ in range(reloads):
            if slow_once:
                threads.append(in_thread(slow, slow_once))
                time.sleep(0.3)
            times.append(reload(sup))
            time.sleep(pause)
        time.sleep(0.5)
    for t in threads:
        t.join(10)
    r = {"reloads": reloads, "probe_ok": probe.ok, "probe_failures": len(probe.failures),
         "probe_kinds": probe.kinds(), "probe_samples": probe.failures[:10],
         "slow_ok": slow.count("ok"), "slow_total": len(slow), "slow_failures": [x for x in slow if x != "ok"],
         "reload_ms_median": round(sorted(times)[len(times) // 2], 1)}
    if wrk:
        r["wrk"] = wrk_stop(wrk)
    if extra:
        r["extra"] = extra()
    return r


def assert_clean(r, sup, slow_is_drain=False):
    log(json.dumps(r))
    check(r["probe_ok"] > r["reloads"] * 5, "too few probe requests: %r" % r)
    check(r["probe_failures"] == 0, "probe failures: %r\n%s" % (r, sup.log()[-4000:]))
    if "wrk" in r:
        check(r["wrk"]["connect"] == 0, "wrk: refused connections: %r" % r["wrk"])
        check(r["wrk"]["non2xx"] == 0, "wrk: non-2xx responses: %r" % r["wrk"])
        check(r["wrk"]["requests"] > 100, "wrk: too few requests: %r" % r["wrk"])
    if r["slow_total"] and not slow_is_drain:
        check(r["slow_ok"] == r["slow_total"], "slow requests failed: %r" % r["slow_failures"])
    # Every old generation ended by itself within the drain timeout.
    killed = [l for l in sup.log().splitlines() if "still running" in l and "SIGKILL" in l]
    check(not killed, "draining workers killed at the drain timeout:\n%s" % "\n".join(killed[:10]))


def redis_once(port, cmd=b"PING", timeout=5, host="127.0.0.1"):
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.sendall(cmd + b"\r\n")
        data = s.recv(1024)
    finally:
        s.close()
    if not data:
        raise ConnectionAbortedError("closed before a response")
    return data


# ---- the servers ----


def case_python_threading_app():
    """A ThreadingHTTPServer app (tests/preload-httpd.py) with --workers 2:
    20 reloads under wrk, the probe and a slow request each."""
    port = free_port()
    cmd = [PYTHON, os.path.join(HERE, "preload-httpd.py"), "127.0.0.1", str(port)]
    sup = preload_supervisor(cmd, ["127.0.0.1:%d" % port], ["--workers", "2", "--max-draining", "8",
                                                             "--drain-timeout", "10"])
    sup.wait_ready()
    pids = set()
    r = reload_under_load(sup, lambda: pids.add(http_once(port)[1]), 20, "http://127.0.0.1:%d/" % port,
                          lambda: check(http_once(port, "/slow", timeout=10)[0] == 200, "slow"))
    assert_clean(r, sup)
    check(len(pids) > 20, "the probe met %d server processes over 20 reloads of 2 workers" % len(pids))
    check(sup.stop() == 0, "stop")


def case_python_http_server():
    """`python3 -m http.server` itself, 2 workers, with --bind :: (it then
    binds [::] with IPV6_V6ONLY off, a dual-stack socket; without --bind it
    takes getaddrinfo's first answer, 0.0.0.0 or [::] depending on the
    host); it has no graceful stop (SIGINT ends it), so reloads are checked
    without load."""
    port = free_port()
    docroot = os.path.join(TMP, "www")
    os.makedirs(docroot, exist_ok=True)
    with open(os.path.join(docroot, "index.html"), "w") as f:
        f.write("hello\n")
    v6 = has_ipv6()
    listen = ["[::]:%d" % port] if v6 else ["0.0.0.0:%d" % port]
    sup = preload_supervisor([PYTHON, "-m", "http.server", "--bind", "::" if v6 else "0.0.0.0", "--directory",
                              docroot, str(port)], listen, ["--workers", "2", "--stop-signal", "INT"])
    sup.wait_ready()
    for i in range(5):
        check(http_once(port)[0] == 200, "served")
        reload(sup)
    check(http_once(port)[1] == b"hello\n", "served after 5 reloads")
    log(sup.log().count("is the supervisor's socket"), "substitutions")
    sup.stop()


def redis_cmd(port, sock):
    return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--unixsocket", sock,
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "",
            "--dir", TMP]


def redis_benchmark(port, k):
    """redis-benchmark, PING and GET/SET, looped until stopped. -k 0: a new
    connection per request (Redis closes its clients when it exits, so a
    keep-alive benchmark ends at the first restart: that is Redis's own
    drain, measured separately). Returns a function that stops it and
    returns what it saw."""
    stop = threading.Event()
    res = {"runs": 0, "failed_runs": 0, "errors": []}

    def run():
        while not stop.is_set():
            p = subprocess.run(["redis-benchmark", "-p", str(port), "-c", "4", "-n", "3000", "-k", str(k),
                                "-t", "ping,set,get", "-q"], capture_output=True, text=True, timeout=120)
            res["runs"] += 1
            if p.returncode != 0 or "Error" in p.stdout + p.stderr:
                res["failed_runs"] += 1
                res["errors"].append((p.stdout + p.stderr).replace("\r", "\n").strip().splitlines()[-1:])
    t = threading.Thread(target=run, daemon=True)
    t.start()

    def done():
        stop.set()
        t.join(130)
        return res
    return done


def case_redis():
    """redis-server binds 127.0.0.1 and a unix socket (which it unlinks
    first): 20 reloads under redis-benchmark (a new connection per request)
    and a PING probe. BLPOP with a 2 s timeout is the slow request; Redis
    closes its clients when it stops, so those are reported, not asserted
    (its own drain)."""
    T.need_tools("redis-server", "redis-benchmark", package="redis-server, redis-tools")
    port = free_port()
    sock = os.path.join(TMP, "redis.sock")
    sup = preload_supervisor(redis_cmd(port, sock), ["127.0.0.1:%d" % port, "unix:" + sock])
    sup.wait_ready()
    check(redis_once(port) == b"+PONG\r\n", "PING")
    r = reload_under_load(sup, lambda: check(redis_once(port) == b"+PONG\r\n", "PONG"), 20,
                          slow_once=lambda: check(redis_once(port, b"BLPOP nothing 2", timeout=10) == b"*-1\r\n",
                                                  "BLPOP"),
                          extra_load=lambda: redis_benchmark(port, 0))
    assert_clean(r, sup, slow_is_drain=True)  # Redis closes its clients when it stops
    check(r["extra"]["failed_runs"] == 0, "redis-benchmark -k 0 failed: %r" % r["extra"])
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(b"PING\r\n")
    check(s.recv(100) == b"+PONG\r\n", "the unix socket, after Redis unlinked it 21 times")
    s.close()
    check(sup.stop() == 0, "stop")


def lighttpd_conf(port, port2):
    conf = os.path.join(TMP, "lighttpd.conf")
    docroot = os.path.join(TMP, "www")
    os.makedirs(docroot, exist_ok=True)
    with open(os.path.join(docroot, "index.html"), "w") as f:
        f.write("Hello, World!\n")
    with open(os.path.join(docroot, "slow.sh"), "w") as f:
        f.write("#!/bin/sh\nsleep 2\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow\\n'\n")
    os.chmod(os.path.join(docroot, "slow.sh"), 0o755)
    with open(conf, "w") as f:
        f.write('''server.document-root = "%s"
server.bind = "127.0.0.1"
server.port = %d
$SERVER["socket"] == "127.0.0.1:%d" { }
server.modules = ("mod_cgi")
cgi.assign = (".sh" => "/bin/sh")
index-file.names = ("index.html")
server.errorlog = "%s/lighttpd.err"
server.max-keep-alive-idle = 2
server.graceful-shutdown-timeout = 10
server.feature-flags = ("server.graceful-restart-bg" => "disable")
''' % (docroot, port, port2, TMP))
    return conf


def case_lighttpd():
    """lighttpd -D (two sockets), graceful stop on SIGINT: 20 reloads under
    wrk, the probe, and a 2 s CGI request before each."""
    T.need_tools("lighttpd", package="lighttpd")
    port, port2 = free_port(), free_port()
    conf = lighttpd_conf(port, port2)
    sup = preload_supervisor(["lighttpd", "-D", "-f", conf], ["127.0.0.1:%d" % port, "127.0.0.1:%d" % port2],
                             ["--stop-signal", "INT", "--max-draining", "8", "--drain-timeout", "15"])
    sup.wait_ready()
    check(http_once(port2)[0] == 200, "second socket")
    r = reload_under_load(sup, lambda: check(http_once(port)[0] == 200, "200"), 20,
                          "http://127.0.0.1:%d/" % port,
                          lambda: check(http_once(port, "/slow.sh", timeout=10)[0] == 200, "slow"))
    assert_clean(r, sup)
    check(sup.stop() == 0, "stop")


def nginx_conf(ports, sock, slow_port, v6):
    conf = os.path.join(TMP, "nginx.conf")
    for d in ("logs", "cb", "pt", "ft", "ut", "st"):
        os.makedirs(os.path.join(TMP, d), exist_ok=True)
    listen = "".join("        listen 127.0.0.1:%d;\n" % p for p in ports[:3])
    if v6:
        listen += "        listen [::1]:%d;\n" % ports[4]
    listen += "        listen unix:%s;\n" % sock
    with open(conf, "w") as f:
        f.write('''daemon off;
master_process on;
worker_processes 2;
pid %(tmp)s/nginx.pid;
error_log stderr notice;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %(tmp)s/cb; proxy_temp_path %(tmp)s/pt; fastcgi_temp_path %(tmp)s/ft;
    uwsgi_temp_path %(tmp)s/ut; scgi_temp_path %(tmp)s/st;
    keepalive_timeout 5;
    server {
%(listen)s        location / { return 200 "Hello, World!"; }
        location /slow { proxy_pass http://127.0.0.1:%(slow)d; }
    }
    server {
        listen 127.0.0.1:%(p4)d;
        location / { return 200 "second"; }
    }
}
''' % {"tmp": TMP, "listen": listen, "slow": slow_port, "p4": ports[3]})
    return conf


class SlowBackend:
    """An upstream whose /slow answers after 2 s, for nginx."""

    def __init__(self):
        import http.server

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                time.sleep(2)
                self.send_response(200)
                self.send_header("Content-Length", "5")
                self.end_headers()
                self.wfile.write(b"slow\n")

            def log_message(self, *a):
                pass

        class S(http.server.ThreadingHTTPServer):
            daemon_threads = True
        self.srv = S(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        T.at_exit(self.srv.shutdown)


def case_nginx():
    """nginx (daemon off, a master and 2 workers) with 6 sockets: three
    IPv4 addresses, [::1], a unix socket (which nginx unlinks when it
    stops) and a second server block; graceful stop on QUIT. 20 reloads
    under wrk, the probe on every socket in turn, a proxied slow request."""
    T.need_tools("nginx", package="nginx")
    v6 = has_ipv6()
    ports = [free_port() for _ in range(5)]
    sock = os.path.join(TMP, "nginx.sock")
    slow = SlowBackend()
    conf = nginx_conf(ports, sock, slow.port, v6)
    listen = ["127.0.0.1:%d" % p for p in ports[:4]] + (["[::1]:%d" % ports[4]] if v6 else []) + ["unix:" + sock]
    sup = preload_supervisor(["nginx", "-p", TMP, "-e", "stderr", "-c", conf], listen,
                             ["--stop-signal", "QUIT", "--max-draining", "8", "--drain-timeout", "15"])
    sup.wait_ready()
    check(http_once(ports[3])[1] == b"second", "the second server block")
    check(http_once(0, unix=sock)[0] == 200, "the unix socket")
    if v6:
        check(http_once(ports[4], host="::1")[0] == 200, "[::1]")
    turn = [0]

    def probe():
        turn[0] += 1
        k = turn[0] % 3
        if k == 0:
            check(http_once(ports[turn[0] % 3])[0] == 200, "200")
        elif k == 1:
            check(http_once(0, unix=sock)[0] == 200, "200 (unix)")
        else:
            check(http_once(ports[1])[0] == 200, "200")
    r = reload_under_load(sup, probe, 20, "http://127.0.0.1:%d/" % ports[0],
                          lambda: check(http_once(ports[0], "/slow", timeout=10)[0] == 200, "slow"))
    assert_clean(r, sup)
    check(os.path.exists(sock), "nginx unlinks its unix socket when it stops; the supervisor's stays")
    check(http_once(0, unix=sock)[0] == 200, "the unix socket after 20 reloads")
    check(sup.stop() == 0, "stop")


if __name__ == "__main__":
    T.main(globals(), paths=["handoff"], timeout=300, serial=True)

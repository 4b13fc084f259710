#!/usr/bin/env python3
"""Unmodified servers from Debian under `handoff run --preload`, each
reloaded 20 times under load: wrk (keep-alive), a probe that opens a new
connection per request, and a slow request before every reload where the
server can make one. Expected: no refused connection, no probe failure,
every reload done. What a server's own drain loses (keep-alive connections
it closes, Redis's blocked clients) is reported, not asserted.

    it-preload-servers.py --handoff H CASE...        (all: every case)

bench/preload-servers.py measures the same servers restarted plainly and
their throughput with and without the shim (tests/lib/handofftest/
servers.py configures them for both).
"""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import handofftest as T  # noqa: E402
from handofftest import check, free_port, log  # noqa: E402
from handofftest import servers  # noqa: E402
from handofftest.load import Probe, has_ipv6, http_once, in_thread, wrk_start, wrk_stop  # noqa: E402
from handofftest.supervisor import Supervisor  # noqa: E402

ARGS = None
TMP = None


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


# ---- the servers (tests/lib/handofftest/servers.py configures them) ----


def case_python_threading_app():
    """A ThreadingHTTPServer app (tests/preload-httpd.py) with --workers 2:
    20 reloads under wrk, the probe and a slow request each."""
    port = free_port()
    srv = servers.python_app(port)
    sup = preload_supervisor(srv.command, srv.listen, ["--workers", "2", "--max-draining", "8",
                                                       "--drain-timeout", "10"])
    sup.wait_ready()
    pids = set()
    r = reload_under_load(sup, lambda: pids.add(http_once(port)[1]), 20, srv.url, srv.slow)
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
    sup = preload_supervisor([servers.PYTHON, "-m", "http.server", "--bind", "::" if v6 else "0.0.0.0",
                              "--directory", docroot, str(port)], listen, ["--workers", "2", "--stop-signal", "INT"])
    sup.wait_ready()
    for _ in range(5):
        check(http_once(port)[0] == 200, "served")
        reload(sup)
    check(http_once(port)[1] == b"hello\n", "served after 5 reloads")
    log(sup.log().count("is the supervisor's socket"), "substitutions")
    sup.stop()


def case_redis():
    """redis-server binds 127.0.0.1 and a unix socket (which it unlinks
    first): 20 reloads under redis-benchmark (a new connection per request)
    and a PING probe. BLPOP with a 2 s timeout is the slow request; Redis
    closes its clients when it stops, so those are reported, not asserted
    (its own drain)."""
    T.need_tools("redis-server", "redis-benchmark", package="redis-server, redis-tools")
    port = free_port()
    srv = servers.redis(port, TMP)
    sup = preload_supervisor(srv.command, srv.listen)
    sup.wait_ready()
    srv.probe()
    r = reload_under_load(sup, srv.probe, 20, slow_once=srv.slow,
                          extra_load=lambda: servers.redis_benchmark(port, 0))
    assert_clean(r, sup, slow_is_drain=True)
    check(r["extra"]["failed_runs"] == 0, "redis-benchmark -k 0 failed: %r" % r["extra"])
    s = socket.socket(socket.AF_UNIX)
    s.connect(srv.unix)
    s.sendall(b"PING\r\n")
    check(s.recv(100) == b"+PONG\r\n", "the unix socket, after Redis unlinked it 21 times")
    s.close()
    check(sup.stop() == 0, "stop")


def case_lighttpd():
    """lighttpd -D (two sockets), graceful stop on SIGINT: 20 reloads under
    wrk, the probe, and a 2 s CGI request before each."""
    T.need_tools("lighttpd", package="lighttpd")
    port, port2 = free_port(), free_port()
    srv = servers.lighttpd(port, port2, TMP)
    sup = preload_supervisor(srv.command, srv.listen, ["--stop-signal", "INT", "--max-draining", "8",
                                                       "--drain-timeout", "15"])
    sup.wait_ready()
    check(http_once(port2)[0] == 200, "second socket")
    r = reload_under_load(sup, srv.probe, 20, srv.url, srv.slow)
    assert_clean(r, sup)
    check(sup.stop() == 0, "stop")


def case_nginx():
    """nginx (daemon off, a master and 2 workers) with 6 sockets: three
    IPv4 addresses, [::1], a unix socket (which nginx unlinks when it
    stops) and a second server block; graceful stop on QUIT. 20 reloads
    under wrk, the probe on every socket in turn, a proxied slow request."""
    T.need_tools("nginx", package="nginx")
    v6 = has_ipv6()
    ports = [free_port() for _ in range(5)]
    slow = servers.SlowBackend()
    T.at_exit(slow.close)
    srv = servers.nginx(ports, TMP, slow.port, v6)
    sup = preload_supervisor(srv.command, srv.listen, ["--stop-signal", "QUIT", "--max-draining", "8",
                                                       "--drain-timeout", "15"])
    sup.wait_ready()
    check(http_once(ports[3])[1] == b"second", "the second server block")
    check(http_once(0, unix=srv.unix)[0] == 200, "the unix socket")
    if v6:
        check(http_once(ports[4], host="::1")[0] == 200, "[::1]")
    turn = [0]

    def probe():
        turn[0] += 1
        k = turn[0] % 3
        if k == 0:
            check(http_once(ports[0])[0] == 200, "200")
        elif k == 1:
            check(http_once(0, unix=srv.unix)[0] == 200, "200 (unix)")
        else:
            check(http_once(ports[1])[0] == 200, "200")
    r = reload_under_load(sup, probe, 20, srv.url, srv.slow)
    assert_clean(r, sup)
    check(os.path.exists(srv.unix), "nginx unlinks its unix socket when it stops; the supervisor's stays")
    check(http_once(0, unix=srv.unix)[0] == 200, "the unix socket after 20 reloads")
    check(sup.stop() == 0, "stop")


if __name__ == "__main__":
    T.main(globals(), paths=["handoff"], timeout=300, serial=True)

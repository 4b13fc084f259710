#!/usr/bin/env python3
"""Restart-under-load tests of the event-loop integrations
(examples/uv-echo.c on libuv, examples/event-echo.c on libevent).

Each case starts one server on 127.0.0.1 (TCP) and on a unix socket, keeps
clients connecting, sending and reading back (plus one connection that
stays open across restarts), restarts the server 20 times with SIGHUP and
asserts: zero failed client exchanges, every restart produced a new
generation, no zombie, a single live generation at the end, and a
graceful SIGTERM exit that removes the pid file and the socket file.
The Server/Load helpers are tests/lib/handofftest/echo.py's.

Usage: it-integrations.py --server PATH CASE
Every wait is bounded; everything started is killed at the end.
"""
import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import handofftest as T  # noqa: E402
from handofftest import alive, fail, free_port, log, wait_until, zombies_under  # noqa: E402
from handofftest.echo import Load, Server, check_load, echo_once  # noqa: E402

RESTARTS = 20


def case_restart_20():
    port = free_port()
    path = os.path.join(T.ctx.tmp, "echo.sock")
    srv = Server(["127.0.0.1:%d" % port, "unix:" + path])
    first = srv.wait_ready()
    tcp = Load(socket.AF_INET, ("127.0.0.1", port), threads=3).start()
    unix = Load(socket.AF_UNIX, path, threads=1, long_lived=False).start()
    time.sleep(0.2)
    t0 = time.monotonic()
    for _ in range(RESTARTS):
        srv.restart()
        time.sleep(0.1)  # let every generation serve some clients
    el = time.monotonic() - t0
    check_load(tcp, 100)
    check_load(unix, 20)
    last = srv.settle()
    log("  %d restarts in %.1fs under load; generations seen: %d"
             % (RESTARTS, el, len(srv.seen)))
    if len(srv.seen) != RESTARTS + 1:
        fail("expected %d distinct generations, saw %d" % (RESTARTS + 1, len(srv.seen)))
    z = zombies_under(srv.seen)
    if z:
        fail("zombies: %s" % z)
    if alive(first):
        fail("first generation %d still alive" % first)
    echo_once(port, b"still serving")
    # A graceful stop of the last generation: it exits, and as the last
    # user of the pid file and the unix socket path it removes both.
    os.kill(last, signal.SIGTERM)
    wait_until(lambda: not alive(last), 10, "the last generation to exit")
    wait_until(lambda: not os.path.exists(srv.pidfile), 5, "the pid file to be removed")
    wait_until(lambda: not os.path.exists(path), 5, "the socket file to be removed")
    text = srv.logtext()
    for bad in ("upgrade-failed", "Sanitizer", "runtime error"):
        if bad in text:
            fail("%r in the server log:\n%s" % (bad, text[-3000:]))


def setup(args):
    # Server() runs --echo: the integrations share echo's command line.
    args.echo = args.server


if __name__ == "__main__":
    T.main(globals(), paths=["server"], timeout=300, setup=setup)

#!/usr/bin/env python3
"""Restart-under-load tests of the event-loop integrations
(examples/uv-echo.c on libuv, examples/event-echo.c on libevent).

Each case starts one server on 127.0.0.1 (TCP) and on a unix socket, keeps
clients connecting, sending and reading back (plus one connection that
stays open across restarts), restarts the server 20 times with SIGHUP and
asserts: zero failed client exchanges, every restart produced a new
generation, no zombie, a single live generation at the end, and a
graceful SIGTERM exit that removes the pid file and the socket file.
The Server/Load helpers are those of it-core.py, imported by path.

Usage: it-integrations.py --server PATH CASE
Every wait is bounded; everything started is killed at the end.
"""
import argparse
import importlib.util
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("it_core", os.path.join(HERE, "it-core.py"))
core = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(core)

RESTARTS = 20


def case_restart_20():
    port = core.free_port()
    path = os.path.join(core.TMP, "echo.sock")
    srv = core.Server(["127.0.0.1:%d" % port, "unix:" + path])
    first = srv.wait_ready()
    tcp = core.Load(socket.AF_INET, ("127.0.0.1", port), threads=3).start()
    unix = core.Load(socket.AF_UNIX, path, threads=1, long_lived=False).start()
    time.sleep(0.2)
    t0 = time.monotonic()
    for _ in range(RESTARTS):
        srv.restart()
        time.sleep(0.1)  # let every generation serve some clients
    el = time.monotonic() - t0
    core.check_load(tcp, 100)
    core.check_load(unix, 20)
    last = srv.settle()
    core.log("  %d restarts in %.1fs under load; generations seen: %d"
             % (RESTARTS, el, len(srv.seen)))
    if len(srv.seen) != RESTARTS + 1:
        core.fail("expected %d distinct generations, saw %d" % (RESTARTS + 1, len(srv.seen)))
    z = core.zombies_under(srv.seen)
    if z:
        core.fail("zombies: %s" % z)
    if core.alive(first):
        core.fail("first generation %d still alive" % first)
    core.echo_once(port, b"still serving")
    # A graceful stop of the last generation: it exits, and as the last
    # user of the pid file and the unix socket path it removes both.
    os.kill(last, signal.SIGTERM)
    core.wait_until(lambda: not core.alive(last), 10, "the last generation to exit")
    core.wait_until(lambda: not os.path.exists(srv.pidfile), 5, "the pid file to be removed")
    core.wait_until(lambda: not os.path.exists(path), 5, "the socket file to be removed")
    log = srv.logtext()
    for bad in ("upgrade-failed", "Sanitizer", "runtime error"):
        if bad in log:
            core.fail("%r in the server log:\n%s" % (bad, log[-3000:]))


CASES = {"restart-20": case_restart_20}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True, help="uv-echo or event-echo")
    ap.add_argument("case", choices=sorted(CASES) + ["all"])
    a = ap.parse_args()
    # Server() runs core.ECHO; the integrations share echo's command line.
    core.ECHO = os.path.abspath(a.server)
    cases = sorted(CASES) if a.case == "all" else [a.case]
    rc = 0
    for c in cases:
        core.TMP = tempfile.mkdtemp(prefix="handoff-it-int-")
        t0 = time.monotonic()
        try:
            core.log("== %s (%s)" % (c, os.path.basename(a.server)))
            CASES[c]()
            core.log("PASS %s (%.1fs)" % (c, time.monotonic() - t0))
        except AssertionError as e:
            core.log("FAIL %s: %s" % (c, e))
            for s in core.PROCS:
                core.log("---- server log %s\n%s" % (s.logpath, s.logtext()[-3000:]))
            rc = 1
        finally:
            for s in core.PROCS:
                s.kill_all()
            core.PROCS.clear()
            shutil.rmtree(core.TMP, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())

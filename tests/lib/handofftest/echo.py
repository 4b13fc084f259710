"""The core's echo example (examples/echo) under test: a server started
through a path or symlink with a pid file, and clients that keep
exchanging data with it across restarts (tests/it-core.py,
tests/it-integrations.py). The binary is the script's --echo option.
"""
import os
import random
import signal
import socket
import subprocess
import threading

from .proc import alive, kill_pids, read_pid
from .runner import at_exit, ctx, fail, log, wait_until


class Server:
    """An echo server started through `argv0` (a path or symlink)."""

    def __init__(self, listens, extra=(), argv0=None, env=None, prefix=(), pidfile=None):
        self.pidfile = pidfile or os.path.join(ctx.tmp, "echo-%d.pid" % random.randrange(1 << 30))
        self.logpath = self.pidfile + ".log"
        argv = list(prefix) + [argv0 or ctx.args.echo]
        for l in listens:
            argv += ["--listen", l]
        argv += ["--pid-file", self.pidfile, "--verbose"] + list(extra)
        self.log = open(self.logpath, "w")
        e = dict(os.environ)
        if env:
            e.update(env)
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=self.log, env=e,
                                  start_new_session=True)
        at_exit(self.kill_all)
        self.seen = set()

    def wait_ready(self, timeout=10):
        pid = wait_until(lambda: (lambda p: p if p and alive(p) else 0)(read_pid(self.pidfile)),
                         timeout, "pid file")
        self.seen.add(pid)
        return pid

    def pid(self):
        p = read_pid(self.pidfile)
        if p:
            self.seen.add(p)
        return p

    def restart(self, timeout=10, wait_old=False):
        """SIGHUP to the serving pid; waits until another live pid serves
        (and, with wait_old, until the old one has drained and exited; a
        connection a client keeps open keeps its generation alive until the
        drain timeout). Returns (old, new)."""
        old = self.wait_ready()
        os.kill(old, signal.SIGHUP)
        new = wait_until(lambda: (lambda p: p if p != old and alive(p) else 0)(self.pid()),
                         timeout, "new generation in the pid file")
        if wait_old:
            wait_until(lambda: not alive(old), timeout, "old generation %d to exit" % old)
        return old, new

    def settle(self, timeout=15):
        """Waits until the generation named by the pid file is the only one
        alive; returns it."""
        def one():
            cur = self.pid()
            live = [p for p in self.seen | {cur} if alive(p)]
            return live[0] if live == [cur] else None
        return wait_until(one, timeout, "a single live generation (seen %s)" % sorted(self.seen))

    def logtext(self):
        self.log.flush()
        with open(self.logpath) as f:
            return f.read()

    def kill_all(self):
        """SIGKILL to every generation: those seen, the one the pid file
        names, and the whole process group the first one leads (a successor
        the case never looked at stays in it)."""
        kill_pids(set(self.seen) | {self.p.pid, read_pid(self.pidfile)})
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class Load:
    """Clients that keep connecting, sending and reading back, plus one
    long-lived connection that stays open across restarts."""

    def __init__(self, family, addr, threads=3, long_lived=True):
        self.family, self.addr = family, addr
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        if long_lived:
            self.threads.append(threading.Thread(target=self.run_long, daemon=True))

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def record(self, ok, what=None):
        with self.lock:
            if ok:
                self.ok += 1
            else:
                self.failures.append(what)

    def one(self, payload):
        s = socket.socket(self.family, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(self.addr)
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                b = s.recv(65536)
                if not b:
                    raise ConnectionError("closed early after %d bytes" % len(got))
                got += b
            if got != payload:
                raise ValueError("echo mismatch")
        finally:
            s.close()

    def run(self):
        while not self.stop.is_set():
            payload = os.urandom(random.choice((1, 100, 5000, 70000)))
            try:
                self.one(payload)
                self.record(True)
            except Exception as e:  # noqa: BLE001 - every failure is data
                self.record(False, "%s: %s" % (type(e).__name__, e))

    def run_long(self):
        try:
            s = socket.socket(self.family, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(self.addr)
            n = 0
            while not self.stop.wait(0.05):
                msg = b"ping %d\n" % n
                s.sendall(msg)
                got = b""
                while len(got) < len(msg):
                    b = s.recv(100)
                    if not b:
                        raise ConnectionError("long-lived connection closed")
                    got += b
                if got != msg:
                    raise ValueError("long-lived echo mismatch")
                n += 1
            s.close()
            self.record(True)
            self.long_rounds = n
        except Exception as e:  # noqa: BLE001
            self.record(False, "long-lived: %s: %s" % (type(e).__name__, e))

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)
        return self.ok, self.failures


def check_load(load, min_ok):
    ok, failures = load.finish()
    log("  clients: %d ok, %d failed" % (ok, len(failures)))
    if failures:
        fail("client failures: %s" % failures[:10])
    if ok < min_ok:
        fail("only %d successful exchanges" % ok)


def echo_once(port, data=b"x"):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(data)
    got = s.recv(len(data) + 10)
    s.close()
    if got != data:
        fail("echo returned %r" % got)

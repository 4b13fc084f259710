#!/usr/bin/env python3
"""The preload shim (libhandoff-preload.so) in real processes, under a
stand-in supervisor (preload-host) with a test server (preload-server)
that binds its sockets the ways real servers do. Each case is one pitfall
of docs/guide-unmodified-servers.md. The sup-* cases run `handoff run
--preload` itself: what it refuses to start, and an installed tree.

    it-preload.py --host H --server S --lib L --handoff X --builddir B CASE...
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import handofftest as T  # noqa: E402
from handofftest import Fail, Skip, check, free_port  # noqa: E402
from handofftest.load import has_ipv6  # noqa: E402

ARGS = None
TMP = None


class Host:
    """preload-host running one command; stdout lines collected."""

    def __init__(self, listens, server, host_opts=(), env=None, cmd=None):
        argv = [ARGS.host, "--lib", ARGS.lib, "--log", "2"] + list(host_opts)
        for l in listens:
            argv += ["--listen", l]
        argv += ["--"] + (cmd if cmd else [ARGS.server] + list(server))
        self.err_path = os.path.join(TMP, "host-%d.err" % time.monotonic_ns())
        self.errf = open(self.err_path, "w")
        e = dict(os.environ)
        e.pop("LD_PRELOAD", None)
        if env:
            e.update(env)
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.errf, text=True, env=e,
                                  start_new_session=True)
        self.lines = []
        self.cv = threading.Condition()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        self.ports = {}
        self.addrs = {}
        self.wait_for(r"^start ")
        for l in self.lines:
            m = re.match(r"^listen (\d+) (.*)$", l)
            if m:
                self.addrs[int(m.group(1))] = m.group(2)
                pm = re.search(r":(\d+)(/\w+)?$", m.group(2))
                if pm:
                    self.ports[int(m.group(1))] = int(pm.group(1))
        self.pid = int(self.wait_for(r"^start (\d+)").group(1))

    def _read(self):
        for line in self.p.stdout:
            with self.cv:
                self.lines.append(line.rstrip("\n"))
                self.cv.notify_all()
        with self.cv:
            self.lines.append("<eof>")
            self.cv.notify_all()

    def wait_for(self, pattern, timeout=10):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for l in self.lines:
                    m = rx.search(l)
                    if m:
                        return m
                if "<eof>" in self.lines or time.monotonic() > deadline:
                    raise Fail("no line matching %r; host output:\n  %s\nstderr:\n%s" %
                               (pattern, "\n  ".join(self.lines), self.stderr()))
                self.cv.wait(0.1)

    def has(self, pattern):
        rx = re.compile(pattern)
        with self.cv:
            return any(rx.search(l) for l in self.lines)

    def stderr(self):
        self.errf.flush()
        with open(self.err_path) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            os.kill(self.p.pid, sig)
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
        self.t.join(5)
        m = [l for l in self.lines if l.startswith("exit ")]
        return int(m[0].split()[1]) if m else None

    def kill(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait()


def ask(port, host="127.0.0.1", family=socket.AF_INET, timeout=5):
    """Connects, returns the server's answer ("pid N")."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((host, port))
    data = b""
    while True:
        b = s.recv(100)
        if not b:
            break
        data += b
    s.close()
    return data.decode().strip()


def ask_unix(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    data = s.recv(100)
    s.close()
    return data.decode().strip()


def run(listens, server, host_opts=(), env=None, cmd=None):
    h = Host(listens, server, host_opts, env, cmd)
    T.at_exit(h.kill)
    return h

# ---- cases ----


def case_basic():
    """A held address: the server's fd becomes the supervisor's socket, bind
    and listen succeed, connections reach the server, READY=1 follows."""
    h = run(["127.0.0.1:0"], ["127.0.0.1:{P0}"])
    h.wait_for(r"^bound 127\.0\.0\.1:\d+ fd=3 cloexec=0 nonblock=0")
    m = h.wait_for(r"^ready (\d+) accepting on 127\.0\.0\.1:%d" % h.ports[0])
    check(int(m.group(1)) == h.pid, "READY=1 from pid %s, not the server %d" % (m.group(1), h.pid))
    check(ask(h.ports[0]) == "pid %d" % h.pid, "the server answers on the supervisor's socket")
    check("fd 3 is the supervisor's socket" in h.stderr(), "the shim says what it did (-v)")
    check(h.stop() == 0, "server exits 0")


def case_flags():
    """SOCK_CLOEXEC|SOCK_NONBLOCK are kept (FD_CLOEXEC on the fd, O_NONBLOCK
    on the shared socket); accept4 with flags and a blocking accept work."""
    h = run(["127.0.0.1:0"], ["--cloexec-nonblock", "127.0.0.1:{P0}"])
    h.wait_for(r"^bound .* cloexec=1 nonblock=1")
    check(ask(h.ports[0]) == "pid %d" % h.pid, "accept4(SOCK_NONBLOCK|SOCK_CLOEXEC) works")
    h.stop()
    h = run(["127.0.0.1:0"], ["--blocking-accept", "127.0.0.1:{P0}"])
    h.wait_for(r"^bound .* cloexec=0 nonblock=0")
    for _ in range(3):
        check(ask(h.ports[0]) == "pid %d" % h.pid, "blocking accept() works")
    h.stop()


def case_options_before_bind():
    """SO_REUSEADDR, SO_REUSEPORT and a matching IPV6_V6ONLY set before bind
    do not break the substitution; TCP_NODELAY and SO_RCVBUF are carried
    to the shared socket."""
    h = run(["127.0.0.1:0"], ["--reuseaddr", "--reuseport", "--nodelay", "--rcvbuf", "65536",
                              "127.0.0.1:{P0}"])
    m = h.wait_for(r"^bound .* nodelay=(\d) rcvbuf=(\d+)")
    check(m.group(1) == "1", "TCP_NODELAY set before bind is on the shared socket")
    check(int(m.group(2)) == 131072, "SO_RCVBUF 65536 (doubled by the kernel) is on the shared socket")
    check(ask(h.ports[0]) == "pid %d" % h.pid, "served")
    check("SO_REUSEPORT" not in h.stderr() or "does not hold" not in h.stderr(), "no warning for a held address")
    h.stop()
    if not has_ipv6():
        return
    h = run(["[::1]:0,v6only"], ["--v6only", "1", "[::1]:{P0}"])
    h.wait_for(r"^bound \[::1\]")
    check(ask(h.ports[0], "::1", socket.AF_INET6) == "pid %d" % h.pid, "served over IPv6")
    h.stop()


def case_v6only_mismatch():
    """[::] with another IPV6_V6ONLY than the supervisor's is refused, and a
    server binding 0.0.0.0 and [::] against one dual-stack socket gets the
    [::] and a clear EADDRINUSE for 0.0.0.0: never half-served."""
    if not has_ipv6():
        raise Skip("no IPv6")
    h = run(["[::]:0,dualstack"], ["--v6only", "1", "[::]:{P0}"], host_opts=["--no-ready"])
    h.wait_for(r"^bind \[::\]:\d+: EADDRINUSE")
    check("IPV6_V6ONLY settings differ" in h.stderr(), "the reason is given:\n" + h.stderr())
    h.stop()
    h = run(["[::]:0,dualstack"], ["--v6only", "0", "0.0.0.0:{P0}", "[::]:{P0}"])
    h.wait_for(r"^bind 0\.0\.0\.0:\d+: EADDRINUSE")
    h.wait_for(r"^bound \[::\]:\d+")
    check("dual-stack" in h.stderr(), "the reason is given:\n" + h.stderr())
    check(ask(h.ports[0], "127.0.0.1") == "pid %d" % h.pid, "IPv4 served through the dual-stack socket")
    h.stop()
    # nginx's pair against the same pair: both held, both matched.
    port = free_port()
    h = run(["0.0.0.0:%d" % port, "[::]:%d,v6only" % port], ["--v6only", "1", "0.0.0.0:%d" % port,
                                                              "[::]:%d" % port])
    h.wait_for(r"^bound \[::\]")
    h.wait_for(r"^ready .*0\.0\.0\.0:%d \[::\]:%d" % (port, port))
    check(ask(port, "127.0.0.1") == ask(port, "::1", socket.AF_INET6), "both families served")
    h.stop()


def case_wildcard_vs_specific():
    """The kernel's rule: a specific address against a held wildcard (and
    the reverse) is EADDRINUSE with the reason, not a silent substitute."""
    h = run(["0.0.0.0:0"], ["127.0.0.1:{P0}"], host_opts=["--no-ready"])
    h.wait_for(r"^bind 127\.0\.0\.1:\d+: EADDRINUSE")
    check("wildcard and a specific address" in h.stderr(), h.stderr())
    h.stop()
    h = run(["127.0.0.1:0"], ["0.0.0.0:{P0}"], host_opts=["--no-ready"])
    h.wait_for(r"^bind 0\.0\.0\.0:\d+: EADDRINUSE")
    h.stop()


def case_close_all_before_bind():
    """Servers that close every fd first (a loop, closefrom(), the
    close_range system call) still get the socket: it is fetched at bind()."""
    for opt in ("--close-all", "--closefrom", "--close-range"):
        h = run(["127.0.0.1:0"], [opt, "127.0.0.1:{P0}"])
        h.wait_for(r"^bound 127")
        check(ask(h.ports[0]) == "pid %d" % h.pid, "%s: served" % opt)
        h.stop()


def case_unheld_address():
    """An address the supervisor does not hold is bound for real, with a
    warning at listen(); with SO_REUSEPORT the warning says what splits."""
    other = free_port()
    h = run(["127.0.0.1:0"], ["--reuseaddr", "127.0.0.1:{P0}", "127.0.0.1:%d" % other])
    h.wait_for(r"^bound 127\.0\.0\.1:%d" % other)
    check(ask(other) == "pid %d" % h.pid, "the unheld address is the server's own socket")
    check(ask(h.ports[0]) == "pid %d" % h.pid, "the held one is served too")
    err = h.stderr()
    check("127.0.0.1:%d, which the supervisor does not hold" % other in err, err)
    check("SO_REUSEPORT" not in err, err)
    h.stop()
    h = run(["127.0.0.1:0"], ["--reuseaddr", "--reuseport", "127.0.0.1:{P0}", "127.0.0.1:%d" % other])
    h.wait_for(r"^bound 127\.0\.0\.1:%d" % other)
    check("SO_REUSEPORT each generation's socket joins" in h.stderr(), h.stderr())
    h.stop()
    # Port 0 is the server's own business: no warning.
    h = run(["127.0.0.1:0"], ["127.0.0.1:{P0}", "127.0.0.1:0"])
    h.wait_for(r"^listening")
    check("does not hold" not in h.stderr(), h.stderr())
    h.stop()


def case_bind_twice():
    """bind() twice on one fd: EINVAL, as the kernel says."""
    h = run(["127.0.0.1:0"], ["--bind-twice", "127.0.0.1:{P0}"])
    h.wait_for(r"^bind again 127\.0\.0\.1:\d+: EINVAL")
    check(ask(h.ports[0]) == "pid %d" % h.pid, "the first bind stands")
    h.stop()


def case_same_address_twice():
    """Two sockets of one process on one held address: EADDRINUSE for the
    second, unless both set SO_REUSEPORT (then both are the shared socket)."""
    h = run(["127.0.0.1:0"], ["--twice", "127.0.0.1:{P0}"])
    h.wait_for(r"^bind 127\.0\.0\.1:\d+: EADDRINUSE")
    check("already has it on fd 3" in h.stderr(), h.stderr())
    h.stop()
    h = run(["127.0.0.1:0"], ["--twice", "--reuseport", "127.0.0.1:{P0}"])
    h.wait_for(r"^bound .* fd=3 ")
    h.wait_for(r"^bound .* fd=4 ")
    check(ask(h.ports[0]) == "pid %d" % h.pid, "served")
    h.stop()


def case_two_servers():
    """Two processes of one worker binding the same held address: the
    second is refused by the supervisor (EADDRINUSE, naming the first)."""
    port = free_port()
    script = ("%s --exit-after 100 127.0.0.1:%d & sleep 0.5; exec %s 127.0.0.1:%d"
              % (ARGS.server, port, ARGS.server, port))
    h = run(["127.0.0.1:%d" % port], [], host_opts=["--depth", "1"], cmd=["/bin/sh", "-c", script])
    h.wait_for(r"^bound 127\.0\.0\.1:%d" % port)
    h.wait_for(r"^bind 127\.0\.0\.1:%d: EADDRINUSE" % port)
    check("already bound by pid" in h.stderr(), h.stderr())
    h.stop()


def case_listen_twice():
    h = run(["127.0.0.1:0"], ["--listen-twice", "127.0.0.1:{P0}"])
    h.wait_for(r"^bound 127")
    check(ask(h.ports[0]) == "pid %d" % h.pid, "served")
    h.stop()


def case_unix_paths():
    """A unix path: the server's unlink() before bind and at exit leaves the
    supervisor's socket file; a relative path naming it matches; abstract
    names match by their bytes."""
    path = os.path.join(TMP, "app.sock")
    h = run(["unix:" + path], ["--unlink", "unix:" + path])
    h.wait_for(r"^bound unix:")
    ino = os.stat(path).st_ino
    check(ask_unix(path) == "pid %d" % h.pid, "served")
    h.stop()
    check(os.path.exists(path) and os.stat(path).st_ino == ino, "the socket file survived unlink()")
    # Relative: the server runs in TMP and binds "app.sock".
    h = run(["unix:" + path], [], cmd=["/bin/sh", "-c", "cd %s && exec %s unix:app.sock" % (TMP, ARGS.server)])
    h.wait_for(r"^bound unix:app.sock")
    check(ask_unix(path) == "pid %d" % h.pid, "relative path served")
    h.stop()
    name = "@preload-test-%d" % os.getpid()
    h = run(["unix:" + name], ["unix:" + name])
    h.wait_for(r"^bound unix:@")
    check(ask_unix("\0" + name[1:]) == "pid %d" % h.pid, "abstract served")
    h.stop()


def case_udp():
    h = run(["udp://127.0.0.1:0"], ["udp:127.0.0.1:{P0}"], host_opts=["--no-ready"])
    h.wait_for(r"^bound udp:")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(b"hi", ("127.0.0.1", h.ports[0]))
    data = s.recv(100).decode().strip()
    check(data == "pid %d" % h.pid, "datagram answered by the server: %r" % data)
    h.stop()


def still_listening(port):
    """The supervisor's socket still takes connections (queued, nobody
    accepts): connect() succeeds instead of ECONNREFUSED."""
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def case_close_and_shutdown_harmless():
    """The server's close() of its listener, shutdown() of it, and both
    from a signal handler, leave the supervisor's socket listening."""
    for opts in ([], ["--shutdown-on-exit"], ["--shutdown-in-handler"]):
        h = run(["127.0.0.1:0"], opts + ["127.0.0.1:{P0}"])
        h.wait_for(r"^listening")
        h.stop()
        check(h.has(r"^exit 0") or opts == ["--shutdown-in-handler"], "server exited")
        # The host has exited too but held the socket until then; check with
        # a host that outlives its server.
    port = free_port()
    for opts in ([], ["--shutdown-on-exit"], ["--shutdown-in-handler"]):
        script = ("%s %s 127.0.0.1:%d & pid=$!; sleep 0.5; kill -TERM $pid; wait $pid; echo done; sleep 30"
                  % (ARGS.server, " ".join(opts), port))
        h = run(["127.0.0.1:%d" % port], [], host_opts=["--depth", "1", "--no-ready"],
                cmd=["/bin/sh", "-c", script])
        h.wait_for(r"^done", timeout=10)
        check(still_listening(port), "%s: the supervisor's socket still listens" % (opts or "close()"))
        h.kill()


def case_stop_signal_stops_accepting():
    """At the supervisor's stop signal the process stops accepting on the
    supervisor's sockets before its handler runs, so that a server that
    exits only later (as Redis does) takes nothing it would then drop; the
    connection stays queued for the next generation."""
    for opts in ([], ["--select"], ["--cloexec-nonblock"]):
        h = run(["127.0.0.1:0"], opts + ["--linger", "1500", "127.0.0.1:{P0}"])
        h.wait_for(r"^listening")
        check(ask(h.ports[0]) == "pid %d" % h.pid, "served before the signal")
        os.kill(h.pid, signal.SIGTERM)
        h.wait_for(r"^stopping, lingering")
        s = socket.create_connection(("127.0.0.1", h.ports[0]), timeout=5)
        s.settimeout(0.8)
        try:
            got = s.recv(100)
        except socket.timeout:
            got = None
        s.close()
        check(got is None, "%s: the stopping server took a new connection: %r" % (opts, got))
        h.wait_for(r"^stopped after 1 connections", timeout=5)
        check("no longer accepting" in h.stderr(), h.stderr())
        h.stop()
    # Without a handler of its own the signal kills it, as before.
    h = run(["127.0.0.1:0"], ["127.0.0.1:{P0}"], host_opts=["--stop-signal", "10"])
    h.wait_for(r"^listening")
    os.kill(h.pid, signal.SIGUSR1)
    h.p.wait(10)
    h.t.join(5)
    check(h.has(r"^exit 138"), "killed by SIGUSR1: %r" % h.lines)


PY_ACCEPT_LOOP = r"""
import os, signal, socket, sys
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
print("listening", flush=True)
n = 0
while not stop:
    try:
        c, _ = s.accept()  # retried at once on EINTR (PEP 475)
    except OSError:  # what socketserver does
        continue
    c.sendall(b"pid %d\n" % os.getpid())
    c.close()
    n += 1
print("stopped after %d connections" % n, flush=True)
"""


def in_accept(pid):
    """pid's main thread waits in accept() or accept4()."""
    try:
        with open("/proc/%d/syscall" % pid) as f:
            return f.read().split()[0] in ("43", "288")
    except (OSError, IndexError):
        return False


def case_stop_signal_blocking_accept():
    """A server that waits in a blocking accept() when the stop signal comes
    calls accept() again on the same fd, which the shim has detached
    (Python retries at once after EINTR; SA_RESTART makes the kernel
    restart the call): it gets back to its loop, sees its stop flag and
    exits, instead of waiting forever on the placeholder socket. Without
    spinning meanwhile. (CI: python-threading-app's draining workers were
    killed at the drain timeout, stuck in accept() there.)"""
    variants = [(["--accept-only"], None), (["--accept-only", "--sa-restart"], None),
                ([], [sys.executable, "-c", PY_ACCEPT_LOOP, "{P0}"])]
    for opts, cmd in variants:
        what = " ".join(opts) or "python socket.accept()"
        h = run(["127.0.0.1:0"], opts + ["127.0.0.1:{P0}"], cmd=cmd)
        h.wait_for(r"^listening")
        check(ask(h.ports[0]) == "pid %d" % h.pid, "%s: served before the signal" % what)
        T.wait_until(lambda: in_accept(h.pid), 10, "%s: the server to wait in accept()" % what)
        os.kill(h.pid, signal.SIGTERM)
        h.wait_for(r"^stopped after 1 connections", timeout=5)
        if cmd is None:
            errors = int(h.wait_for(r"^accept errors (\d+)").group(1))
            check(errors <= 20, "%s: accept() failed %d times in the lame-duck pause: a busy loop" % (what, errors))
        check("no longer accepting" in h.stderr(), h.stderr())
        h.stop()


def case_fork_child_binds():
    """A forked child (no exec) binds: the shim is active there too."""
    h = run(["127.0.0.1:0"], ["--fork", "127.0.0.1:{P0}"])
    child = int(h.wait_for(r"^child (\d+)").group(1))
    h.wait_for(r"^bound 127")
    check(ask(h.ports[0]) == "pid %d" % child, "the child serves")
    h.stop()


def case_daemonize_refused():
    """A server that daemonizes leaves the worker's process tree: the
    supervisor refuses it the socket, and says so."""
    h = run(["127.0.0.1:0"], ["--daemonize", "127.0.0.1:{P0}"], host_opts=["--no-ready"])
    # The host ends when the first process exits; the daemon's bind comes
    # later and finds no broker (or a refusal): either way an error.
    deadline = time.monotonic() + 10
    h.p.wait(10)
    h.t.join(5)
    err = h.stderr()
    ok = ("not in the process tree of a worker" in err or "cannot reach the supervisor" in err or
          "no answer from the supervisor" in err)
    while not ok and time.monotonic() < deadline:
        time.sleep(0.2)
        err = h.stderr()
        ok = ("not in the process tree of a worker" in err or "cannot reach the supervisor" in err)
    check(ok, "the daemon's bind is refused with a reason:\n" + err)


def case_exec_self():
    """A server that re-executes itself (same pid) keeps the shim."""
    h = run(["127.0.0.1:0"], ["--exec-self", "127.0.0.1:{P0}"])
    h.wait_for(r"^exec-self %d" % h.pid)
    h.wait_for(r"^bound 127")
    check(ask(h.ports[0]) == "pid %d" % h.pid, "served after the re-exec")
    h.stop()


def proc_env(pid):
    with open("/proc/%d/environ" % pid, "rb") as f:
        return dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)


def case_environment():
    """What the server spawns does not get the shim (other LD_PRELOAD
    entries stay), HANDOFF_PRELOAD, or any fd; the worker itself keeps its
    environment (so that `exec` in a wrapper keeps the shim)."""
    other = "/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"
    if not os.path.exists(other):
        raise Skip("no harmless library to preload")
    out = os.path.join(TMP, "spawn.out")
    # The child and a grandchild report their environment and open fds.
    spawn = ("{ echo child LD_PRELOAD=$LD_PRELOAD HP=${HANDOFF_PRELOAD:-none}; ls /proc/self/fd | tr '\\n' ' ';"
             " echo; sh -c 'echo grandchild LD_PRELOAD=$LD_PRELOAD HP=${HANDOFF_PRELOAD:-none}'; } > %s" % out)
    h = run(["127.0.0.1:0"], ["--spawn", spawn, "--cloexec-nonblock", "127.0.0.1:{P0}"],
            env={"LD_PRELOAD": other})
    h.wait_for(r"^spawn exited 0")
    with open(out) as f:
        lines = f.read().splitlines()
    check(lines[0] == "child LD_PRELOAD=%s HP=none" % other, "child: %r" % lines[0])
    fds = sorted(int(x) for x in lines[1].split())
    # 0, 1, 2 and the fd ls itself opened for /proc/self/fd.
    check(len(fds) == 4 and fds[:3] == [0, 1, 2], "no fd leaks into the child: %r" % fds)
    check(lines[2] == "grandchild LD_PRELOAD=%s HP=none" % other, "grandchild: %r" % lines[2])
    e = proc_env(h.pid)
    check(e[b"LD_PRELOAD"] == (other + ":" + ARGS.lib).encode(), "worker LD_PRELOAD: %r" % e[b"LD_PRELOAD"])
    check(b"HANDOFF_PRELOAD" in e, "the worker keeps HANDOFF_PRELOAD")
    check(ask(h.ports[0]) == "pid %d" % h.pid, "served")
    h.stop()


def case_spawned_binder():
    """A program the server spawns binds a held address: a clear error at
    the default depth (the shim is loaded there once, passive, and leaves
    nothing below it); served with --preload-depth 1."""
    spawn = "%s --exit-after 1 127.0.0.1:{P0}" % ARGS.server
    h = run(["127.0.0.1:0"], ["--spawn-direct", "--spawn", spawn, "127.0.0.1:0"], host_opts=["--no-ready"])
    h.wait_for(r"^bind 127\.0\.0\.1:\d+: EADDRINUSE")
    check("not active in a program the server started" in h.stderr(), h.stderr())
    h.stop()
    h = run(["127.0.0.1:0"], ["--spawn-direct", "--spawn", spawn, "127.0.0.1:0"],
            host_opts=["--depth", "1", "--no-ready"])
    h.wait_for(r"^bound 127\.0\.0\.1:%d" % h.ports[0])
    child = int(h.wait_for(r"^spawned (\d+)").group(1))
    check(ask(h.ports[0]) == "pid %d" % child, "the spawned program serves")
    h.wait_for(r"^spawn exited 0")
    h.stop()


def case_epoll_before_bind():
    """A socket added to epoll before bind(): the registration is carried
    to the substituted socket."""
    h = run(["127.0.0.1:0"], ["--epoll-before-bind", "127.0.0.1:{P0}"])
    h.wait_for(r"^listening")
    check(ask(h.ports[0]) == "pid %d" % h.pid, "events arrive on the substituted socket")
    check("re-registered in epoll" in h.stderr(), h.stderr())
    h.stop()


def case_readiness():
    """READY=1 only once the server waits on every held socket it bound
    (select() here), naming them; none with --no-ready."""
    p1, p2 = free_port(), free_port()
    h = run(["127.0.0.1:%d" % p1, "127.0.0.1:%d" % p2],
            ["--select", "127.0.0.1:%d" % p1, "127.0.0.1:%d" % p2])
    h.wait_for(r"^ready \d+ accepting on 127\.0\.0\.1:%d 127\.0\.0\.1:%d" % (p1, p2))
    i_ready = [i for i, l in enumerate(h.lines) if l.startswith("ready")][0]
    i_listening = [i for i, l in enumerate(h.lines) if l == "listening"][0]
    check(i_listening < i_ready, "READY=1 after the server's loop started")
    check(ask(p2) == "pid %d" % h.pid, "served")
    h.stop()
    h = run(["127.0.0.1:0"], ["127.0.0.1:{P0}"], host_opts=["--no-ready"])
    h.wait_for(r"^listening")
    ask(h.ports[0])
    time.sleep(0.3)
    check(not h.has(r"^ready"), "no READY=1 when not asked for")
    h.stop()


def case_netns():
    """A server in another network namespace binding a held address gets a
    clear error (the supervisor's sockets cannot serve that namespace)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        raise Skip("needs root and unshare")
    if subprocess.run(["unshare", "-n", "true"]).returncode != 0:
        raise Skip("unshare -n not permitted here")
    h = run(["127.0.0.1:0"], [], host_opts=["--no-ready"],
            cmd=["unshare", "-n", "--", ARGS.server, "--exit-after", "1", "127.0.0.1:{P0}"])
    h.wait_for(r"^bind 127\.0\.0\.1:\d+: EADDRINUSE")
    check("another network namespace" in h.stderr(), h.stderr())
    h.stop()


# ---- handoff run --preload ----


def handoff_run(listen, cmd, extra=(), env=None, wait=5):
    """Starts the supervisor; returns (Popen, log path, control path)."""
    control = os.path.join(TMP, "h-%d.sock" % time.monotonic_ns())
    logpath = control + ".log"
    args = [ARGS.handoff, "run", "-v", "--preload", "--control", control]
    for l in listen:
        args += ["--listen", l]
    e = dict(os.environ)
    e.pop("LD_PRELOAD", None)
    e.pop("NOTIFY_SOCKET", None)
    e.update(env or {})
    f = open(logpath, "w")
    p = subprocess.Popen(args + list(extra) + ["--"] + cmd, stdout=f, stderr=subprocess.STDOUT, env=e, cwd=TMP,
                         start_new_session=True)

    def kill():
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    T.at_exit(kill)
    return p, logpath, control


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def ctl(control, cmd):
    r = subprocess.run([ARGS.handoff, cmd, "--control", control], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def wait_served(port, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return ask(port)
        except OSError:
            time.sleep(0.1)
    raise Fail("nothing served on %d" % port)


def refused_at_start(cmd, words, env=None, listen=None):
    port = free_port()
    p, logpath, _ = handoff_run(listen or ["127.0.0.1:%d" % port], cmd, env=env)
    try:
        rc = p.wait(20)
    except subprocess.TimeoutExpired:
        raise Fail("the supervisor started anyway:\n" + read(logpath))
    out = read(logpath)
    check(rc == 1, "exit status %s, not 1:\n%s" % (rc, out))
    for w in words:
        check(w in out, "%r not in:\n%s" % (w, out))
    check("started generation" not in out, "nothing may start:\n" + out)
    return out


def case_sup_unusable_library():
    """A missing library, one that is not a shared library, and a path
    LD_PRELOAD cannot carry: a clear error before anything starts."""
    refused_at_start([ARGS.server, "127.0.0.1:1"], ["--preload", "/no/such/libhandoff-preload.so",
                                                    "No such file"],
                     env={"HANDOFF_PRELOAD_LIB": "/no/such/libhandoff-preload.so"})
    junk = os.path.join(TMP, "libhandoff-preload.so")
    with open(junk, "w") as f:
        f.write("not a library\n")
    refused_at_start([ARGS.server, "127.0.0.1:1"], ["not a shared library"], env={"HANDOFF_PRELOAD_LIB": junk})
    spaced = os.path.join(TMP, "a dir")
    os.makedirs(spaced)
    shutil.copy(ARGS.lib, spaced)
    refused_at_start([ARGS.server, "127.0.0.1:1"], ["without blanks or colons"],
                     env={"HANDOFF_PRELOAD_LIB": os.path.join(spaced, "libhandoff-preload.so")})


def case_sup_library_removed():
    """The library disappears between two generations: the reload fails
    with the reason, the running generation goes on serving."""
    lib = os.path.join(TMP, "libhandoff-preload.so")
    shutil.copy(ARGS.lib, lib)
    port = free_port()
    p, logpath, control = handoff_run(["127.0.0.1:%d" % port], [ARGS.server, "127.0.0.1:%d" % port],
                                      env={"HANDOFF_PRELOAD_LIB": lib})
    first = wait_served(port)
    os.unlink(lib)
    rc, out = ctl(control, "reload")
    check(rc == 1 and "No such file" in out, "reload: %d %s" % (rc, out))
    check(ask(port) == first, "the first generation still serves")
    p.send_signal(signal.SIGTERM)
    p.wait(20)


def cc(name, source, flags=()):
    if not shutil.which("cc"):
        raise Skip("no C compiler")
    src = os.path.join(TMP, name + ".c")
    out = os.path.join(TMP, name)
    with open(src, "w") as f:
        f.write(source)
    r = subprocess.run(["cc", "-o", out, src] + list(flags), capture_output=True, text=True)
    if r.returncode != 0:
        raise Skip("cannot build %s: %s" % (name, r.stderr.strip()[-200:]))
    return out


def case_sup_static_and_go():
    """Statically linked programs and Go programs (here a C program that
    carries the build ID note the Go linker writes): refused at start,
    with the reason and the LISTEN_FDS route."""
    prog = "int main(void) { return 0; }\n"
    static = cc("static", prog, ["-static"])
    refused_at_start([static], ["is statically linked"])
    go = cc("gofake", '__asm__(".section .note.go.buildid,\\"a\\",@note\\n.balign 4\\n.long 3\\n.long 8\\n'
                      '.long 4\\n.asciz \\"Go\\"\\n.balign 4\\n.ascii \\"abcdefgh\\"\\n.text\\n");\n' + prog)
    refused_at_start([go], ["is a Go program"])
    # Through a script: the interpreter named by #!, and env's NAME.
    script = os.path.join(TMP, "wrapper")
    with open(script, "w") as f:
        f.write("#!%s\n" % static)
    os.chmod(script, 0o755)
    refused_at_start([script], ["is statically linked"])


def case_sup_secure_execution():
    """A set-user-ID program, and one with file capabilities run by a
    non-root supervisor: the loader would ignore LD_PRELOAD (secure
    execution); refused at start."""
    if os.geteuid() != 0:
        raise Skip("needs root (to make set-user-ID and file-capability copies)")
    import pwd
    nobody = pwd.getpwnam("nobody")
    suid = os.path.join(TMP, "suid-server")
    shutil.copy(ARGS.server, suid)
    os.chown(suid, nobody.pw_uid, nobody.pw_gid)
    os.chmod(suid, 0o4755)
    refused_at_start([suid, "127.0.0.1:1"], ["is set-user-ID", "secure-execution"])
    if not shutil.which("setcap") or not shutil.which("setpriv"):
        return
    caps = os.path.join(TMP, "caps-server")
    shutil.copy(ARGS.server, caps)
    if subprocess.run(["setcap", "cap_net_bind_service+ep", caps]).returncode != 0:
        return
    os.chmod(TMP, 0o777)
    probe = subprocess.run(["setpriv", "--reuid=%d" % nobody.pw_uid, "--regid=%d" % nobody.pw_gid,
                            "--clear-groups", ARGS.handoff, "--version"], capture_output=True, text=True,
                           timeout=30)
    if probe.returncode != 0:
        # A build tree under a 0700 home (/root) cannot be read by nobody.
        raise Skip("the set-user-ID case passed; the file-capability case needs the build tree "
                   "readable by nobody, and %s is not: %s" % (ARGS.handoff, probe.stderr.strip()[:200]))
    port = free_port()
    logpath = os.path.join(TMP, "nobody.log")
    with open(logpath, "w") as f:
        r = subprocess.run(["setpriv", "--reuid=%d" % nobody.pw_uid, "--regid=%d" % nobody.pw_gid,
                            "--clear-groups", ARGS.handoff, "run", "--preload", "--control",
                            os.path.join(TMP, "nobody.sock"), "--listen", "127.0.0.1:%d" % port, "--", caps,
                            "127.0.0.1:%d" % port], stdout=f, stderr=subprocess.STDOUT, timeout=30,
                           env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                "HANDOFF_PRELOAD_LIB": ARGS.lib})
    out = read(logpath)
    check(r.returncode == 1 and "file capabilities" in out, "%d:\n%s" % (r.returncode, out))


def case_sup_wrappers_and_user_preload():
    """A wrapper that execs the server (sh -c 'exec ...', #!/usr/bin/env)
    keeps the shim; the user's LD_PRELOAD stays, with the shim after it;
    the readiness comes from the shim."""
    other = "/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"
    port = free_port()
    script = os.path.join(TMP, "server.sh")
    with open(script, "w") as f:
        f.write("#!/usr/bin/env sh\nexec %s 127.0.0.1:%d\n" % (ARGS.server, port))
    os.chmod(script, 0o755)
    env = {"LD_PRELOAD": other} if os.path.exists(other) else {}
    p, logpath, control = handoff_run(["127.0.0.1:%d" % port], [script], extra=["--workers", "2"], env=env)
    pid = int(wait_served(port).split()[1])
    # One worker serving does not mean both are ready (the second may still
    # be starting on a loaded machine): wait for the supervisor's line.
    want = "accepts on 127.0.0.1:%d" % port
    try:
        T.wait_until(lambda: want in read(logpath), 20, "the readiness line")
    except Fail:
        pass
    out = read(logpath)
    check(want in out, "readiness from the shim:\n" + out)
    e = proc_env(pid)
    want = ((other + ":") if env else "") + os.path.realpath(ARGS.lib)
    check(e[b"LD_PRELOAD"].decode() == want, "LD_PRELOAD %r, not %r" % (e[b"LD_PRELOAD"], want))
    check(b"LISTEN_FDS" not in e and b"SERVER_STARTER_PORT" not in e, "no fds, no protocol variables")
    links = [os.readlink("/proc/%d/fd/%s" % (pid, fd)) for fd in os.listdir("/proc/%d/fd" % pid)]
    check(len([l for l in links if l.startswith("socket:")]) == 1, "one socket, the listener: %r" % links)
    rc, out = ctl(control, "reload")
    check(rc == 0, out)
    p.send_signal(signal.SIGTERM)
    check(p.wait(20) == 0, read(logpath))


def case_sup_installed():
    """`cmake --install`: the installed handoff finds the installed
    libhandoff-preload.so next to it (bin/../lib...), wherever the prefix."""
    prefix = os.path.join(TMP, "prefix")
    r = subprocess.run(["cmake", "--install", ARGS.builddir, "--prefix", prefix], capture_output=True, text=True)
    check(r.returncode == 0, r.stdout + r.stderr)
    libs = [os.path.join(d, f) for d, _, fs in os.walk(prefix) for f in fs if f == "libhandoff-preload.so"]
    check(len(libs) == 1, "installed: %r" % libs)
    moved = os.path.join(TMP, "moved")
    os.rename(prefix, moved)  # relocatable
    port = free_port()
    saved = ARGS.handoff
    ARGS.handoff = os.path.join(moved, "bin", "handoff")
    try:
        p, logpath, _ = handoff_run(["127.0.0.1:%d" % port], [ARGS.server, "127.0.0.1:%d" % port])
        wait_served(port)
        out = read(logpath)
        check(os.path.join(moved, "lib") in out, "the installed library is used:\n" + out)
        p.send_signal(signal.SIGTERM)
        p.wait(20)
    finally:
        ARGS.handoff = saved


if __name__ == "__main__":
    T.main(globals(), paths=["host", "server", "lib", "handoff", "builddir"], timeout=120)

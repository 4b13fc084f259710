"""Shared helpers for bench/run-all, bench/restart-latency.py and
bench/idle-conns.py (python3 stdlib only).

Process handling: the scripts make themselves child subreapers, so that
daemonizing servers (nginx, haproxy) and re-exec'd generations (hello) stay
their descendants; at the end they signal exactly those pids, never by name.
Every wait here is bounded.
"""
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

# Processes, pid files and ports: the one copy in tests/lib (shared with the
# integration tests and scripts/soak.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))
from handofftest.proc import (alive, descendants, poll_until, port_free,  # noqa: E402,F401
                              proc_stat, raise_nofile, read_pid)

PR_SET_CHILD_SUBREAPER = 36


def log(msg):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def set_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap():
    """Reap any exited child (orphans re-parented to us included)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def all_pids(min_pid=0):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) > min_pid:
            out.append(int(d))
    return out


def children(pid, min_pid=0):
    out = []
    for p in all_pids(min_pid):
        st = proc_stat(p)
        if st[1] == pid and st[0] not in (None, "Z", "X"):
            out.append(p)
    return out


def is_descendant(pid, root):
    for _ in range(64):
        st = proc_stat(pid)
        if st[0] is None:
            return False
        if st[1] == root:
            return True
        if st[1] <= 1:
            return False
        pid = st[1]
    return False


def kill_descendants(grace=5.0):
    """SIGTERM every live descendant of this process, SIGKILL what is left
    after `grace` seconds. Returns the pids that needed SIGKILL."""
    me = os.getpid()
    pids = [p for p in descendants(me) if alive(p)]
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap()
        if not any(alive(p) for p in descendants(me)):
            return []
        time.sleep(0.05)
    left = [p for p in descendants(me) if alive(p)]
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.2)
    reap()
    return left


def free_port_pair(start=28100):
    """A port p with p and p+1 free (p+1: the peers' slow backend)."""
    for p in range(start, start + 2000, 2):
        if port_free(p) and port_free(p + 1):
            return p
    raise SystemExit("no free port pair")


class PortAllocator:
    def __init__(self, start=28100):
        self.next = start

    def get(self):
        p = free_port_pair(self.next)
        self.next = p + 2
        return p


def http_ok(port, path="/", timeout=1.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Connection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def wait_until(seconds, fn, step=0.02):
    """True once fn() is, False after `seconds` (bench's argument order)."""
    return bool(poll_until(fn, seconds, step))


class Server:
    """One server under test on 127.0.0.1:port, started in the background.

    kind: "hello" (bench's Release build of examples/hello) or a peer name
    of the shared harness ("nginx", "haproxy"). The serving (master) pid is
    in self.pidfile."""

    def __init__(self, kind, port, workers, rundir, hello=None, peers=None, nofile=None,
                 nginx_conf=None):
        self.kind, self.port, self.workers = kind, port, workers
        self.rundir = os.path.join(rundir, "%s-%d" % (kind, port))
        os.makedirs(self.rundir, exist_ok=True)
        self.pidfile = os.path.join(self.rundir, "server.pid")
        self.hello, self.peers, self.nofile, self.nginx_conf = hello, peers, nofile, nginx_conf
        self.proc = None

    def env(self):
        return dict(os.environ, PORT=str(self.port), SLOW_PORT=str(self.port + 1),
                    RUNDIR=self.rundir, PIDFILE=self.pidfile, WORKERS=str(self.workers))

    def start(self, timeout=20):
        if not port_free(self.port):
            raise SystemExit("port %d is in use" % self.port)
        logf = open(os.path.join(self.rundir, "start.log"), "ab")
        pre = None
        if self.nofile:
            n = self.nofile

            def pre():
                raise_nofile(n)
        if self.kind == "hello":
            self.proc = subprocess.Popen(
                [self.hello, "--listen", "127.0.0.1:%d" % self.port, "--threads",
                 str(self.workers), "--pid-file", self.pidfile],
                stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=pre)
        elif self.kind == "nginx-custom":
            # our own nginx configuration (the idle-connection test needs more
            # worker_connections than the shared peer's 4096)
            nginx = "/usr/sbin/nginx"
            os.makedirs(os.path.join(self.rundir, "tmp"), exist_ok=True)
            conf = os.path.join(self.rundir, "nginx.conf")
            with open(conf, "w") as f:
                f.write(self.nginx_conf.format(workers=self.workers, pidfile=self.pidfile,
                                               rundir=self.rundir, port=self.port))
            r = subprocess.run([nginx, "-p", self.rundir, "-c", conf, "-e",
                                os.path.join(self.rundir, "error.log")],
                               stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, timeout=30)
            if r.returncode:
                raise SystemExit("nginx failed to start (see %s)" % self.rundir)
        else:
            r = subprocess.run([os.path.join(self.peers, self.kind, "start")], env=self.env(),
                               stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, timeout=60,
                               start_new_session=True)
            if r.returncode:
                raise SystemExit("peers/%s/start failed (see %s/start.log)"
                                 % (self.kind, self.rundir))
        logf.close()
        ok = wait_until(timeout, lambda: alive(read_pid(self.pidfile)) and http_ok(self.port))
        if not ok:
            raise SystemExit("%s on port %d did not become ready" % (self.kind, self.port))
        return self

    def pid(self):
        return read_pid(self.pidfile)

    def procs(self):
        """The serving process and its live descendants (nginx/haproxy
        workers; hello is one process)."""
        p = self.pid()
        if not alive(p):
            return []
        return [p] + [c for c in descendants(p) if alive(c) and "slow_backend" not in cmdline(c)]

    def stop(self, grace=5.0):
        pids = set()
        p = self.pid()
        if alive(p):
            pids.add(p)
            pids.update(descendants(p))
        sb = read_pid(os.path.join(self.rundir, "slow_backend.pid"))
        if alive(sb):
            pids.add(sb)
        if self.proc and self.proc.poll() is None:
            pids.add(self.proc.pid)
        sig = signal.SIGQUIT if self.kind.startswith("nginx") else signal.SIGTERM
        for q in pids:
            try:
                os.kill(q, sig if q == p else signal.SIGTERM)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(q) for q in pids):
            reap()
            time.sleep(0.05)
        for q in pids:
            if alive(q):
                try:
                    os.kill(q, signal.SIGKILL)
                except OSError:
                    pass
        if self.proc:
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        reap()


def smaps(pid):
    """Rss, Pss, Private (clean+dirty) of pid in bytes, from smaps_rollup."""
    out = {"rss": 0, "pss": 0, "private": 0}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k == "Rss":
                    out["rss"] = int(v.split()[0]) * 1024
                elif k == "Pss":
                    out["pss"] = int(v.split()[0]) * 1024
                elif k in ("Private_Clean", "Private_Dirty"):
                    out["private"] += int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def memory(pids):
    tot = {"rss": 0, "pss": 0, "private": 0}
    for p in pids:
        m = smaps(p)
        for k in tot:
            tot[k] += m[k]
    return tot

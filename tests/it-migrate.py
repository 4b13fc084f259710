#!/usr/bin/env python3
"""Integration tests of connection migration through the echo example.

examples/echo migrates its stream connections to the next generation
(HANDOFF_MIGRATE, on by default). Each case starts echo, holds idle
connections (and "chatty" ones that keep pipelining data) across restarts
and faults, and asserts on what the clients saw: no connection closed by the
server, every byte echoed exactly once and in order, and on both generations'
fds and logs. Usage: it-migrate.py --echo PATH CASE
Every wait is bounded; everything started is killed at the end; traffic only
to 127.0.0.1 and unix sockets in a temporary directory.
"""
import array
import json
import os
import random
import re
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import handofftest as T  # noqa: E402
from handofftest import (alive, at_exit, fail, fd_targets, free_port, log, read_pid,  # noqa: E402
                         rss_kb, sanitizer_of, wait_until)
from handofftest.conns import ask_each, echo_answer  # noqa: E402
from handofftest.proc import cpu_ms  # noqa: E402

ECHO = None  # --echo
TMP = None   # the case's directory (set by the runner)


def sockets_of(pid):
    return sum(1 for t in fd_targets(pid).values() if t.startswith("socket:"))


def wait_sockets(pid, want, what, timeout=5):
    """Waits until pid holds exactly `want` sockets (a generation closes
    its channel to an exited predecessor when its loop next runs)."""
    T.poll_until(lambda: sockets_of(pid) == want, timeout)
    n = sockets_of(pid)
    if n != want:
        fail("%s holds %d sockets, want %d" % (what, n, want))


class Server:
    """echo started through a wrapper script that reads its arguments from
    a file each time it is executed, so a test can change them between
    generations (as a deploy changes a configuration)."""

    def __init__(self, listens, extra=()):
        self.pidfile = os.path.join(TMP, "echo.pid")
        self.logpath = os.path.join(TMP, "echo.log")
        self.conf = os.path.join(TMP, "args")
        self.link = os.path.join(TMP, "server-bin")
        self.listens = listens
        self.set_args(extra)
        self.swap(ECHO)
        self.script = os.path.join(TMP, "server")
        with open(self.script, "w") as f:
            f.write('#!/bin/bash\nexec -a "$0" %s $(cat %s)\n' % (self.link, self.conf))
        os.chmod(self.script, 0o755)
        self.log = open(self.logpath, "w")
        self.p = subprocess.Popen([self.script], stdout=self.log, stderr=self.log,
                                  start_new_session=True)
        at_exit(self.kill_all)
        self.seen = set()

    def set_args(self, extra):
        args = []
        for l in self.listens:
            args += ["--listen", l]
        args += ["--pid-file", self.pidfile, "--verbose"] + list(extra)
        with open(self.conf, "w") as f:
            f.write(" ".join(args))

    def swap(self, target):
        tmp = self.link + ".new"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, self.link)

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

    def restart(self, timeout=15):
        old = self.wait_ready()
        os.kill(old, signal.SIGHUP)
        new = wait_until(lambda: (lambda p: p if p != old and alive(p) else 0)(self.pid()),
                         timeout, "a new generation in the pid file")
        return old, new

    def logtext(self):
        self.log.flush()
        with open(self.logpath, errors="replace") as f:
            return f.read()

    def lines(self, pid, pattern):
        rx = re.compile(pattern)
        return [l for l in self.logtext().splitlines()
                if ("[%d]" % pid) in l and rx.search(l)]

    def kill_all(self):
        for pid in list(self.seen) + [self.p.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


# --------------------------------------------------------------------------
# clients


def connect_many(addrs, n, timeout=30):
    """n connections spread over addrs ((family, address) pairs), opened in
    paced chunks; each is checked with one exchange."""
    conns = []
    for i in range(n):
        fam, addr = addrs[i % len(addrs)]
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(addr)
        s.setblocking(False)
        conns.append(s)
        if len(conns) % 500 == 0:
            bad = ping_all(conns[-500:], timeout=timeout)
            if bad:
                fail("%d of the new connections were not served: %s" % (len(bad), bad[:3]))
    bad = ping_all(conns[-(len(conns) % 500 or 500):], timeout=timeout)
    if bad:
        fail("new connections not served: %s" % bad[:3])
    return conns


def ping_all(conns, timeout=30, tag=b"p"):
    """Sends a distinct message on every connection and reads it back;
    returns the list of (index, problem). A connection with bytes waiting
    before the ping (a duplicate) or at EOF counts as a problem."""
    def message(i):
        return tag + b"%d." % i
    return ask_each(conns, message, echo_answer(message), timeout)


class Chatty(threading.Thread):
    """Connections that keep sending random bytes (pipelined, up to 16 KiB
    outstanding each) and check that the echoed stream is exactly what was
    sent: a byte answered twice, never, or out of order is a failure."""

    def __init__(self, addrs, n):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.sel = selectors.DefaultSelector()
        self.pending = {}
        self.failures = []
        self.sent = self.echoed = 0
        for i in range(n):
            fam, addr = addrs[i % len(addrs)]
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect(addr)
            s.setblocking(False)
            self.pending[s] = bytearray()
            self.sel.register(s, selectors.EVENT_READ)

    def run(self):
        rng = random.Random(7)
        while self.pending and not (self.stop.is_set() and self.drained()):
            if not self.stop.is_set():
                for s, exp in list(self.pending.items()):
                    if len(exp) < 16384:
                        chunk = rng.randbytes(rng.choice((1, 17, 500, 4000)))
                        try:
                            n = s.send(chunk)
                        except BlockingIOError:
                            n = 0
                        except OSError as e:
                            self.lost(s, "send: %s" % e)
                            continue
                        exp += chunk[:n]
                        self.sent += n
            for key, _ in self.sel.select(0.005):
                s = key.fileobj
                try:
                    b = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    self.lost(s, "recv: %s" % e)
                    continue
                if not b:
                    self.lost(s, "closed by the server")
                    continue
                exp = self.pending[s]
                if bytes(exp[:len(b)]) != b:
                    self.lost(s, "echoed bytes differ from what was sent (duplicate or loss)")
                    continue
                del exp[:len(b)]
                self.echoed += len(b)

    def drained(self):
        return all(len(e) == 0 for e in self.pending.values())

    def lost(self, s, why):
        self.failures.append(why)
        self.sel.unregister(s)
        del self.pending[s]
        s.close()

    def finish(self, timeout=20):
        self.stop.set()
        self.join(timeout)
        if self.is_alive():
            fail("chatty clients did not get all their bytes back within %ds" % timeout)
        log("  chatty: %d bytes sent, %d echoed, %d failures" % (self.sent, self.echoed,
                                                                 len(self.failures)))
        if self.failures:
            fail("chatty connections failed: %s" % self.failures[:5])
        if self.sent == 0 or self.echoed != self.sent:
            fail("sent %d, echoed %d" % (self.sent, self.echoed))
        for s in list(self.pending):
            s.close()


def parse_handover(srv, pid):
    """The old generation's summary: (adopted by the successor, returned)."""
    ls = srv.lines(pid, r"migration to pid \d+ ended")
    if not ls:
        fail("generation %d logged no end of migration" % pid)
    m = re.search(r"(\d+) connections adopted by it, (\d+) returned", ls[-1])
    return int(m.group(1)), int(m.group(2)), ls[-1]


# --------------------------------------------------------------------------
# cases


def case_idle_20():
    """1,000 idle connections (TCP and unix) and 40 chatty ones across 20
    restarts: none is closed, every byte sent during the hand-overs is
    echoed exactly once, each old generation exits as soon as its
    connections moved, and the serving generation's fds stay constant."""
    port = free_port()
    path = os.path.join(TMP, "echo.sock")
    addrs = [(socket.AF_INET, ("127.0.0.1", port)), (socket.AF_UNIX, path)]
    srv = Server(["127.0.0.1:%d" % port, "unix:" + path])
    srv.wait_ready()
    idle = connect_many(addrs, 1000)
    chatty = Chatty(addrs, 40)
    chatty.start()
    counts = []
    exit_ms = []
    for i in range(20):
        old, new = srv.restart()
        t0 = time.monotonic()
        wait_until(lambda: not alive(old), 10, "generation %d to exit after migrating" % old)
        exit_ms.append((time.monotonic() - t0) * 1000)
        a, r, _ = parse_handover(srv, old)
        if r != 0:
            fail("restart %d: %d connections returned" % (i + 1, r))
        if i in (0, 19):
            # 2 listeners + 1,000 idle + 40 chatty, and nothing else
            wait_sockets(new, 2 + 1000 + 40, "generation %d" % new)
            counts.append((sockets_of(new), len(fd_targets(new))))
    chatty.finish()
    bad = ping_all(idle)
    log("  20 restarts: old generations exited %.0f ms (median) after the new one was ready"
        % sorted(exit_ms)[10])
    log("  serving generation after restart 1: %d sockets / %d fds; after restart 20: %d / %d"
        % (counts[0] + counts[1]))
    if bad:
        fail("%d idle connections failed: %s" % (len(bad), bad[:5]))
    if counts[0] != counts[1]:
        fail("fd count changed across restarts: %s" % counts)
    # 2 listeners + 1,000 idle + 40 chatty, and nothing else
    if counts[1][0] != 2 + 1000 + 40:
        fail("the serving generation holds %d sockets, want %d" % (counts[1][0], 1042))


def case_successor_crash():
    """The successor crashes while adopting: what it acknowledged dies with
    it (as many as the old generation logs); everything else stays with the
    old generation, which keeps serving it; nothing leaks."""
    port = free_port()
    addrs = [(socket.AF_INET, ("127.0.0.1", port))]
    srv = Server(["127.0.0.1:%d" % port], ["--state-pad", "30000"])
    g1 = srv.wait_ready()
    idle = connect_many(addrs, 1000)
    srv.set_args(["--state-pad", "30000", "--crash-after-adopt", "300"])
    os.kill(g1, signal.SIGHUP)
    wait_until(lambda: srv.lines(g1, r"migration to pid \d+ ended"), 20,
               "generation 1 to see the successor go")
    adopted, returned, line = parse_handover(srv, g1)
    log("  " + line.split(": ", 1)[1])
    # Connections not handed yet when the channel broke stay with echo
    # (handoff_migrate() then says -ENOTCONN).
    m = re.search(r"migrated (\d+) connections, kept (\d+)",
                  srv.lines(g1, r"migrated \d+ connections")[-1])
    handed, kept = int(m.group(1)), int(m.group(2))
    time.sleep(0.3)
    bad = ping_all(idle)
    closed = [i for i, why in bad if "closed" in why or "reset" in why.lower()]
    log("  handed %d, kept %d; clients: %d closed (adopted by the crashed successor), %d still "
        "served by generation 1" % (handed, kept, len(closed), 1000 - len(bad)))
    if not 0 < adopted < 1000:
        fail("the crash did not happen mid-adoption (adopted %d)" % adopted)
    if adopted + returned != handed or handed + kept != 1000:
        fail("adopted %d + returned %d != handed %d (kept %d)" % (adopted, returned, handed,
                                                                 kept))
    if len(closed) != adopted or len(bad) != len(closed):
        fail("%d connections failed (%d closed), but %d were adopted: %s"
             % (len(bad), len(closed), adopted, bad[:5]))
    if not srv.lines(g1, r"successor-exited"):
        fail("generation 1 did not report the successor's exit")
    # Generation 1 holds its 1 listener and the returned connections: no
    # copy of a handed-over fd is left behind.
    socks = sockets_of(g1)
    if socks != 1 + returned + kept:
        fail("generation 1 holds %d sockets, want %d" % (socks, 1 + returned + kept))


def case_slow_successor():
    """A successor that does nothing for 2 s after becoming ready: the old
    generation does not block (it answers SIGUSR1 meanwhile, with 9 MB of
    state queued for the channel), and every connection moves afterwards."""
    port = free_port()
    addrs = [(socket.AF_INET, ("127.0.0.1", port))]
    mark = os.path.join(TMP, "usr1")
    cmd = os.path.join(TMP, "mark.sh")  # the wrapper splits arguments on blanks
    with open(cmd, "w") as f:
        f.write("#!/bin/sh\necho x >> %s\n" % mark)
    os.chmod(cmd, 0o755)
    srv = Server(["127.0.0.1:%d" % port], ["--state-pad", "30000", "--exec-on-usr1", cmd])
    g1 = srv.wait_ready()
    idle = connect_many(addrs, 300)
    srv.set_args(["--state-pad", "30000", "--exec-on-usr1", cmd, "--stall-after-ready", "2000"])
    os.kill(g1, signal.SIGHUP)
    g2 = wait_until(lambda: (lambda p: p if p != g1 and alive(p) else 0)(srv.pid()), 15,
                    "generation 2")
    time.sleep(0.3)
    t0 = time.monotonic()
    os.kill(g1, signal.SIGUSR1)
    wait_until(lambda: os.path.exists(mark), 1.5, "generation 1 to answer SIGUSR1 while the "
               "successor stalls")
    log("  generation 1 answered SIGUSR1 in %.0f ms during the successor's stall"
        % ((time.monotonic() - t0) * 1000))
    wait_until(lambda: not alive(g1), 15, "generation 1 to exit")
    adopted, returned, _ = parse_handover(srv, g1)
    bad = ping_all(idle)
    log("  after the stall: %d adopted, %d returned, %d client failures" % (adopted, returned,
                                                                           len(bad)))
    if bad or adopted != 300 or returned:
        fail("expected all 300 adopted: %d/%d, failures %s" % (adopted, returned, bad[:5]))
    wait_sockets(g2, 1 + 300, "generation 2")


def case_slow_successor_timeout():
    """A successor that stalls longer than the acknowledgement timeout (10 s):
    the old generation takes everything back and serves it; the successor's
    late acknowledgement fails and it closes what it had received."""
    port = free_port()
    addrs = [(socket.AF_INET, ("127.0.0.1", port))]
    srv = Server(["127.0.0.1:%d" % port])
    g1 = srv.wait_ready()
    idle = connect_many(addrs, 200)
    srv.set_args(["--stall-after-ready", "12000"])
    t0 = time.monotonic()
    os.kill(g1, signal.SIGHUP)
    g2 = wait_until(lambda: (lambda p: p if p != g1 and alive(p) else 0)(srv.pid()), 15,
                    "generation 2")
    wait_until(lambda: srv.lines(g1, r"migration to pid \d+ ended"), 25,
               "generation 1 to give up")
    adopted, returned, line = parse_handover(srv, g1)
    log("  after %.1f s: %s" % (time.monotonic() - t0, line.split(": ", 1)[1]))
    if time.monotonic() - t0 < 9.5:
        fail("generation 1 gave up before the 10 s timeout")
    if "no acknowledgement" not in line or adopted != 0 or returned != 200:
        fail("expected a timeout with all 200 returned: %s" % line)
    bad = ping_all(idle)
    if bad:
        fail("%d connections failed: %s" % (len(bad), bad[:5]))
    wait_until(lambda: srv.lines(g2, r"not adopted: the predecessor keeps them"), 15,
               "generation 2 to close what it received late")
    time.sleep(0.3)
    wait_sockets(g2, 1, "generation 2, after refusing the late batches,")
    bad = ping_all(idle, tag=b"q")
    if bad:
        fail("after the successor woke up, %d connections failed: %s" % (len(bad), bad[:5]))
    log("  all 200 connections still served by generation 1; generation 2 holds none")
    for s in idle:
        s.close()
    wait_until(lambda: not alive(g1), 10, "generation 1 to finish draining")


def case_back_to_back():
    """Restarts back to back: generation N hands its connections to N+1
    while N-1 is still handing its own to N. Every generation stalls 300 ms
    after becoming ready, and the next SIGHUP comes at once."""
    port = free_port()
    addrs = [(socket.AF_INET, ("127.0.0.1", port))]
    extra = ["--state-pad", "20000", "--stall-after-ready", "300"]
    srv = Server(["127.0.0.1:%d" % port], extra)
    srv.wait_ready()
    idle = connect_many(addrs, 500)
    chatty = Chatty(addrs, 20)
    chatty.start()
    gens = [srv.pid()]
    for _ in range(8):
        _, new = srv.restart()
        gens.append(new)
    last = gens[-1]
    wait_until(lambda: all(not alive(p) for p in gens[:-1]), 30, "old generations to exit")
    chatty.finish()
    bad = ping_all(idle)
    overlap = 0
    for p in gens[1:-1]:
        text = [l for l in srv.logtext().splitlines() if "[%d]" % p in l]
        succ = next((k for k, l in enumerate(text) if "adopts connections" in l), None)
        pred_end = next((k for k, l in enumerate(text) if "migration from pid" in l), None)
        if succ is not None and pred_end is not None and succ < pred_end:
            overlap += 1
    log("  8 back-to-back restarts: %d generations were handing over while still adopting; "
        "%d client failures" % (overlap, len(bad)))
    if bad:
        fail("%d connections failed: %s" % (len(bad), bad[:5]))
    if overlap == 0:
        fail("no generation overlapped (the case did not test what it should)")
    # The chatty clients are gone: 1 listener and the 500 idle connections.
    wait_until(lambda: sockets_of(last) == 1 + 500, 5,
               "the last generation to hold exactly 501 sockets (has %d)" % sockets_of(last))


FAKE = r'''#!/usr/bin/env python3
# A successor that fails its handshake: it spoofs READY+ADOPT from another
# pid, listens on the handshake socket for anything sent to it, and exits 1.
import json, os, select, socket, sys, time
fd = int(os.environ["HANDOFF_READY_FD"])
s = socket.socket(fileno=fd)
rep = {"caps": os.environ.get("HANDOFF_CAPS"), "ppid": os.getppid(), "received": 0}
pid = os.fork()
if pid == 0:
    s.send(b"READY=1\nADOPT=1")
    os._exit(0)
os.waitpid(pid, 0)
end = time.monotonic() + 1.0
while time.monotonic() < end:
    r, _, _ = select.select([s], [], [], 0.1)
    if r:
        data, anc, flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(253 * 4))
        if not data:
            break
        for lvl, typ, d in anc:
            if lvl == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                for i in range(0, len(d) - len(d) % 4, 4):
                    os.close(int.from_bytes(d[i:i + 4], "little"))
        # HELLO (pidfds of the draining generations) is queued before fork,
        # for every child: not a message sent to a failed successor.
        if data.startswith(b"HELLO=1\n"):
            continue
        rep["received"] += 1
with open(os.environ["FAKE_REPORT"], "w") as f:
    json.dump(rep, f)
sys.exit(1)
'''


def case_rollback():
    """A successor that fails its handshake is sent nothing: a READY+ADOPT
    from another pid is ignored, the old generation keeps its connections,
    and the next (good) upgrade migrates them."""
    port = free_port()
    addrs = [(socket.AF_INET, ("127.0.0.1", port))]
    report = os.path.join(TMP, "fake.json")
    fake = os.path.join(TMP, "fake-successor")
    with open(fake, "w") as f:
        f.write(FAKE)
    os.chmod(fake, 0o755)
    os.environ["FAKE_REPORT"] = report
    srv = Server(["127.0.0.1:%d" % port])
    g1 = srv.wait_ready()
    idle = connect_many(addrs, 100)
    srv.swap(fake)
    os.kill(g1, signal.SIGHUP)
    wait_until(lambda: srv.lines(g1, r"upgrade-failed"), 15, "the upgrade to fail")
    rep = json.load(open(report))
    log("  fake successor: HANDOFF_CAPS=%s, messages received %d" % (rep["caps"],
                                                                   rep["received"]))
    if rep["caps"] != "%d,ready-lines,migrate-1" % g1 or rep["ppid"] != g1:
        fail("unexpected HANDOFF_CAPS %r (parent %d)" % (rep["caps"], g1))
    if rep["received"] != 0:
        fail("the failed successor was sent %d messages" % rep["received"])
    if not srv.lines(g1, r"ignoring a readiness message from pid"):
        fail("the spoofed READY was not reported")
    if srv.lines(g1, r"adopts connections"):
        fail("generation 1 opened a migration channel")
    bad = ping_all(idle)
    if bad or srv.pid() != g1:
        fail("after the failed upgrade: %d failures, serving %d" % (len(bad), srv.pid()))
    srv.swap(ECHO)
    old, new = srv.restart()
    wait_until(lambda: not alive(old), 10, "generation 1 to exit")
    a, r, _ = parse_handover(srv, old)
    bad = ping_all(idle, tag=b"q")
    log("  then a good upgrade: %d adopted, %d returned, %d failures" % (a, r, len(bad)))
    if bad or a != 100:
        fail("the good upgrade did not migrate all 100: %d, %s" % (a, bad[:5]))


def case_fd_limit():
    """A successor at its fd limit: the kernel installs only what fits
    (MSG_CTRUNC); the successor says how many arrived, the rest stays with
    the old generation, and no connection is closed or leaked."""
    port = free_port()
    addrs = [(socket.AF_INET, ("127.0.0.1", port))]
    srv = Server(["127.0.0.1:%d" % port])
    g1 = srv.wait_ready()
    idle = connect_many(addrs, 300)
    srv.set_args(["--nofile", "80"])
    old, g2 = srv.restart()
    wait_until(lambda: srv.lines(g2, r"adopted \d+ connections"), 10, "generation 2 to adopt")
    time.sleep(1.0)
    bad = ping_all(idle)
    if bad:
        fail("%d connections failed: %s" % (len(bad), bad[:5]))
    ctrunc = srv.lines(g2, r"MSG_CTRUNC")
    g2_socks, g2_fds = sockets_of(g2), len(fd_targets(g2))
    g1_socks = sockets_of(g1)
    adopted = int(re.search(r"total (\d+)", srv.lines(g2, r"adopted \d+ connections")[-1])
                  .group(1))
    log("  generation 2 (limit 80 fds): %d fds, adopted %d; generation 1 keeps %d; "
        "%d MSG_CTRUNC reports" % (g2_fds, adopted, g1_socks - 2, len(ctrunc)))
    if not ctrunc:
        fail("no short count was detected")
    # Both hold the listener and the channel (generation 1 still drains).
    if g2_fds > 80 or g2_socks != 2 + adopted:
        fail("generation 2: %d fds, %d sockets, %d adopted" % (g2_fds, g2_socks, adopted))
    if g1_socks != 2 + 300 - adopted:
        fail("generation 1 holds %d sockets and generation 2 adopted %d (of 300)"
             % (g1_socks, adopted))
    if not 0 < adopted < 300:
        fail("adopted %d" % adopted)


def case_mixed():
    """Mixed versions: a successor without the capability (run with the
    flag off) is never sent a connection, and neither is a capable
    successor of a parent without it. The old generation then drains as
    before: its idle connections stay open and served."""
    port = free_port()
    addrs = [(socket.AF_INET, ("127.0.0.1", port))]
    srv = Server(["127.0.0.1:%d" % port])
    g1 = srv.wait_ready()
    a = connect_many(addrs, 50)
    srv.set_args(["--no-migrate"])
    _, g2 = srv.restart()
    time.sleep(0.5)
    if srv.lines(g1, "adopts connections") or srv.lines(g1, "migrated"):
        fail("generation 1 migrated to a successor without the capability")
    if not alive(g1):
        fail("generation 1 should still drain its idle connections")
    b = connect_many(addrs, 50)  # on generation 2
    srv.set_args([])
    _, g3 = srv.restart()
    time.sleep(0.5)
    if srv.lines(g2, "adopts connections") or srv.lines(g3, "migration from"):
        fail("generation 2 (no flag) handed connections to generation 3")
    bad = ping_all(a) + ping_all(b)
    log("  migrate -> no-migrate -> migrate: no channel opened; generations 1 and 2 still serve "
        "their %d idle connections; %d failures" % (len(a) + len(b), len(bad)))
    if bad:
        fail("%d connections failed: %s" % (len(bad), bad[:5]))
    if not (alive(g1) and alive(g2)):
        fail("a draining generation exited with idle connections open")
    # ... and a capable pair migrates again.
    c = connect_many(addrs, 20)
    _, g4 = srv.restart()
    wait_until(lambda: not alive(g3), 10, "generation 3 to hand over and exit")
    bad = ping_all(a) + ping_all(b) + ping_all(c)
    if bad:
        fail("%d connections failed: %s" % (len(bad), bad[:5]))


def case_cloexec():
    """Adopted connections are close-on-exec: a grandchild of the successor
    gets no socket, and no protocol variable."""
    port = free_port()
    addrs = [(socket.AF_INET, ("127.0.0.1", port))]
    out = os.path.join(TMP, "grandchild")
    cmd = os.path.join(TMP, "probe.sh")
    with open(cmd, "w") as f:
        f.write("#!/bin/sh\nls -l /proc/$$/fd > %s.fd\nenv > %s.env\n" % (out, out))
    os.chmod(cmd, 0o755)
    srv = Server(["127.0.0.1:%d" % port], ["--exec-on-usr1", cmd])
    srv.wait_ready()
    idle = connect_many(addrs, 30)
    old, g2 = srv.restart()
    wait_until(lambda: not alive(old), 10, "generation 1 to exit")
    wait_sockets(g2, 1 + 30, "generation 2")
    socks = sockets_of(g2)
    # O_CLOEXEC (02000000) on every fd above stderr of the successor
    missing = []
    for fd in fd_targets(g2):
        if fd < 3:
            continue
        try:
            with open("/proc/%d/fdinfo/%d" % (g2, fd)) as f:
                flags = int([l for l in f if l.startswith("flags:")][0].split()[1], 8)
        except OSError:
            continue
        if not flags & 0o2000000:
            missing.append((fd, fd_targets(g2).get(fd)))
    os.kill(g2, signal.SIGUSR1)
    wait_until(lambda: os.path.exists(out + ".env") and os.path.getsize(out + ".env") > 0, 5,
               "the grandchild's report")
    time.sleep(0.1)
    fds = [l for l in open(out + ".fd").read().splitlines() if "socket:" in l]
    env = [l for l in open(out + ".env").read().splitlines() if l.startswith("HANDOFF_")
           or l.split("=", 1)[0] in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")]
    log("  generation 2 holds %d sockets; fds without O_CLOEXEC: %s; grandchild sockets %s, "
        "env %s" % (socks, missing, fds, env))
    if socks != 1 + 30 or missing or fds or env:
        fail("leak: %s %s %s" % (missing, fds, env))
    if ping_all(idle):
        fail("connections failed")


@T.case(serial=True)
def case_idle_10k():
    """10,000 idle connections: the time from the successor's readiness to
    its last adoption (the goal is <= 100 ms on an idle machine), and the
    memory of both generations. Three hand-overs in a row; the best counts
    (the machine is shared), against a bound scaled by the load average."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 10500:
        T.skip("RLIMIT_NOFILE hard limit %d is too low for 10,000 connections" % hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    n = min(10000, hard - 500) if hard != resource.RLIM_INFINITY else 10000
    port = free_port()
    addrs = [(socket.AF_INET, ("127.0.0.1", port))]
    srv = Server(["127.0.0.1:%d" % port])
    g1 = srv.wait_ready()
    idle = connect_many(addrs, n, timeout=60)
    rss = [rss_kb(g1)]
    times = []
    cpus = []

    for _ in range(3):
        old, new = srv.restart(timeout=30)
        c0 = cpu_ms(new)
        wait_until(lambda: srv.lines(new, r"adopted \d+ connections \(total %d," % n), 60,
                   "generation %d to adopt all %d" % (new, n))
        cpus.append(cpu_ms(new) - c0)
        wait_until(lambda: not alive(old), 60, "generation %d to hand over and exit" % old)
        a, r, _ = parse_handover(srv, old)
        if a != n or r:
            fail("generation %d: %d adopted, %d returned (of %d)" % (old, a, r, n))
        last = srv.lines(new, r"adopted \d+ connections \(total %d," % n)
        if not last:
            fail("generation %d did not adopt all %d: %s" % (new, n,
                                                            srv.lines(new, "adopted")[-3:]))
        times.append(int(re.search(r"(\d+) us after ready", last[-1]).group(1)) / 1000.0)
        rss.append(rss_kb(new))
        bad = ping_all(idle, timeout=60)
        if bad:
            fail("%d connections failed: %s" % (len(bad), bad[:5]))
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    log("  %d idle connections, 3 hand-overs: last adoption %s ms after the successor's ready "
        "(successor CPU meanwhile %s ms; load average per CPU %.1f); RSS per generation %s KiB; "
        "0 failures" % (n, ", ".join("%.1f" % t for t in times),
                        ", ".join("%.0f" % c for c in cpus), load, rss))
    print(json.dumps({"connections": n, "ready_to_last_adoption_ms": times,
                      "successor_cpu_ms": cpus, "load_per_cpu": round(load, 2), "rss_kb": rss}),
          flush=True)
    # 500 ms on an idle machine (5x the goal), scaled by the load (a
    # process gets a share of a CPU), and by 5 under a sanitizer.
    bound = 500 * min(10, max(1.0, load)) * (5 if sanitizer_of(ECHO) else 1)
    if min(times) > bound:
        fail("hand-over of %d connections took %.0f ms at best (> %.0f)" % (n, min(times), bound))


def _batch(seq, states):
    """A batch message (docs/protocol.md 9.2) for len(states) fds."""
    body = b"".join(struct.pack("<I", len(st)) + st for st in states)
    return b"HMIG" + bytes([1, 1, 0, 0]) + struct.pack("<II", seq, len(states)) + body


def _echo_state(pending=b""):
    return b"ECH1" + struct.pack("<II", len(pending), 0) + pending


def case_fake_predecessor():
    """The old side written independently (this script, from docs/protocol.md)
    hands echo connections: a valid batch is adopted (and the state's pending
    bytes are echoed first); a batch with a malformed record is refused whole
    and its connections stay with the sender; a state echo cannot read is
    closed by echo (and logged); a bad header ends the channel. Only the
    parent's pid may send; nothing leaks."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(16)
    port = lst.getsockname()[1]
    me, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    me.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    os.dup2(lst.fileno(), 100)
    os.dup2(child.fileno(), 101)
    log_path = os.path.join(TMP, "echo.log")
    logf = open(log_path, "w")
    env = dict(os.environ, LISTEN_FDS="1", HANDOFF_READY_FD="4", HANDOFF_GENERATION="2",
               HANDOFF_PARENT_PID=str(os.getpid()),
               HANDOFF_CAPS="%d,ready-lines,migrate-1" % os.getpid())
    # bash places the fds at 3 and 4 and sets LISTEN_PID to its own pid,
    # which echo keeps (exec); its parent is this process.
    p = subprocess.Popen(["bash", "-c", 'exec 3<&100 4<&101 100<&- 101<&-; '
                          'LISTEN_PID=$$ exec "$0" "$@"', ECHO, "--listen", "127.0.0.1:%d" % port,
                          "--verbose"], env=env, pass_fds=(100, 101), stdout=logf, stderr=logf)
    os.close(100)
    os.close(101)
    child.close()
    at_exit(lambda: (p.kill(), p.wait()))
    me.settimeout(10)
    msg, anc, _, _ = me.recvmsg(256, socket.CMSG_SPACE(12))
    pid = [struct.unpack("<iII", d)[0] for lvl, typ, d in anc
           if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS]
    log("  echo (pid %d) said %r, kernel-verified pid %s" % (p.pid, msg, pid))
    if msg != b"READY=1\nADOPT=1" or pid != [p.pid]:
        fail("unexpected handshake %r from %s" % (msg, pid))

    def pairs(n):
        # The server ends are non-blocking, as echo's own are: the flag
        # belongs to the open file description, which the successor gets.
        out = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(n)]
        for srv, _ in out:
            srv.setblocking(False)
        return out

    def send(seq, states, fds):
        me.sendmsg([_batch(seq, states)],
                   [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])

    def ack():
        data, anc, _, _ = me.recvmsg(256, socket.CMSG_SPACE(12))
        if not data:
            return None
        seq, count = struct.unpack("<II", data[8:16])
        received = struct.unpack("<I", data[16:20])[0]
        return seq, count, received, data[20:]

    # 1: three good connections; the pending "hi!" is echoed first.
    good = pairs(3)
    send(1, [_echo_state(b"hi!")] * 3, [srv.fileno() for srv, _ in good])
    a = ack()
    if a != (1, 3, 3, bytes([0b111])):
        fail("batch 1: acknowledgement %r" % (a,))
    for srv, cli in good:
        srv.close()  # adopted: the successor's copy is the only one now
        cli.settimeout(5)
        cli.sendall(b"x")
        got = b""
        while len(got) < 4:
            got += cli.recv(10)
        if got != b"hi!x":
            fail("batch 1: echoed %r" % got)
    # 2: a record whose length runs past the end: refused whole, ours again.
    kept = pairs(2)
    bad = _batch(2, [_echo_state(), _echo_state()])
    bad = bad[:16] + struct.pack("<I", 10000) + bad[20:]
    me.sendmsg([bad], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                        array.array("i", [srv.fileno() for srv, _ in kept]))])
    a = ack()
    if a != (2, 2, 2, b"\x00"):
        fail("batch 2: acknowledgement %r" % (a,))
    for srv, cli in kept:
        cli.sendall(b"y")
        srv.settimeout(5)
        if srv.recv(1) != b"y":
            fail("batch 2: a refused connection no longer reaches its sender")
    # 3: a well-formed batch whose state echo cannot read: adopted by the
    # library, then closed by echo, which says so.
    junk = pairs(1)
    send(3, [b"JUNK"], [junk[0][0].fileno()])
    a = ack()
    if a != (3, 1, 1, b"\x01"):
        fail("batch 3: acknowledgement %r" % (a,))
    junk[0][0].close()
    junk[0][1].settimeout(5)
    if junk[0][1].recv(10) != b"":
        fail("batch 3: echo kept a connection whose state it cannot read")
    wait_until(lambda: "malformed state" in open(log_path).read(), 5, "echo to log the bad state")
    # 4: a bad magic: no acknowledgement is possible, the channel closes.
    last = pairs(1)
    me.sendmsg([b"XMIG" + _batch(4, [_echo_state()])[4:]],
               [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [last[0][0].fileno()]))])
    if ack() is not None:
        fail("batch 4: the channel stayed open")
    last[0][1].sendall(b"z")
    last[0][0].settimeout(5)
    if last[0][0].recv(1) != b"z":
        fail("batch 4: the connection no longer reaches its sender")
    # echo holds its listener and the 3 adopted connections, nothing else.
    wait_sockets(p.pid, 1 + 3, "echo")
    log("  3 adopted and served (pending bytes first), 2 refused with a malformed record, 1 "
        "closed for a bad state, channel closed on a bad header; echo holds 4 sockets")


def setup(args):
    global ECHO
    ECHO = args.echo
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 and hard >= 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


if __name__ == "__main__":
    T.main(globals(), paths=["echo"], timeout=300, setup=setup)

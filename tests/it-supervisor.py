#!/usr/bin/env python3
"""End-to-end tests of `handoff run` (tools/) with real processes on 127.0.0.1.

Usage: it-supervisor.py --handoff PATH --echo PATH [--hello PATH] CASE

Each CASE is one ctest entry. Exit status: 0 pass, 1 fail, 77 skip.
Every load loop is bounded in time and count; every process a case starts is
killed by pid at the end (the supervisor's workers lead their own process
groups, which are killed too).
"""
import json
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
from handofftest import (SKIP, Fail, check, children, descendants, free_port, log,  # noqa: E402
                         proc_state, wait_until)
from handofftest import wrk  # noqa: E402
from handofftest.supervisor import Supervisor  # noqa: E402

ARGS = None  # --handoff, --echo, --hello (set by the runner)


# ---------------------------------------------------------------- load

class Load:
    """Client threads: each request is a new TCP connection (echo: a line
    echoed back; http: GET / answered 200), plus `persistent` threads that
    keep one connection across reloads. Counts every failure."""

    def __init__(self, port, kind="echo", threads=4, persistent=0, max_seconds=120, path="/"):
        self.port, self.kind, self.path = port, kind, path
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []
        self.deadline = time.monotonic() + max_seconds
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.threads += [threading.Thread(target=self._persistent, daemon=True) for _ in range(persistent)]

    def _fail(self, what):
        with self.lock:
            self.failures.append((round(time.monotonic(), 3), what))

    def _one(self, n):
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            if self.kind == "echo":
                msg = f"ping {n}\n".encode()
                s.sendall(msg)
                got = b""
                while not got.endswith(b"\n"):
                    chunk = s.recv(4096)
                    if not chunk:
                        raise ConnectionError("closed before the answer")
                    got += chunk
                if got != msg:
                    raise ValueError(f"echo mismatch {got!r}")
            else:
                s.sendall(f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                got = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                if not got.startswith(b"HTTP/1.") or got[9:12] != b"200":
                    raise ValueError(f"bad response {got[:60]!r}")

    def _run(self):
        n = 0
        while not self.stop_ev.is_set() and time.monotonic() < self.deadline and n < 2_000_000:
            n += 1
            try:
                self._one(n)
                with self.lock:
                    self.ok += 1
            except Exception as e:  # noqa: BLE001 - every failure counts
                self._fail(f"{type(e).__name__}: {e}")
                time.sleep(0.01)

    def _persistent(self):
        # One echo connection kept open across reloads; the old generation
        # must keep serving it while it drains.
        n = 0
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        except OSError as e:
            self._fail(f"persistent connect: {e}")
            return
        with s:
            while not self.stop_ev.is_set() and time.monotonic() < self.deadline and n < 100_000:
                n += 1
                msg = f"keep {n}\n".encode()
                try:
                    s.sendall(msg)
                    got = b""
                    while not got.endswith(b"\n"):
                        chunk = s.recv(4096)
                        if not chunk:
                            raise ConnectionError("closed")
                        got += chunk
                    check(got == msg, "mismatch")
                    with self.lock:
                        self.ok += 1
                except Exception as e:  # noqa: BLE001
                    self._fail(f"persistent: {type(e).__name__}: {e}")
                    return
                time.sleep(0.02)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        for t in self.threads:
            t.join(30)

    def report(self):
        log(f"load: {self.ok} requests ok, {len(self.failures)} failed {self.failures[:5]}")
        return self.ok, self.failures


def reload_many(sup, count, pause=0.05, via_signal_every=0):
    """Reloads `count` times; every reload must succeed. Returns ms per reload."""
    times = []
    for i in range(count):
        t0 = time.monotonic()
        if via_signal_every and i % via_signal_every == via_signal_every - 1:
            os.kill(sup.pid, signal.SIGHUP)
            gen = i + 2
            wait_until(lambda: f"generation {gen}: active" in sup.status(), 30,
                       f"generation {gen} after SIGHUP")
        else:
            rc, out, err = sup.ctl("reload")
            check(rc == 0, f"reload {i + 1} failed ({rc}): {out} {err}\n{sup.log()[-3000:]}")
        times.append((time.monotonic() - t0) * 1000)
        time.sleep(pause)
    return times


# ---------------------------------------------------------------- cases

def echo_cmd(port, extra=()):
    return [ARGS.echo, "--listen", f"127.0.0.1:{port}", *extra]


def case_echo_reload_50(tmp):
    """echo under handoff run, 50 reloads (some by SIGHUP) under load: no
    failed request, the supervisor's pid never changes."""
    port = free_port()
    # The persistent connections keep generation 1 draining for the whole
    # run; a roomy --max-draining keeps a slow machine, where a few short-
    # lived generations may still be draining at once, from killing it.
    # Neither the supervisor nor echo itself may end that drain early: the
    # run takes well over 30 s in a sanitizer build on a busy machine.
    sup = Supervisor(tmp, echo_cmd(port, ["--drain-timeout", "600"]), listen=[f"echo=127.0.0.1:{port}"],
                     extra=["--max-draining", "10", "--drain-timeout", "600"])
    try:
        sup.wait_ready()
        with open(sup.pidfile) as f:
            check(int(f.read()) == sup.pid, "pid file does not name the supervisor")
        first = sup.worker_pids()
        with Load(port, threads=4, persistent=2) as load:
            time.sleep(0.3)
            times = reload_many(sup, 50, via_signal_every=10)
            time.sleep(0.3)
        ok, failures = load.report()
        check(not failures, f"{len(failures)} failed requests: {failures[:5]}")
        check(ok > 200, f"too few requests ({ok})")
        st = sup.status()
        check("generation 51: active" in st, f"expected generation 51 active:\n{st}")
        check("reloads: 50 ok, 0 failed" in st, st)
        check(sup.proc.poll() is None, "supervisor died")
        with open(sup.pidfile) as f:
            check(int(f.read()) == sup.pid, "supervisor pid changed")
        check(first and sup.worker_pids() != first, "worker pid did not change")
        times.sort()
        log(f"reload latency: median {times[len(times) // 2]:.1f} ms, max {times[-1]:.1f} ms")
        rc = sup.stop()
        check(rc == 0, f"supervisor exit status {rc} after SIGTERM (echo exits 0)\n{sup.log()[-2000:]}")
    finally:
        sup.kill()


def case_failed_reload(tmp):
    """A new generation that exits at start-up, and one that never becomes
    ready: `handoff reload` exits 1 with the reason; the old one serves on."""
    port = free_port()
    flag = os.path.join(tmp, "fail")
    hang = os.path.join(tmp, "hang")
    script = (f'if [ -e {flag} ]; then echo "start-up failure" >&2; exit 3; fi; '
              f'if [ -e {hang} ]; then exec sleep 30; fi; exec "$0" "$@"')
    cmd = ["/bin/sh", "-c", script, *echo_cmd(port)]
    sd_path = os.path.join(tmp, "notify.sock")
    sd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sd.bind(sd_path)
    sd.settimeout(10)
    sup = Supervisor(tmp, cmd, listen=[f"127.0.0.1:{port}"], extra=["--ready-timeout", "1"],
                     env={"NOTIFY_SOCKET": sd_path})
    try:
        sup.wait_ready()
        before = sup.worker_pids()
        with Load(port, threads=3) as load:
            time.sleep(0.2)
            open(flag, "w").close()
            rc, out, err = sup.ctl("reload")
            log(f"reload with a failing command: rc={rc} {err.strip()}")
            check(rc == 1, f"reload should fail with 1, got {rc}: {out} {err}")
            check("exited with status 3" in err and "before it was ready" in err, err)
            check("keeps serving" in err, err)
            msgs = [sd.recv(4096).decode() for _ in range(3)]
            check(msgs[0].startswith("READY=1") and "RELOADING=1" in msgs[1], msgs)
            check(msgs[2].startswith("READY=1\nSTATUS=reload failed: generation 2 failed"), msgs)
            os.unlink(flag)
            open(hang, "w").close()
            t0 = time.monotonic()
            rc, out, err = sup.ctl("reload")
            log(f"reload with a command never ready: rc={rc} {err.strip()}")
            check(rc == 1 and "did not become ready within 1000 ms" in err, f"{rc} {err}")
            check(time.monotonic() - t0 < 5, "ready timeout took too long")
            os.unlink(hang)
            time.sleep(0.2)
        ok, failures = load.report()
        check(not failures, f"failed requests while reloads failed: {failures[:5]}")
        check(sup.worker_pids() == before, "the old generation was replaced")
        st = sup.status()
        check("reloads: 0 ok, 2 failed" in st and "last failure:" in st, st)
        # No process of the failed generations is left.
        left = [p for p in descendants(sup.pid) if p not in before]
        check(not left, f"processes of failed generations remain: {left}")
        rc, out, err = sup.ctl("reload")
        check(rc == 0, f"a good reload after the failures failed: {err}")
    finally:
        sup.kill()
        sd.close()


def case_crash_restart(tmp):
    """A crashed worker is restarted; a crash loop backs off and shows in
    `handoff status`; sockets stay open meanwhile (clients queue)."""
    port = free_port()
    flag = os.path.join(tmp, "crash")
    script = f'if [ -e {flag} ]; then exit 7; fi; exec "$0" "$@"'
    cmd = ["/bin/sh", "-c", script, *echo_cmd(port)]
    sup = Supervisor(tmp, cmd, listen=[f"127.0.0.1:{port}"],
                     extra=["--restart-delay", "50ms", "--restart-delay-max", "400ms"])
    try:
        sup.wait_ready()
        (pid,) = sup.worker_pids()
        os.kill(pid, signal.SIGKILL)
        # One status per poll: two could see the old worker, then none yet.
        wait_until(lambda: (lambda w: w and w != [pid])(sup.worker_pids()), 10, "a restarted worker")
        st = sup.status()
        check("restarts 1" in st and "was killed by SIGKILL" in st, st)
        # A crash loop: the command fails until the flag goes away.
        open(flag, "w").close()
        (pid,) = sup.worker_pids()
        os.kill(pid, signal.SIGKILL)
        time.sleep(1.5)
        st = sup.status()
        log("status during the crash loop:\n" + st)
        check("crashes in a row" in st or "restarts" in st, st)
        check("exited with status 7" in st, st)
        check("crash loop" in sup.log(), "crash loop not logged")
        # A client that connects now waits in the listen queue.
        result = {}

        def client():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
                    s.sendall(b"queued\n")
                    result["got"] = s.recv(100)
            except OSError as e:
                result["err"] = e
        t = threading.Thread(target=client)
        t.start()
        time.sleep(0.3)
        os.unlink(flag)
        t.join(15)
        check(result.get("got") == b"queued\n", f"queued client: {result}")
        wait_until(lambda: sup.worker_pids(), 10, "recovery")
        delays = [float(x) for x in re.findall(r"restart \d+ in (\d+) ms", sup.log())]
        log(f"restart delays seen: {delays[:8]}")
        check(len(delays) >= 3 and max(delays) <= 400 and max(delays) > delays[0], f"no backoff: {delays}")
    finally:
        sup.kill()


NOBODY_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect:", e.strerror)
    sys.exit(0)
try:
    s.sendall(b"reload\\n")
except OSError:
    pass  # refused: the verdict is waiting in the receive buffer
data = b""
while True:
    c = s.recv(4096)
    if not c:
        break
    data += c
print("answer:", data.decode().strip())
"""


def as_nobody(args):
    import pwd
    pw = pwd.getpwnam("nobody")
    return subprocess.run(["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"] + args,
                          capture_output=True, text=True, timeout=30)


@T.case(root=True)
def case_control_other_user(tmp):
    """The control socket refuses another user: by its 0600 mode, and by
    SO_PEERCRED when the mode is loosened."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        log("needs root and setpriv")
        return SKIP
    os.chmod(tmp, 0o755)
    port = free_port()
    sup = Supervisor(tmp, echo_cmd(port), listen=[f"127.0.0.1:{port}"], extra=["--nonblock"])
    try:
        sup.wait_ready()
        mode = os.stat(sup.control).st_mode & 0o777
        check(mode == 0o600, f"control socket mode {oct(mode)}")
        client = [sys.executable, "-c", NOBODY_CLIENT, sup.control]
        # The build tree may not be readable by nobody (CI clones under
        # /root); our client binary is tried only where it can run.
        ours = as_nobody([ARGS.handoff, "--version"]).returncode == 0
        r = as_nobody(client)
        log(f"nobody, mode 0600: {r.stdout.strip()} {r.stderr.strip()}")
        check("connect: Permission denied" in r.stdout, f"{r.stdout} {r.stderr}")
        if ours:
            rc, out, err = sup.ctl("reload", user="nobody")
            check(rc == 4 and "Permission denied" in err, f"{rc} {out} {err}")
        os.chmod(sup.control, 0o666)
        r = as_nobody(client)
        log(f"nobody, mode 0666: {r.stdout.strip()} {r.stderr.strip()}")
        check("answer: DENIED permission denied: uid 65534" in r.stdout, f"{r.stdout} {r.stderr}")
        if ours:
            rc, out, err = sup.ctl("reload", user="nobody")
            log(f"handoff reload as nobody: rc={rc} {err.strip()}")
            check(rc == 4 and "permission denied" in err, f"{rc} {out} {err}")
        else:
            log("the handoff binary cannot run as nobody here; checked with a python client only")
        check("refused a connection from uid 65534" in sup.log(), "refusal not logged")
        check("reloads: 0 ok" in sup.status(), "a reload happened anyway")
    finally:
        sup.kill()


NOTIFY_FLOOD = """
import errno, os, socket, sys, time
addr, seconds = sys.argv[1], float(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setblocking(False)
target = "\\0" + addr[1:] if addr.startswith("@") else addr
sent, refused, full, other = 0, 0, 0, ""
end = time.monotonic() + seconds
while time.monotonic() < end and sent + refused + full < 5_000_000:
    try:
        s.sendto(b"READY=1\\nSTATUS=flood", target)
        sent += 1
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            refused += 1
            time.sleep(0.001)
        elif e.errno == errno.EAGAIN:
            full += 1
        else:
            other = e.strerror
            time.sleep(0.001)
print(f"sent={sent} refused={refused} full={full} other={other}")
"""


def worker_notify_socket(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        for kv in f.read().split(b"\0"):
            if kv.startswith(b"NOTIFY_SOCKET="):
                return kv[len(b"NOTIFY_SOCKET="):].decode()
    raise Fail(f"worker {pid} has no NOTIFY_SOCKET")


@T.case(root=True)
def case_notify_foreign_user(tmp):
    """Another user floods the workers' NOTIFY_SOCKET while the supervisor
    reloads: the socket cannot be reached by that user at all (it used to be
    an abstract socket anyone could fill, so the workers' non-blocking
    READY=1 was dropped and reloads failed on the ready timeout), and every
    reload succeeds."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        log("needs root and setpriv (to flood as another user)")
        return SKIP
    port = free_port()
    sup = Supervisor(tmp, echo_cmd(port), listen=[f"127.0.0.1:{port}"], extra=["--ready-timeout", "3"])
    floods = []
    try:
        sup.wait_ready()
        (pid,) = sup.worker_pids()
        addr = worker_notify_socket(pid)
        log(f"the workers' NOTIFY_SOCKET: {addr}")
        import pwd
        pw = pwd.getpwnam("nobody")
        for _ in range(3):
            floods.append(subprocess.Popen(
                ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups",
                 sys.executable, "-c", NOTIFY_FLOOD, addr, "6"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        time.sleep(0.5)
        with Load(port, threads=2) as load:
            for i in range(8):
                rc, out, err = sup.ctl("reload", timeout=30)
                check(rc == 0, f"reload {i + 1} during the flood failed ({rc}): {err}\n{sup.log()[-2000:]}")
        ok, failures = load.report()
        check(not failures, f"failed requests: {failures[:5]}")
        results = [p.communicate(timeout=30)[0].strip() for p in floods]
        log(f"flooders as nobody: {results}")
        for r in results:
            m = re.match(r"sent=(\d+) refused=(\d+) full=(\d+)", r)
            check(m, f"flooder output: {r}")
            check(int(m.group(1)) == 0 and int(m.group(3)) == 0 and int(m.group(2)) > 0,
                  f"another user could send to the notify socket: {r}")
        check("reloads: 8 ok, 0 failed" in sup.status(), sup.status())
    finally:
        for p in floods:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        sup.kill()


NOT_WORKER = """
import os, socket, sys, time
addr = os.environ["NOTIFY_SOCKET"]
def send(msg):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(msg, "\\0" + addr[1:] if addr.startswith("@") else addr)
    s.close()
if os.fork() == 0:
    for _ in range(100):  # for the whole ready timeout, whatever the load
        send(b"READY=1\\nSTATUS=from a forked child")
        time.sleep(0.05)
    os._exit(0)
if os.path.exists(sys.argv[1]):
    send(b"READY=1\\nSTATUS=from the worker")
time.sleep(600)
"""


def case_notify_not_worker(tmp):
    """READY=1 counts only from the worker's own pid (--notify-access main,
    the default): a child the worker forked, or an unrelated process of the
    same user, cannot make a reload succeed. With --notify-access all, the
    forked child's READY=1 counts."""
    flag = os.path.join(tmp, "self-ready")
    script = os.path.join(tmp, "worker.py")
    with open(script, "w") as f:
        f.write(NOT_WORKER)
    open(flag, "w").close()
    sup = Supervisor(tmp, [sys.executable, script, flag], extra=["--ready-timeout", "2"])
    try:
        sup.wait_ready()
        (pid,) = sup.worker_pids()
        addr = worker_notify_socket(pid)
        os.unlink(flag)  # from now on only the forked child says READY=1
        result = {}

        def reload():
            result["r"] = sup.ctl("reload", timeout=30)
        t = threading.Thread(target=reload)
        t.start()
        # An unrelated process of the same user, all along the reload.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            for _ in range(600):
                if not t.is_alive():
                    break
                s.sendto(b"READY=1\nSTATUS=from a stranger", "\0" + addr[1:] if addr.startswith("@") else addr)
                time.sleep(0.05)
        t.join(30)
        rc, out, err = result["r"]
        log(f"reload with READY=1 from a forked child and a stranger only: rc={rc} {err.strip()}")
        check(rc == 1 and "did not become ready within" in err, f"{rc} {out} {err}\n{sup.log()[-2000:]}")
        check(sup.worker_pids() == [pid], "the worker was replaced")
        check("ignoring a notification from pid" in sup.log() and "--notify-access all" in sup.log(), sup.log())
        check("from a" not in sup.status(), sup.status())  # their STATUS= is not shown either
    finally:
        sup.kill()
    sup = Supervisor(tmp, [sys.executable, script, flag], extra=["--ready-timeout", "5", "--notify-access", "all"],
                     name="all")
    try:
        sup.wait_ready()
        rc, out, err = sup.ctl("reload", timeout=30)
        check(rc == 0, f"--notify-access all: the forked child's READY=1 did not count: {rc} {err}")
        check('status "from a forked child"' in sup.status(), sup.status())
    finally:
        sup.kill()


def case_status_large(tmp):
    """`handoff status` of 128 workers during a reload (256 processes) with
    an 80 KB command line: the whole answer arrives, every line complete
    (the supervisor used to cut it at 64 KB, mid-line, and the client then
    reported that no answer came)."""
    pad = [f"pad{i:03d}-" + "x" * 92 for i in range(800)]
    sup = Supervisor(tmp, ["/bin/sh", "-c", "exec sleep 600", "sh", *pad],
                     extra=["--workers", "128", "--ready-delay", "1.5", "--drain-timeout", "5"])
    try:
        sup.wait_ready(timeout=60)
        result = {}

        def reload():
            result["r"] = sup.ctl("reload", timeout=60)
        t = threading.Thread(target=reload)
        t.start()
        # Starting 128 processes takes a while in sanitizer builds (each
        # fork copies large mappings): generous bounds.
        wait_until(lambda: "generation 2: starting" in sup.ctl("status", timeout=60)[1], 60, "the reload to start")
        rc, out, err = sup.ctl("status", timeout=60)
        t.join(60)
        log(f"status during the reload: rc={rc}, {len(out)} bytes, {out.count(chr(10))} lines {err.strip()}")
        check(rc == 0, f"status failed ({rc}): {err}")
        check(len(out) > 65536, f"only {len(out)} bytes")
        lines = out.splitlines()
        check(lines[0].startswith("supervisor: pid") and lines[-1].startswith("reloads: "), lines[-1][:200])
        check(lines[1].endswith(pad[-1]), f"the command line is cut: ...{lines[1][-120:]}")
        workers = [l for l in lines if re.match(r"  worker \d+: pid \d+, (ready|starting), up ", l)]
        check(len(workers) == 256, f"{len(workers)} worker lines, expected 128 ready + 128 starting")
        check(result["r"][0] == 0, f"reload: {result['r']}")
    finally:
        sup.kill()


STATUS_WORKER = r"""
import os, socket, time
addr = os.environ["NOTIFY_SOCKET"]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
msg = "READY=1\nSTATUS=\x1b[2J\x1b]0;owned\x07red\x9b31m \u202eevil\u202c caf\u00e9 \\ \"q\" \r\x7f\xff"
s.sendto(msg.encode("utf-8", "surrogateescape"), "\0" + addr[1:] if addr.startswith("@") else addr)
time.sleep(600)
"""


def case_status_escape(tmp):
    """A worker's STATUS= text reaches `handoff status` escaped: no escape
    sequence, C1 control, bidirectional override or invalid UTF-8 gets to
    the terminal (they used to, raw); printable UTF-8 is kept."""
    script = os.path.join(tmp, "worker.py")
    with open(script, "w") as f:
        f.write(STATUS_WORKER.replace("\\xff", "\\udcff"))
    sup = Supervisor(tmp, [sys.executable, script])
    try:
        sup.wait_ready()
        r = subprocess.run([ARGS.handoff, "status", "--control", sup.control], capture_output=True, timeout=10)
        check(r.returncode == 0, r.stderr)
        out = r.stdout
        line = [l for l in out.split(b"\n") if b"status \"" in l]
        check(len(line) == 1, out)
        log(f"worker line: {line[0].decode()}")
        for bad in (b"\x1b", b"\x07", b"\r", b"\x7f", b"\xc2\x9b", "\u202e".encode(), b"\xff"):
            check(bad not in out, f"{bad!r} reached the terminal: {line[0]!r}")
        want = (b'status "\\x1b[2J\\x1b]0;owned\\x07red\\xc2\\x9b31m \\xe2\\x80\\xaeevil\\xe2\\x80\\xac '
                + "caf\u00e9".encode() + b' \\\\ \\"q\\" \\r\\x7f\\xff"')
        check(want in line[0], f"{line[0]!r}\nwanted {want!r}")
    finally:
        sup.kill()


def case_stop_status(tmp):
    """SIGTERM stops every generation gracefully; the exit status is the
    worker's: 0 for echo, 128+9 for a command that ignores the stop signal
    and is killed after the drain timeout."""
    port = free_port()
    sup = Supervisor(tmp, echo_cmd(port), listen=[f"127.0.0.1:{port}"], extra=["--nonblock"])
    try:
        sup.wait_ready()
        check(sup.stop() == 0, f"echo: status {sup.proc.returncode}")
    finally:
        sup.kill()
    # The worker says when it ignores SIGTERM: --ready-delay alone is no
    # proof that the shell has run its trap yet (on a loaded machine it had
    # not, 100 ms after the start: SIGTERM killed it, status 143).
    ready = os.path.join(tmp, "ready")
    sup = Supervisor(tmp, ["/bin/sh", "-c", f"trap '' TERM; : > '{ready}'; sleep 30 & wait; wait"],
                     extra=["--ready-delay", "0.1", "--drain-timeout", "0.5"], name="stubborn")
    try:
        sup.wait_ready()
        wait_until(lambda: os.path.exists(ready), 30, "the worker to ignore SIGTERM")
        t0 = time.monotonic()
        rc = sup.stop()
        took = time.monotonic() - t0
        log(f"stubborn worker: status {rc} after {took:.2f} s")
        check(rc == 137, f"expected 137, got {rc}\n{sup.log()}")
        check(0.4 < took < 5, f"took {took}")
        check("SIGKILL" in sup.log(), "kill not logged")
        # The sleep in the worker's process group was killed too.
        check(not [p for p in descendants(sup.pid)], "leftover processes")
    finally:
        sup.kill()


def case_rolling(tmp):
    """--workers 3 --rolling: each reload replaces the workers one at a
    time, under load, without a failed request."""
    port = free_port()
    sup = Supervisor(tmp, echo_cmd(port), listen=[f"127.0.0.1:{port}"],
                     extra=["--nonblock", "--workers", "3", "--rolling", "--max-draining", "10"])
    try:
        sup.wait_ready()
        first = set(sup.worker_pids())
        check(len(first) == 3, f"workers: {first}")
        with Load(port, threads=3, persistent=1) as load:
            reload_many(sup, 10)
        ok, failures = load.report()
        check(not failures, f"failed requests: {failures[:5]}")
        now = set(sup.worker_pids())
        check(len(now) == 3 and not (now & first), f"workers {now} vs {first}")
        check(sup.log().count("(rolling 3/3)") == 10, "rolling steps not logged")
        check(sup.stop() == 0, "stop")
    finally:
        sup.kill()


def case_environment(tmp):
    """What a worker sees: LISTEN_PID = its own pid, LISTEN_FDS/FDNAMES,
    SERVER_STARTER_PORT, the supervisor's own NOTIFY_SOCKET (never the one
    systemd gave the supervisor), HANDOFF_GENERATION (the supervisor's
    generation number) and no other HANDOFF_* variable, and no fd but
    0-2 and its sockets. The supervisor's own NOTIFY_SOCKET gets READY=1,
    RELOADING=1 + MONOTONIC_USEC, READY=1 and STOPPING=1."""
    p1, p2 = free_port(), free_port()
    out = os.path.join(tmp, "env.json")
    dumper = os.path.join(tmp, "dump.py")
    with open(dumper, "w") as f:
        f.write(f"""
import json, os, socket, time
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
fds = [fd for fd in range(256) if is_open(fd)]
with open({out!r} + '.tmp', 'w') as f:
    json.dump({{'pid': os.getpid(), 'env': dict(os.environ), 'fds': fds}}, f)
os.rename({out!r} + '.tmp', {out!r})
addr = os.environ['NOTIFY_SOCKET']
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b'READY=1\\nSTATUS=dumped', '\\0' + addr[1:] if addr[0] == '@' else addr)
time.sleep(60)
""")
    sd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sd_path = os.path.join(tmp, "systemd-notify.sock")
    sd.bind(sd_path)
    sd.settimeout(10)
    # An fd the supervisor inherits without O_CLOEXEC, right where a
    # worker's fds end: it must not reach the worker.
    r, w = os.pipe()
    stray = os.dup2(r, 6)
    os.set_inheritable(stray, True)
    sup = Supervisor(tmp, [sys.executable, dumper],
                     listen=[f"web=127.0.0.1:{p1}", f"[::1]:{p2}" if socket.has_ipv6 else f"127.0.0.1:{p2}",
                             f"unix:{tmp}/u.sock"],
                     env={"NOTIFY_SOCKET": sd_path, "HANDOFF_SECRET": "x", "SERVER_STARTER_PORT": "bogus",
                          "WATCHDOG_USEC": "600000000"},
                     pass_fds=(stray,))
    for fd in {r, w, stray}:
        os.close(fd)
    try:
        first = sorted(sd.recv(4096).decode() for _ in range(2))
        check(first[1] == "WATCHDOG=1" and first[0].startswith("READY=1"), f"first messages: {first}")
        d = json.load(open(out))
        env = d["env"]
        check(env["LISTEN_PID"] == str(d["pid"]), f"LISTEN_PID {env['LISTEN_PID']} != {d['pid']}")
        check(env["LISTEN_FDS"] == "3", env["LISTEN_FDS"])
        names = env["LISTEN_FDNAMES"].split(":")
        check(names[0] == "web" and len(names) == 3, env["LISTEN_FDNAMES"])
        ssp = env["SERVER_STARTER_PORT"].split(";")
        check(ssp[0] == f"127.0.0.1:{p1}=3" and ssp[2] == f"{tmp}/u.sock=5", env["SERVER_STARTER_PORT"])
        check(env["SERVER_STARTER_GENERATION"] == "1", env["SERVER_STARTER_GENERATION"])
        # A socket file in a directory only the supervisor's user can enter.
        ns = env["NOTIFY_SOCKET"]
        check(ns.startswith("/") and os.path.basename(ns) == "notify", ns)
        st = os.stat(os.path.dirname(ns))
        check(st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o700, f"{ns}: {oct(st.st_mode)}")
        check(env.get("HANDOFF_GENERATION") == "1", f"HANDOFF_GENERATION={env.get('HANDOFF_GENERATION')}")
        check(not [k for k in env if (k.startswith("HANDOFF_") and k != "HANDOFF_GENERATION") or
                   k.startswith("WATCHDOG_")], "HANDOFF_* or WATCHDOG_* leaked")
        check(d["fds"] == [0, 1, 2, 3, 4, 5], f"fds {d['fds']}")
        os.unlink(out)
        rc, o, e = sup.ctl("reload")
        check(rc == 0, e)
        msgs = [sd.recv(4096).decode() for _ in range(2)]
        check("RELOADING=1" in msgs[0] and "MONOTONIC_USEC=" in msgs[0], msgs)
        check(msgs[1].startswith("READY=1") and "generation 2 ready" in msgs[1], msgs)
        d = json.load(open(out))
        check(d["env"]["SERVER_STARTER_GENERATION"] == "2", "generation")
        check(d["env"].get("HANDOFF_GENERATION") == "2", "HANDOFF_GENERATION after the reload")
        check(d["env"]["LISTEN_PID"] == str(d["pid"]), "LISTEN_PID after reload")
        sup.proc.send_signal(signal.SIGTERM)
        m3 = sd.recv(4096).decode()
        check("STOPPING=1" in m3, m3)
        sup.proc.wait(40)
        check(not os.path.exists(f"{tmp}/u.sock"), "unix socket left behind")
    finally:
        sup.kill()
        sd.close()


def case_generation_status(tmp):
    """A libhandoff server under the supervisor reports the supervisor's
    generation number in its STATUS= (it said "generation 1" in every
    generation: the supervisor removed HANDOFF_GENERATION), and a unix
    socket it inherited survives each generation's exit."""
    port = free_port()
    path = os.path.join(tmp, "u.sock")
    sup = Supervisor(tmp, echo_cmd(port, ["--listen", f"unix:{path}"]),
                     listen=[f"127.0.0.1:{port}", f"unix:{path}"], extra=["--nonblock"])
    try:
        sup.wait_ready()
        for gen in (1, 2, 3):
            if gen > 1:
                rc, out, err = sup.ctl("reload")
                check(rc == 0, err)
            (pid,) = sup.worker_pids()
            want = f'status "Serving (generation {gen}, pid {pid})"'
            st = wait_until(lambda: (lambda t: want in t and t)(sup.status()), 10, want)
            log(f"generation {gen}: {[l.strip() for l in st.splitlines() if 'status' in l]}")
            check(os.path.exists(path), f"the unix socket is gone in generation {gen}")
        check(sup.stop() == 0, "stop")
    finally:
        sup.kill()


PARITY_WRAPPER = """#!{python}
import json, os, signal, sys
# The command both the library (echo's upgrade re-executes its argv[0],
# this file) and the supervisor start. {mode} says what to be now:
# "echo", or "ACTION NAME": dump the environment and fds to NAME.json,
# then exit 3 ("exit3") or die of SIGSEGV ("segv").
with open({mode!r}) as f:
    action, *name = f.read().split()
if action == "echo":
    os.execv({echo!r}, sys.argv)
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
fds = [fd for fd in range(256) if is_open(fd)]  # listing /proc/self/fd would open one
with open(os.path.join({tmp!r}, name[0] + ".json"), "w") as f:
    json.dump({{"pid": os.getpid(), "env": dict(os.environ), "fds": fds}}, f)
if action == "segv":
    os.kill(os.getpid(), signal.SIGSEGV)
os._exit(3)
"""

STATUS_WORDS = r"(exited with status \d+|was killed by SIG[A-Z0-9+-]+(?: \(core dumped\))?)"


def case_child_parity(tmp):
    """The library (an upgrade of echo) and the command (a reload of
    `handoff run`) give a child the same environment - the same variables
    taken out and the same ones written, apart from each one's own channel
    (the library's handshake: HANDOFF_READY_FD, HANDOFF_PARENT_PID, ...;
    the supervisor's NOTIFY_SOCKET and Server::Starter's variables) - and describe its end in the same words
    (one wait-status formatter, src/shared/status.c)."""
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    port = free_port()
    mode = os.path.join(tmp, "mode")
    wrapper = os.path.join(tmp, "server")
    with open(wrapper, "w") as f:
        f.write(PARITY_WRAPPER.format(python=sys.executable, mode=mode, echo=ARGS.echo, tmp=tmp))
    os.chmod(wrapper, 0o755)

    def set_mode(m):
        with open(mode + ".tmp", "w") as f:
            f.write(m)
        os.rename(mode + ".tmp", mode)

    # Stale protocol variables and a plain one: both must treat them alike.
    env = dict(os.environ, HANDOFF_SECRET="x", SERVER_STARTER_PORT="bogus", LISTEN_PIDFDID="7",
               WATCHDOG_USEC="1000000", PARITY_MARK="kept")
    env.pop("NOTIFY_SOCKET", None)
    cmd = [wrapper, "--listen", f"127.0.0.1:{port}"]

    # The library: echo upgrading itself on SIGHUP.
    set_mode("echo")
    with open(os.path.join(tmp, "echo.log"), "w") as errf:
        echo = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf)
    lib_words = []
    try:
        wait_until(lambda: T.port_open(port), 20, "echo to listen")
        for action in ("exit3", "segv"):
            set_mode(f"{action} lib-{action}")
            os.kill(echo.pid, signal.SIGHUP)
            wait_until(lambda: open(os.path.join(tmp, "echo.log")).read().count("upgrade-failed") >
                       len(lib_words), 30, f"the library's upgrade to fail ({action})")
            lines = [l for l in open(os.path.join(tmp, "echo.log")).read().splitlines() if "upgrade-failed" in l]
            lib_words.append(re.search(STATUS_WORDS, lines[-1]).group(1))
        check(echo.poll() is None, "echo died")
    finally:
        echo.send_signal(signal.SIGTERM)
        try:
            echo.wait(20)
        except subprocess.TimeoutExpired:
            echo.kill()
            echo.wait(10)
    wait_until(lambda: T.port_free(port), 20, "echo's port to be free")

    # The command: `handoff run` reloading the same command.
    set_mode("echo")
    sup = Supervisor(tmp, cmd, listen=[f"127.0.0.1:{port}"], env=env)
    sup_words = []
    try:
        sup.wait_ready()
        for action in ("exit3", "segv"):
            set_mode(f"{action} sup-{action}")
            rc, out, err = sup.ctl("reload")
            check(rc == 1, f"the reload ({action}) did not fail: {rc} {out} {err}")
            sup_words.append(re.search(STATUS_WORDS, err).group(1))
    finally:
        sup.kill()
    log(f"library: {lib_words}; command: {sup_words}")
    check(lib_words == sup_words == ["exited with status 3", "was killed by SIGSEGV"],
          f"wait statuses: library {lib_words}, command {sup_words}")

    lib = json.load(open(os.path.join(tmp, "lib-exit3.json")))
    cmdd = json.load(open(os.path.join(tmp, "sup-exit3.json")))
    le, ce = dict(lib["env"]), dict(cmdd["env"])
    check(le.pop("LISTEN_PID") == str(lib["pid"]) and ce.pop("LISTEN_PID") == str(cmdd["pid"]), "LISTEN_PID")
    # The library's handshake: its socket, its peer, and whatever else it
    # tells its successor there (HANDOFF_* beside the generation number).
    ready_fd = int(le["HANDOFF_READY_FD"])
    check(le["HANDOFF_PARENT_PID"] == str(echo.pid), "HANDOFF_PARENT_PID")
    handshake = {k: le.pop(k) for k in list(le) if k.startswith("HANDOFF_") and k != "HANDOFF_GENERATION"}
    log(f"the library's handshake variables: {handshake}")
    for k in ("SERVER_STARTER_PORT", "SERVER_STARTER_GENERATION", "NOTIFY_SOCKET"):
        ce.pop(k)                                       # the supervisor's own channels
    check(ce.get("SERVER_STARTER_PORT") is None and "bogus" not in json.dumps(cmdd["env"]), "stale variable")
    only_lib = {k: le[k] for k in le.keys() - ce.keys()}
    only_cmd = {k: ce[k] for k in ce.keys() - le.keys()}
    differ = {k: (le[k], ce[k]) for k in le.keys() & ce.keys() if le[k] != ce[k]}
    log(f"child environment: {len(le)} variables alike; only library {only_lib}, only command {only_cmd}, "
        f"different {differ}")
    check(not only_lib and not only_cmd and not differ,
          f"environments differ: library only {only_lib}, command only {only_cmd}, values {differ}")
    check(le["PARITY_MARK"] == "kept" and le["HANDOFF_GENERATION"] == "2" and le["LISTEN_FDS"] == "1", str(le))
    check([fd for fd in lib["fds"] if fd != ready_fd] == cmdd["fds"],
          f"fds: library {lib['fds']} (handshake {ready_fd}), command {cmdd['fds']}")


def case_library_log(tmp):
    """The library logs through the command's logger (handoff_options.log):
    its warning about a LISTEN_FDS that names a closed fd reaches the
    supervisor's log as a warning line of the command, with its time
    stamp, whatever the library does by default (the team's rule: the
    library is silent unless given a log function)."""
    ctl = os.path.join(tmp, "lib.sock")
    logpath = os.path.join(tmp, "lib.log")
    # LISTEN_PID must be the supervisor's own pid: the shell exec's it.
    script = (f'LISTEN_PID=$$ LISTEN_FDS=1 exec {ARGS.handoff} run --control {ctl} '
              f'--ready-delay 0.05 -- sleep 60')
    with open(logpath, "w") as f:
        p = subprocess.Popen(["/bin/sh", "-c", script], stdin=subprocess.DEVNULL, stdout=f, stderr=f)
    try:
        wait_until(lambda: os.path.exists(ctl), 20, "the control socket")
        text = open(logpath).read()
        line = [l for l in text.splitlines() if "LISTEN_FDS names fd 3" in l]
        check(line, f"the library's warning did not reach the log:\n{text}")
        log(f"library warning: {line[0]}")
        check(re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z handoff\[\d+\]: warning: LISTEN_FDS names fd 3, which is not open",
                       line[0]), f"not through the command's logger: {line[0]}")
    finally:
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def case_socket_activation(tmp):
    """Under systemd-socket-activate the supervisor adopts LISTEN_FDS (with
    names) and passes them on, still reloadable."""
    if not shutil.which("systemd-socket-activate"):
        return SKIP
    port = free_port()
    ctl = os.path.join(tmp, "sa.sock")
    logf = open(os.path.join(tmp, "sa.log"), "w")
    p = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=public",
                          ARGS.handoff, "run", "-v", "--nonblock", "--control", ctl, "--",
                          *echo_cmd(port)], stdout=logf, stderr=subprocess.STDOUT)
    try:
        # systemd-socket-activate starts the command on the first connection.
        def connect():
            try:
                return socket.create_connection(("127.0.0.1", port), timeout=10)
            except OSError:
                return None
        with wait_until(connect, 10, "systemd-socket-activate to listen") as s:
            s.sendall(b"first\n")
            check(s.recv(10) == b"first\n", "first request")
        wait_until(lambda: os.path.exists(ctl), 10, "control socket")
        with Load(port, threads=2) as load:
            time.sleep(0.2)
            for _ in range(5):
                r = subprocess.run([ARGS.handoff, "reload", "--control", ctl], capture_output=True, text=True,
                                   timeout=30)
                check(r.returncode == 0, r.stderr)
        ok, failures = load.report()
        check(ok > 0 and not failures, f"{failures[:5]}")
        st = subprocess.run([ARGS.handoff, "status", "--control", ctl], capture_output=True, text=True).stdout
        check(re.search(r"listen: fd 3 public 127\.0\.0\.1:\d+", st), st)
        with open(os.path.join(tmp, "sa.log")) as f:
            check("adopted inherited fd as public" in f.read(), "adoption not logged")
    finally:
        for pid in descendants(p.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        p.kill()
        p.wait(10)


def case_orphans(tmp):
    """The supervisor is a subreaper: a worker's orphaned grandchild is
    reaped by it (no zombie is left)."""
    port = free_port()
    script = '(sleep 0.3 &); exec "$0" "$@"'
    sup = Supervisor(tmp, ["/bin/sh", "-c", script, *echo_cmd(port)], listen=[f"127.0.0.1:{port}"],
                     extra=["--nonblock"])
    try:
        sup.wait_ready()
        time.sleep(0.8)
        zombies = [c for c in children(sup.pid) if proc_state(c) == "Z"]
        check(not zombies, f"zombies: {zombies}")
        check("reaped orphan pid" in sup.log(), "orphan not reaped by the supervisor")
    finally:
        sup.kill()


@T.case(root=True)
def case_pid1(tmp):
    """As PID 1 of a new pid namespace (a container): reloads work, orphans
    are reaped, SIGTERM stops it with status 0."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return SKIP
    # Where namespaces cannot be made (a container without CAP_SYS_ADMIN; a
    # chroot whose root is not a mount point), the case cannot run at all.
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        T.skip("unshare cannot make a pid namespace here: %s" % probe.stderr.strip())
    port = free_port()
    ctl = os.path.join(tmp, "pid1.sock")
    logf = open(os.path.join(tmp, "pid1.log"), "w")
    p = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
                          ARGS.handoff, "run", "-v", "--nonblock", "--control", ctl, "--listen",
                          f"127.0.0.1:{port}", "--", "/bin/sh", "-c", '(sleep 0.2 &); exec "$0" "$@"',
                          *echo_cmd(port)], stdout=logf, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: os.path.exists(ctl), 10, "control socket")

        def status():
            return subprocess.run([ARGS.handoff, "status", "--control", ctl], capture_output=True,
                                  text=True, timeout=10).stdout
        wait_until(lambda: ", ready" in status(), 10, "ready")
        check(status().startswith("supervisor: pid 1,"), status())
        with Load(port, threads=2) as load:
            for _ in range(5):
                r = subprocess.run([ARGS.handoff, "reload", "--control", ctl], capture_output=True,
                                   text=True, timeout=30)
                check(r.returncode == 0, r.stderr)
                time.sleep(0.1)
        ok, failures = load.report()
        check(ok > 0 and not failures, f"{failures[:5]}")
        time.sleep(0.3)
        with open(os.path.join(tmp, "pid1.log")) as f:
            text = f.read()
        check("reaped orphan pid" in text, "orphans not reaped by PID 1")
        sup = [c for c in children(p.pid)]
        check(len(sup) == 1, f"unshare children {sup}")
        os.kill(sup[0], signal.SIGTERM)
        check(p.wait(40) == 0, f"exit status {p.returncode}")
    finally:
        for pid in descendants(p.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if p.poll() is None:
            p.kill()
            p.wait(10)
        logf.close()


def case_unix_socket(tmp):
    """A unix socket survives reloads (old generations must not unlink a
    path the supervisor owns) and is removed when the supervisor stops."""
    path = os.path.join(tmp, "echo.sock")
    sup = Supervisor(tmp, [ARGS.echo, "--listen", f"unix:{path}"], listen=[f"unix:{path}"], extra=["--nonblock"])
    try:
        sup.wait_ready()
        for i in range(5):
            rc, out, err = sup.ctl("reload")
            check(rc == 0, err)
            time.sleep(0.1)
            check(os.path.exists(path), f"socket path gone after reload {i + 1}")
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(path)
                s.sendall(b"u\n")
                check(s.recv(10) == b"u\n", "unix echo")
        check(sup.stop() == 0, "stop")
        check(not os.path.exists(path), "socket path left after stop")
    finally:
        sup.kill()


def case_forward_signal(tmp):
    """--forward signals (default USR1,USR2,WINCH) reach the current
    generation; the supervisor never sends SIGHUP to a worker."""
    port = free_port()
    mark = os.path.join(tmp, "usr1")
    sup = Supervisor(tmp, echo_cmd(port, ["--exec-on-usr1", f"echo $$ >> {mark}"]),
                     listen=[f"127.0.0.1:{port}"], extra=["--nonblock"])
    try:
        sup.wait_ready()
        (pid,) = sup.worker_pids()
        os.kill(sup.pid, signal.SIGUSR1)
        wait_until(lambda: os.path.exists(mark), 10, "the worker to get SIGUSR1")
        check("forwarded to 1 process" in sup.log(), sup.log())
        check(sup.worker_pids() == [pid], "the worker changed")
        os.kill(sup.pid, signal.SIGHUP)
        wait_until(lambda: "generation 2: active" in sup.status(), 10, "the SIGHUP reload")
    finally:
        sup.kill()


PLAIN_WORKER = """
import os, signal, socket, sys, time
# Handles no signal (TERM, its stop signal, kills it), except USR2 with a
# handler if asked; SIGWINCH keeps its default (ignore). Records what it
# got; READY=1 once its handlers are in place.
mark = sys.argv[1]
def got(signo, frame):
    with open(mark, "a") as f:
        f.write(str(signo) + " ")
if len(sys.argv) > 2:
    signal.signal(signal.SIGUSR2, got)
socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
while True:
    time.sleep(600)
"""


def case_stray_signals(tmp):
    """Signals sent to the supervisor by mistake never kill a serving
    process: a --forward signal reaches only workers that handle it (the
    default set USR1,USR2,WINCH used to kill every worker that left USR1 at
    its default action), and the supervisor itself survives every signal
    that would terminate it by default (ALRM, PWR, RTMIN+3 ... used to kill
    it)."""
    script = os.path.join(tmp, "plain.py")
    with open(script, "w") as f:
        f.write(PLAIN_WORKER)
    mark = os.path.join(tmp, "got")
    sup = Supervisor(tmp, [sys.executable, script, mark])
    try:
        sup.wait_ready()
        (pid,) = sup.worker_pids()
        sigs = [signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGALRM, signal.SIGVTALRM,
                signal.SIGPROF, signal.SIGIO, signal.SIGPWR, signal.SIGXCPU, signal.SIGXFSZ,
                signal.SIGRTMIN + 3, signal.SIGRTMAX]
        for sig in sigs:
            os.kill(sup.pid, sig)
            time.sleep(0.05)
        time.sleep(0.5)
        check(sup.proc.poll() is None, f"the supervisor died: {sup.proc.returncode}\n{sup.log()[-1500:]}")
        check(sup.worker_pids() == [pid], f"the worker was replaced: {sup.worker_pids()} (was {pid})\n{sup.log()[-1500:]}")
        text = sup.log()
        check("not forwarding SIGUSR1 to generation 1 (pid" in text, text[-1500:])
        check("not forwarding SIGUSR2" in text and "not forwarding SIGWINCH" not in text, text[-1500:])
        check("SIGALRM from pid" in text and "ignored (not forwarded" in text, text[-1500:])
        check("crash" not in text and "restart" not in text, text[-1500:])
        check(not os.path.exists(mark), "the worker got a signal it does not handle")
    finally:
        sup.kill()
    # The same worker with a USR2 handler gets USR2, and only that.
    sup = Supervisor(tmp, [sys.executable, script, mark, "usr2"], name="h")
    try:
        sup.wait_ready()
        (pid,) = sup.worker_pids()
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            os.kill(sup.pid, sig)
        wait_until(lambda: os.path.exists(mark), 10, "the worker to get SIGUSR2")
        time.sleep(0.3)
        with open(mark) as f:
            check(f.read().split() == [str(int(signal.SIGUSR2))], "signals received")
        check(sup.worker_pids() == [pid], "the worker was replaced")
    finally:
        sup.kill()


def case_leftovers(tmp):
    """A worker whose main process exits on the stop signal but leaves
    children that ignore it: they are tracked as leftovers of its process
    group, counted by --max-draining, and killed at the drain timeout."""
    script = "(trap '' TERM; exec sleep 60) & exec sleep 60"
    sup = Supervisor(tmp, ["/bin/sh", "-c", script],
                     # The drain timeout is well above --max-draining's 1 s wait, so
                     # that each kill is --max-draining's even on a slow machine.
                     extra=["--ready-delay", "0.05", "--drain-timeout", "5", "--max-draining", "1"])
    try:
        sup.wait_ready()
        reload_many(sup, 3, pause=0.2)
        time.sleep(0.3)
        st = sup.status()
        log("status:\n" + st)
        check("leftovers draining" in st, st)
        check(sup.log().count("(--max-draining 1): killing generation") == 2, sup.log())
        wait_until(lambda: len(descendants(sup.pid)) == 2, 30, "leftovers killed at the drain timeout")
        check("SIGKILL" in sup.log(), sup.log())
        check(sup.proc.poll() is None and sup.status().count("generation") == 1, sup.status())
    finally:
        sup.kill()


def case_concurrent_reload(tmp):
    """Reloads asked for during a reload wait for it, then share one reload
    of their own: every caller gets 0 once a generation that started after
    its request is ready. Each generation is ready only once the case says
    so (a file its --ready-command waits for), so no timing is assumed."""
    port = free_port()
    flag = os.path.join(tmp, "ready-")
    open(flag + "1", "w").close()
    sup = Supervisor(tmp, echo_cmd(port), listen=[f"127.0.0.1:{port}"],
                     extra=["--nonblock", "--ready-command", f'test -e {flag}"$HANDOFF_GENERATION"',
                            "--ready-interval", "0.05"])
    try:
        sup.wait_ready()
        results = {}

        def reload(k):
            results[k] = sup.ctl("reload")
        first = threading.Thread(target=reload, args=(0,))
        first.start()
        wait_until(lambda: "generation 2: starting" in sup.status(), 30, "the first reload to start")
        later = [threading.Thread(target=reload, args=(k,)) for k in (1, 2, 3)]
        for t in later:
            t.start()
        wait_until(lambda: sup.log().count("control: reload from pid") == 4, 60, "the three later requests")
        check("generation 2: starting" in sup.status(), "generation 2 became ready by itself")
        open(flag + "2", "w").close()
        open(flag + "3", "w").close()
        for t in [first] + later:
            t.join(30)
        log(f"answers: {[(k, v[0], v[1].strip()) for k, v in sorted(results.items())]}")
        check(all(v[0] == 0 for v in results.values()), f"{results}")
        check("generation 2 ready" in results[0][1], results[0][1])
        check(all("generation 3 ready" in results[k][1] for k in (1, 2, 3)), f"{results}")
        check("reloads: 2 ok" in sup.status(), sup.status())
    finally:
        sup.kill()


def case_max_draining(tmp):
    """Old generations that never finish draining are capped by
    --max-draining: the oldest is killed, with its process group."""
    sup = Supervisor(tmp, ["/bin/sh", "-c", "trap '' TERM; sleep 60 & wait; wait"],
                     extra=["--ready-delay", "0.05", "--max-draining", "2", "--drain-timeout", "60"])
    try:
        sup.wait_ready()
        reload_many(sup, 5, pause=0.1)
        time.sleep(0.3)
        st = sup.status()
        draining = re.findall(r"generation (\d+): draining", st)
        log(f"draining generations: {draining}")
        check(sorted(draining) == ["4", "5"], st)
        check(sup.log().count("(--max-draining 2): killing generation") == 3, sup.log())
        procs = descendants(sup.pid)
        check(len(procs) == 6, f"expected 3 generations x (sh + sleep), found {procs}")
    finally:
        sup.kill()


# ---------------------------------------------------------------- real servers

def http_get(port, path="/", timeout=5):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            c = s.recv(65536)
            if not c:
                return data
            data += c


def real_server_reloads(sup, port, reloads, threads=3):
    sup.wait_ready(timeout=60)
    wait_until(lambda: http_get(port).startswith(b"HTTP/1.1 200") or None, 30, "first 200")
    with Load(port, kind="http", threads=threads) as load:
        time.sleep(0.5)
        times = reload_many(sup, reloads, pause=0.3)
        time.sleep(0.5)
    ok, failures = load.report()
    check(not failures, f"{len(failures)} failed requests: {failures[:5]}\n{sup.log()[-3000:]}")
    check(ok > reloads * 5, f"too few requests: {ok}")
    times.sort()
    log(f"reload latency: median {times[len(times) // 2]:.0f} ms, max {times[-1]:.0f} ms")
    check(f"reloads: {reloads} ok, 0 failed" in sup.status(), sup.status())


PSGI_APP = """my $app = sub {
    return [200, ['Content-Type' => 'text/plain'], ["Hello, World!"]];
};
"""


# A load test: alone on the machine, so that a starved client does not
# look like a failed restart.
@T.case(serial=True)
def case_starlet(tmp):
    """Starlet (Debian package `starlet`), which takes its sockets from
    SERVER_STARTER_PORT, reloaded 20 times under load. Readiness: its
    master has forked its workers (a --ready-command on $HANDOFF_PID)."""
    if not shutil.which("plackup") or subprocess.run(["perl", "-MPlack::Handler::Starlet", "-e1"],
                                                     capture_output=True).returncode != 0:
        log("starlet is not installed (apt-get install starlet)")
        return SKIP
    port = free_port()
    app = os.path.join(tmp, "app.psgi")
    with open(app, "w") as f:
        f.write(PSGI_APP)
    cmd = ["plackup", "-s", "Starlet", "--max-workers", "2", "--max-reqs-per-child", "100000",
           "-E", "deployment", "-a", app]
    sup = Supervisor(tmp, cmd, listen=[f"127.0.0.1:{port}"],
                     # `pgrep -c -P $HANDOFF_PID` without needing procps:
                     extra=["--ready-command",
                            'test "$(grep -l "^PPid:[[:space:]]*$HANDOFF_PID\$" /proc/[0-9]*/status 2>/dev/null'
                            ' | wc -l)" -ge 2',
                            "--ready-interval", "0.05", "--drain-timeout", "10"])
    try:
        real_server_reloads(sup, port, 20)
        check(sup.stop() == 0, f"stop: {sup.proc.returncode}")
    finally:
        sup.kill()


WSGI_APP = """def app(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '13')])
    return [b'Hello, World!']
"""


# A load test: alone on the machine, so that a starved client does not
# look like a failed restart.
@T.case(serial=True)
def case_gunicorn(tmp):
    """gunicorn (Debian package `gunicorn`), which adopts LISTEN_FDS and
    sends READY=1 to NOTIFY_SOCKET, reloaded 20 times under load (5 in a
    sanitizer build)."""
    if not shutil.which("gunicorn"):
        log("gunicorn is not installed (apt-get install gunicorn)")
        return SKIP
    port = free_port()
    with open(os.path.join(tmp, "app.py"), "w") as f:
        f.write(WSGI_APP)
    cmd = ["gunicorn", "--chdir", tmp, "--workers", "2", "--graceful-timeout", "10",
           "--bind", f"127.0.0.1:{port}", "app:app"]
    sup = Supervisor(tmp, cmd, listen=[f"127.0.0.1:{port}"], extra=["--drain-timeout", "15"])
    # Each gunicorn start takes seconds of Python; in a sanitizer build of
    # the supervisor (what the sanitizer checks here) 5 reloads exercise the
    # same code, and keep CI within its time.
    reloads = 5 if T.sanitizer_of(ARGS.handoff) else 20
    try:
        real_server_reloads(sup, port, reloads)
        check(sup.stop() == 0, f"stop: {sup.proc.returncode}")
    finally:
        sup.kill()


# A load test: alone on the machine, so that a starved client does not
# look like a failed restart.
@T.case(serial=True)
def case_hello_wrk(tmp):
    """The HTTP example `hello` under handoff run: 50 reloads under wrk
    load, zero non-2xx responses and zero socket errors."""
    if not ARGS.hello:
        log("no --hello given (the HTTP module is not built)")
        return SKIP
    if not shutil.which("wrk"):
        log("wrk is not installed")
        return SKIP
    port = free_port()
    sup = Supervisor(tmp, [ARGS.hello, "--listen", f"127.0.0.1:{port}", "--threads", "1"],
                     listen=[f"127.0.0.1:{port}"])
    try:
        sup.wait_ready()
        load = wrk.start(f"http://127.0.0.1:{port}/", 18, extra=("--latency",))
        time.sleep(1)
        times = reload_many(sup, 50, pause=0.25)
        out, _ = load.communicate(timeout=60)
        r = wrk.parse(out)
        log(f"wrk: {r}")
        check(r["requests"] > 1000, out)
        kills = [l for l in sup.log().splitlines() if "SIGKILL" in l or "max-draining" in l]
        check(r["non2xx"] == 0 and r["socket_errors"] == 0, f"{out}\nsupervisor kills: {kills}")
        times.sort()
        log(f"reload latency: median {times[len(times) // 2]:.1f} ms, max {times[-1]:.1f} ms")
        check("reloads: 50 ok, 0 failed" in sup.status(), sup.status())
        rc = sup.stop()
        check(rc == 0, f"stop: {rc}")
    finally:
        sup.kill()


def case_help_man(tmp):
    """`handoff --help` and handoff(1) document the same options and exit
    codes."""
    man = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "handoff.1")
    with open(man) as f:
        page = f.read().replace("\\-", "-").replace("\\fB", "").replace("\\fR", "")
    out = subprocess.run([ARGS.handoff, "--help"], capture_output=True, text=True, timeout=10)
    check(out.returncode == 0, out.stderr)
    help_opts = set(re.findall(r"(--[a-z][a-z-]+)", out.stdout))
    man_opts = set(re.findall(r"(--[a-z][a-z-]+)", page.split(".SH EXAMPLES")[0]))
    check(help_opts - man_opts == set(), f"in --help, not in handoff(1): {help_opts - man_opts}")
    check(man_opts - help_opts == set(), f"in handoff(1) only: {man_opts - help_opts}")
    for code in ("0", "1", "2", "3", "4", "5"):
        check(re.search(rf"\b{code} ", out.stdout), f"exit code {code} not in --help")
        check(f".B {code}\n" in page, f"exit code {code} not in handoff(1)")


if __name__ == "__main__":
    T.main(globals(), paths=["handoff", "echo"], optional_paths=["hello"], timeout=300)

#!/usr/bin/env python3
"""Fault matrix of `handoff run` (tools/): what the supervisor does when
things go wrong, with real processes on 127.0.0.1.

Usage: it-supervisor-faults.py --handoff PATH --echo PATH CASE

In every case the service stays up and no client request fails, unless the
case makes a failure physically unavoidable (a process holding connections
is killed); then the case asserts exactly which requests may fail: only
those on connections the killed process had accepted, as read from its fd
table and /proc/net/tcp while it was stopped (SIGSTOP) just before.

Each CASE is one ctest entry. Exit status: 0 pass, 1 fail, 77 skip. Every
wait polls a condition with a generous bound; every load loop is bounded
in time and count; everything a case starts is killed by pid at the end.
Helpers (Supervisor, wait_until, ...) come from tests/lib/handofftest.
"""
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import handofftest as T  # noqa: E402
from handofftest import (Fail, check, children, descendants, free_port, log,  # noqa: E402
                         proc_state, wait_until)
from handofftest.supervisor import Supervisor  # noqa: E402

ARGS = None  # --handoff, --echo (set by the runner)


# ---------------------------------------------------------------- helpers

class Load:
    """Client threads, each request a new TCP connection to echo (a line,
    echoed back), plus `persistent` connections kept open and used every
    20 ms. Every failure is recorded with the client's local port (None if
    the connection was never established) so that a case can compare it
    with the connections a killed process had accepted."""

    def __init__(self, port, threads=3, persistent=0, max_seconds=150):
        self.port = port
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []  # (time, local port or None, what)
        self.deadline = time.monotonic() + max_seconds
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.threads += [threading.Thread(target=self._persistent, daemon=True) for _ in range(persistent)]

    def _fail(self, lport, what):
        with self.lock:
            self.failures.append((round(time.monotonic(), 3), lport, what))

    @staticmethod
    def _exchange(s, msg):
        s.sendall(msg)
        got = b""
        while not got.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed before the answer")
            got += chunk
        if got != msg:
            raise ValueError(f"echo mismatch {got!r}")

    def _run(self):
        n = 0
        while not self.stop_ev.is_set() and time.monotonic() < self.deadline and n < 1_000_000:
            n += 1
            lport = None
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=15) as s:
                    lport = s.getsockname()[1]
                    self._exchange(s, f"ping {n}\n".encode())
                with self.lock:
                    self.ok += 1
            except Exception as e:  # noqa: BLE001 - every failure counts
                self._fail(lport, f"{type(e).__name__}: {e}")
                time.sleep(0.01)

    def _persistent(self):
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=15)
        except OSError as e:
            self._fail(None, f"persistent connect: {e}")
            return
        lport = s.getsockname()[1]
        with s:
            n = 0
            while not self.stop_ev.is_set() and time.monotonic() < self.deadline and n < 100_000:
                n += 1
                try:
                    self._exchange(s, f"keep {n}\n".encode())
                    with self.lock:
                        self.ok += 1
                except Exception as e:  # noqa: BLE001
                    self._fail(lport, f"persistent: {type(e).__name__}: {e}")
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


def socket_inodes(pid):
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            t = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if t.startswith("socket:["):
            out.add(int(t[8:-1]))
    return out


def accepted_ports(pid, port):
    """Client ports of the connections to `port` that process `pid` holds
    (accepted sockets in its fd table). Exact only while pid is stopped."""
    inodes = socket_inodes(pid)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            lport = int(f[1].rsplit(":", 1)[1], 16)
            rport = int(f[2].rsplit(":", 1)[1], 16)
            if int(f[9]) in inodes and lport == port and rport != 0:
                ports.add(rport)
    return ports


def kill_accounted(pid, port, sig):
    """Stops pid, reads which connections it holds, then delivers `sig`
    (it acts on resume, before the process can run again, so it cannot
    accept anything more). Returns the client ports of those connections."""
    os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: proc_state(pid) == "T", 10, f"pid {pid} to stop")
    ports = accepted_ports(pid, port)
    os.kill(pid, sig)
    if sig != signal.SIGKILL:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: proc_state(pid) in (None, "Z"), 10, f"pid {pid} to die")
    return ports


def hold(port, n):
    """n open connections, each with one exchange done (so accepted)."""
    out = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        Load._exchange(s, f"held {i}\n".encode())
        out.append(s)
    return out


def held_broken(s):
    """True if a held connection is dead (EOF or reset)."""
    try:
        s.settimeout(10)
        s.sendall(b"after\n")
        return s.recv(100) == b""
    except OSError:
        return True


def no_zombies(pid):
    return not [c for c in children(pid) if proc_state(c) == "Z"]


def echo_once(port, data=b"x\n"):
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        Load._exchange(s, data)


def write_script(path, body):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, 0o755)


def swap_link(link, target):
    tmp = link + ".new"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)  # atomic, as a deploy does


class Deploy:
    """The command is a script that runs echo with the arguments in a
    file, read at every start: a case changes what the next start runs,
    as a deploy would."""

    def __init__(self, tmp, port, args=""):
        self.port = port
        self.conf = os.path.join(tmp, "args")
        self.script = os.path.join(tmp, "server")
        write_script(self.script, f'exec {ARGS.echo} --listen 127.0.0.1:{port} $(cat {self.conf})')
        self.set(args)

    def set(self, args):
        with open(self.conf + ".tmp", "w") as f:
            f.write(args)
        os.replace(self.conf + ".tmp", self.conf)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def generations(sup, text=None):
    """{generation: state} from `handoff status` (or its text)."""
    return {int(g): st for g, st in re.findall(r"^generation (\d+): ([\w+]+)", text or sup.status(), re.M)}


def settle(sup, timeout=30):
    """Waits until one generation is left, serving, and no zombie."""
    def one():
        st = sup.status()  # one snapshot per poll
        return (list(generations(sup, st).values()) == ["active"]
                and len(re.findall(r"^\s+worker \d+: pid \d+, ready", st, re.M)) == 1)
    wait_until(one, timeout, "one serving generation")
    wait_until(lambda: no_zombies(sup.pid), 10, "no zombie under the supervisor")


# ---------------------------------------------------------------- cases: a new binary that fails

def reload_failure(tmp, kind):
    """A reload whose new binary is missing / not executable / exits /
    crashes / hangs: `handoff reload` exits 1 with the reason, the old
    generation never stops serving (no request fails, not even on a
    connection kept open), the failed process is reaped, and the next good
    reload works. The same again through SIGHUP (reason in the log)."""
    port = free_port()
    link = os.path.join(tmp, "server")
    swap_link(link, ARGS.echo)
    bad = os.path.join(tmp, "bad")
    expect = {
        "missing": "No such file or directory",
        "not-executable": "Permission denied",
        "exits": "exited with status 3 after",
        "segv": "was killed by SIGSEGV",
        "hangs": "did not become ready within 1000 ms",
    }[kind]
    if kind == "not-executable":
        with open(bad, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(bad, 0o644)
    elif kind == "exits":
        write_script(bad, 'echo "start-up failure" >&2; exit 3')
    elif kind == "segv":
        write_script(bad, "kill -SEGV $$")
    elif kind == "hangs":
        write_script(bad, "exec sleep 60")
    sup = Supervisor(tmp, [link, "--listen", f"127.0.0.1:{port}"], listen=[f"127.0.0.1:{port}"],
                          extra=["--ready-timeout", "1"])
    try:
        sup.wait_ready()
        (g1,) = sup.worker_pids()
        with Load(port, threads=3, persistent=1) as load:
            time.sleep(0.2)
            swap_link(link, bad)
            t0 = time.monotonic()
            rc, out, err = sup.ctl("reload")
            took = time.monotonic() - t0
            log(f"reload to a new binary that {kind}: rc={rc} in {took:.2f} s: {err.strip()}")
            check(rc == 1, f"reload should fail with 1, got {rc}: {out} {err}")
            check(expect in err, f"reason should say {expect!r}: {err}")
            check("the current generation keeps serving" in err, err)
            check(took < 20, f"the failure took {took:.1f} s")
            check(sup.worker_pids() == [g1], "the old generation was replaced")
            echo_once(port)
            # The same through SIGHUP: no answer, the reason is logged.
            os.kill(sup.pid, signal.SIGHUP)
            wait_until(lambda: sup.log().count("error: reload: generation") >= 2, 20,
                       "the SIGHUP reload to fail")
            line = [ln for ln in sup.log().splitlines() if "error: reload: generation 3" in ln]
            check(line and expect in line[0], f"SIGHUP reload: {line}")
            # Nothing of the failed generations is left, not even a zombie.
            wait_until(lambda: descendants(sup.pid) == [g1], 10,
                       f"only generation 1 left (have {descendants(sup.pid)})")
            check(no_zombies(sup.pid), "zombie")
            swap_link(link, ARGS.echo)
            rc, out, err = sup.ctl("reload")
            check(rc == 0 and "generation 4 ready" in out, f"a good reload after the failure: {rc} {out} {err}")
            time.sleep(0.2)
        ok, failures = load.report()
        check(not failures, f"{len(failures)} failed requests: {failures[:5]}")
        check(ok > 20, f"too few requests ({ok})")
        st = sup.status()
        check("reloads: 1 ok, 2 failed" in st and "last failure: generation 3 failed" in st, st)
        with open(sup.pidfile) as f:
            check(int(f.read()) == sup.pid, "the pid file changed")
        rc = sup.stop()
        check(rc == 0, f"exit status {rc}\n{sup.log()[-2000:]}")
    finally:
        sup.kill()


def case_new_missing(tmp):
    return reload_failure(tmp, "missing")


def case_new_not_executable(tmp):
    return reload_failure(tmp, "not-executable")


def case_new_exits(tmp):
    return reload_failure(tmp, "exits")


def case_new_segv(tmp):
    return reload_failure(tmp, "segv")


def case_new_hangs(tmp):
    return reload_failure(tmp, "hangs")


def case_crash_after_ready(tmp):
    """A new generation that crashes right after it became ready (the
    reload has already succeeded: the old generation has its stop signal).
    The supervisor treats it as a crash of the current generation: restart
    with backoff (re-reading the command, so a fixed deploy is picked up),
    sockets open meanwhile. The old generation keeps draining and serves
    its open connections to the end. Part A: the new version aborts before
    it accepts anything: no client request fails at all (they wait in the
    listen queue). Part B: a worker crashes while serving: only
    connections it had accepted fail."""
    port = free_port()
    dep = Deploy(tmp, port)
    # Under ASan or TSan the worker must die of the SIGSEGV we send, not
    # report it and exit (TSan exits with status 66).
    asan = ":".join(x for x in (os.environ.get("ASAN_OPTIONS"), "handle_segv=0") if x)
    tsan = ":".join(x for x in (os.environ.get("TSAN_OPTIONS"), "handle_segv=0") if x)
    sup = Supervisor(tmp, [dep.script], listen=[f"127.0.0.1:{port}"],
                          env={"ASAN_OPTIONS": asan, "TSAN_OPTIONS": tsan},
                          extra=["--restart-delay", "100ms", "--restart-delay-max", "400ms"])
    try:
        sup.wait_ready()
        (g1,) = sup.worker_pids()
        with Load(port, threads=3, persistent=1) as load:
            time.sleep(0.3)
            # Part A.
            dep.set("--crash-after-ready 300")
            rc, out, err = sup.ctl("reload")
            check(rc == 0, f"the reload itself succeeds (the crash comes later): {rc} {err}")
            wait_until(lambda: sup.log().count("was killed by SIGABRT") >= 2, 30, "two crashes of generation 2")
            st = sup.status()
            log("status during the crash loop:\n" + st)
            check(re.search(r"generation 1: draining", st), f"generation 1 should still drain:\n{st}")
            check(proc_state(g1) not in (None, "Z"), "generation 1 exited while a connection was open")
            ok_fix = load.ok
            dep.set("")
            wait_until(lambda: load.ok > ok_fix + 30, 30, "requests served after the fix")
            ok_a, fail_a = load.ok, list(load.failures)
            log(f"part A: {ok_a} requests ok, failures {fail_a[:5]}")
            check(not fail_a, f"requests failed although the crashing worker accepted nothing: {fail_a[:5]}")
            delays = [int(x) for x in re.findall(r"was killed by SIGABRT after [^;]*; restart \d+ in (\d+) ms",
                                                 sup.log())]
            log(f"restart delays: {delays}")
            check(len(delays) >= 2 and delays[0] == 100 and delays[1] == 200, f"backoff: {delays}")
            # Part B: generation 2's worker serves; hold connections on it
            # (generation 1 stopped accepting when it got its stop signal).
            (w,) = sup.worker_pids()
            held = hold(port, 3)
            time.sleep(0.1)
            n_before = len(load.failures)
            ports = kill_accounted(w, port, signal.SIGSEGV)
            log(f"worker {w} killed by SIGSEGV while holding connections from ports {sorted(ports)}")
            wait_until(lambda: (lambda p: len(p) == 1 and p[0] != w)(sup.worker_pids()), 30, "the restart")
            echo_once(port)
            time.sleep(0.3)
        ok, failures = load.report()
        held_ports = {s.getsockname()[1] for s in held}
        check(held_ports <= ports, f"held connections {held_ports} not among the accepted {ports}")
        check(all(held_broken(s) for s in held), "a held connection survived its process")
        for s in held:
            s.close()
        later = failures[n_before:]
        stray = [f for f in later if f[1] not in ports]
        check(not stray, f"requests failed on connections the crashed worker had not accepted: {stray}")
        log(f"part B: {len(later)} load requests failed, all on connections the crashed worker held "
            f"({len(ports)} held, of which 3 ours)")
        # Generation 1 drained to the end: once its kept connection closed
        # (end of the load), it exited on its own.
        wait_until(lambda: re.search(rf"generation 1 \(pid {g1}\) exited with status 0 after .* of draining",
                                     sup.log()), 30, "generation 1 to finish draining")
        check(ok > 50, f"too few requests ({ok})")
        check("was killed by SIGSEGV" in sup.status(), sup.status())
        check(sup.proc.poll() is None, "the supervisor died")
    finally:
        sup.kill()


# ---------------------------------------------------------------- cases: signals at bad times

def case_kill_old_mid_drain(tmp):
    """The old generation is SIGKILLed while it drains: exactly the
    connections it held fail; the new generation serves on; the supervisor
    reaps it, logs it and exits 0 at the end (the killed generation's
    status does not count)."""
    port = free_port()
    sup = Supervisor(tmp, [ARGS.echo, "--listen", f"127.0.0.1:{port}"], listen=[f"127.0.0.1:{port}"])
    try:
        sup.wait_ready()
        (g1,) = sup.worker_pids()
        held = hold(port, 3)
        with Load(port, threads=3) as load:
            time.sleep(0.2)
            rc, out, err = sup.ctl("reload")
            check(rc == 0, err)
            (g2,) = sup.worker_pids()
            time.sleep(0.2)
            check(generations(sup).get(1) == "draining", sup.status())
            ports = kill_accounted(g1, port, signal.SIGKILL)
            log(f"generation 1 (pid {g1}) SIGKILLed while holding connections from ports {sorted(ports)}")
            wait_until(lambda: "generation 1 (pid" in sup.log() and 1 not in generations(sup), 10,
                       "the supervisor to reap generation 1")
            time.sleep(0.3)
        ok, failures = load.report()
        held_ports = {s.getsockname()[1] for s in held}
        check(held_ports <= ports, f"held {held_ports}, accepted {ports}")
        check(all(held_broken(s) for s in held), "a held connection survived SIGKILL")
        stray = [f for f in failures if f[1] not in ports]
        check(not stray, f"requests failed that generation 1 had not accepted: {stray}")
        check(ok > 20, f"too few requests ({ok})")
        line = [ln for ln in sup.log().splitlines() if f"generation 1 (pid {g1}) was killed by SIGKILL" in ln]
        check(line and "of draining" in line[0], f"log: {line}")
        check(sup.worker_pids() == [g2], "generation 2 should serve")
        check(no_zombies(sup.pid), "zombie")
        echo_once(port)
        rc = sup.stop()
        check(rc == 0, f"exit status {rc}")
    finally:
        sup.kill()


def case_term_during_reload(tmp):
    """SIGTERM while a reload waits for its new generation: the new
    process is killed and reaped, `handoff reload` gets the reason, the old
    generation is stopped gracefully (its open connection finishes its
    work), and the supervisor exits 0 leaving no process behind."""
    port = free_port()
    script = os.path.join(tmp, "server")
    # The new version hangs before it is ready once the flag file exists.
    write_script(script, f"if [ -e {tmp}/hang ]; then exec sleep 60; fi\n"
                         f"exec {ARGS.echo} --listen 127.0.0.1:{port}")
    sup = Supervisor(tmp, [script], listen=[f"127.0.0.1:{port}"], extra=["--ready-timeout", "60"])
    try:
        sup.wait_ready()
        (g1,) = sup.worker_pids()
        held = hold(port, 1)[0]
        open(f"{tmp}/hang", "w").close()
        answer = {}
        t = threading.Thread(target=lambda: answer.update(r=sup.ctl("reload")))
        t.start()
        wait_until(lambda: "generation 2: starting" in sup.status(), 10, "the reload to start")
        (g2,) = sup.worker_pids(states=("starting",))
        wait_until(lambda: "sleep" in open(f"/proc/{g2}/cmdline").read(), 10, "the hanging process")
        os.kill(sup.pid, signal.SIGTERM)
        t.join(30)
        rc, out, err = answer["r"]
        log(f"the waiting `handoff reload`: rc={rc} {err.strip()}")
        check(rc == 1 and "the supervisor is stopping" in err, f"{rc} {out} {err}")
        # The old generation drains: its connection still works, then ends.
        held.settimeout(10)
        Load._exchange(held, b"during the drain\n")
        held.close()
        rc = sup.proc.wait(30)
        log(f"supervisor exit status {rc}")
        check(rc == 0, f"exit status {rc}\n{sup.log()[-2000:]}")
        check(proc_state(g2) is None and proc_state(g1) is None, "a worker outlived the supervisor")
        check(not os.path.exists(sup.pidfile), "pid file left")
        check(not os.path.exists(sup.control), "control socket left")
    finally:
        sup.kill()


def case_hup_during_shutdown(tmp):
    """SIGHUP (and `handoff reload`) during a graceful shutdown are refused:
    no new process starts, the drain completes."""
    port = free_port()
    sup = Supervisor(tmp, [ARGS.echo, "--listen", f"127.0.0.1:{port}"], listen=[f"127.0.0.1:{port}"])
    try:
        sup.wait_ready()
        (g1,) = sup.worker_pids()
        held = hold(port, 1)[0]
        os.kill(sup.pid, signal.SIGTERM)
        wait_until(lambda: "stopping on SIGTERM" in sup.log(), 10, "the stop")
        for i in range(5):  # one at a time: pending signals of one kind merge
            os.kill(sup.pid, signal.SIGHUP)
            wait_until(lambda: sup.log().count("SIGHUP ignored: the supervisor is stopping") == i + 1, 10,
                       f"SIGHUP {i + 1} to be refused")
        rc, out, err = sup.ctl("reload", extra=["--timeout", "20"])
        check(rc == 1 and "stopping" in err, f"reload during shutdown: {rc} {out} {err}")
        check(descendants(sup.pid) == [g1], f"processes during the drain: {descendants(sup.pid)}")
        held.settimeout(10)
        Load._exchange(held, b"still draining\n")
        held.close()
        rc = sup.proc.wait(30)
        check(rc == 0, f"exit status {rc}")
        check("reload: starting" not in sup.log(), "a reload started during the shutdown")
    finally:
        sup.kill()


def case_hup_storm(tmp):
    """1,000 SIGHUPs within a second under load: the reloads coalesce; at
    the end one generation serves, the supervisor's pid is unchanged, no
    zombie, no failed request, and never more than --max-draining
    generations draining at once."""
    port = free_port()
    max_draining = 3
    sup = Supervisor(tmp, [ARGS.echo, "--listen", f"127.0.0.1:{port}"], listen=[f"127.0.0.1:{port}"],
                          extra=["--max-draining", str(max_draining), "-q"])
    try:
        sup.wait_ready()
        samples = []
        stop_sampling = threading.Event()

        def sampler():
            while not stop_sampling.is_set():
                try:
                    samples.append(list(generations(sup).values()).count("draining"))
                except Fail:
                    pass
                time.sleep(0.02)
        st = threading.Thread(target=sampler, daemon=True)
        with Load(port, threads=3) as load:
            time.sleep(0.2)
            st.start()
            t0 = time.monotonic()
            for i in range(1000):
                os.kill(sup.pid, signal.SIGHUP)
                d = t0 + (i + 1) / 1000 - time.monotonic()
                if d > 0:
                    time.sleep(d)
            took = time.monotonic() - t0
            settle(sup)
            stop_sampling.set()
            st.join(10)
            time.sleep(0.2)
        ok, failures = load.report()
        status = sup.status()
        n = int(re.search(r"reloads: (\d+) ok, (\d+) failed", status).group(1))
        log(f"1000 SIGHUPs in {took:.2f} s: {n} reloads, at most {max(samples)} generations draining "
            f"({len(samples)} samples)")
        warnings = [ln for ln in sup.log().splitlines() if "warning:" in ln or "error:" in ln]
        check(took < 2.5, f"sending took {took:.2f} s")
        check(not failures, f"{len(failures)} failed requests: {failures[:5]}; the supervisor's warnings: "
                            f"{warnings[-10:]}")
        check(ok > 50, f"too few requests ({ok})")
        check(1 <= n <= 1000 and "0 failed" in status, status)
        check(max(samples) <= max_draining, f"{max(samples)} generations draining at once")
        with open(sup.pidfile) as f:
            check(int(f.read()) == sup.pid, "the pid file changed")
        check(sup.proc.poll() is None, "the supervisor died")
        check(len(descendants(sup.pid)) == 1, f"processes left: {descendants(sup.pid)}")
        echo_once(port)
        check(sup.stop() == 0, "exit status")
    finally:
        sup.kill()


# ---------------------------------------------------------------- cases: environment

def case_pidfile_unwritable(tmp):
    """--pid-file in a directory the supervisor cannot write: it does not
    start (exit 1, the reason; no worker started, nothing left bound). A
    second supervisor that cannot start leaves the running one's pid file
    alone, and a pid file that names another process is left at exit."""
    port = free_port()
    if os.geteuid() == 0:
        bad = "/sys/handoff-it-no-write.pid"  # root writes anywhere but in sysfs
    else:
        ro = os.path.join(tmp, "ro")
        os.mkdir(ro)
        os.chmod(ro, 0o555)
        bad = os.path.join(ro, "sup.pid")
    ctl = os.path.join(tmp, "bad.sock")
    r = subprocess.run([ARGS.handoff, "run", "--control", ctl, "--pid-file", bad, "--listen",
                        f"127.0.0.1:{port}", "--", ARGS.echo, "--listen", f"127.0.0.1:{port}"],
                       capture_output=True, text=True, timeout=30)
    log(f"unwritable pid file: rc={r.returncode} {r.stderr.strip()}")
    check(r.returncode == 1, f"exit status {r.returncode}")
    check(f"--pid-file {bad}: cannot write it" in r.stderr and "not starting" in r.stderr, r.stderr)
    check("started generation" not in r.stderr, "a worker was started")
    check(not os.path.exists(ctl), "control socket left")
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # the port is free again
    # A second instance that fails (same control socket) keeps the pid file.
    sup = Supervisor(tmp, [ARGS.echo, "--listen", f"127.0.0.1:{port}"], listen=[f"127.0.0.1:{port}"])
    try:
        sup.wait_ready()
        other = free_port()
        r = subprocess.run([ARGS.handoff, "run", "--control", sup.control, "--pid-file", sup.pidfile,
                            "--listen", f"127.0.0.1:{other}", "--", ARGS.echo], capture_output=True,
                           text=True, timeout=30)
        check(r.returncode == 1 and "another supervisor" in r.stderr, f"{r.returncode} {r.stderr}")
        with open(sup.pidfile) as f:
            check(int(f.read()) == sup.pid, "the failed second instance touched the pid file")
        rc, out, err = sup.ctl("reload")
        check(rc == 0, err)
        # Someone replaces the pid file: it is not ours to remove any more.
        with open(sup.pidfile, "w") as f:
            f.write("1\n")
        check(sup.stop() == 0, "exit status")
        check(os.path.exists(sup.pidfile), "removed a pid file that named another process")
        check("names another process at exit" in sup.log(), sup.log()[-1000:])
    finally:
        sup.kill()


def case_notify_nowhere(tmp):
    """NOTIFY_SOCKET pointing nowhere (missing path, abstract name nobody
    bound, a regular file, not an address at all) or at a socket whose
    owner never reads (its queue fills after 10 messages, with the watchdog
    sending every 10 ms): warnings only; the supervisor never blocks,
    reloads work under load, no request fails, workers never see it."""
    plain = os.path.join(tmp, "plain-file")
    open(plain, "w").close()
    deaf_path = os.path.join(tmp, "deaf.sock")
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    deaf.bind(deaf_path)  # bound, never read
    variants = [
        ("missing path", {"NOTIFY_SOCKET": os.path.join(tmp, "no-such-dir", "notify.sock")}, "No such file"),
        ("abstract, unbound", {"NOTIFY_SOCKET": f"@handoff-it-nowhere-{os.getpid()}"}, "Connection refused"),
        ("regular file", {"NOTIFY_SOCKET": plain}, "Connection refused"),
        ("not an address", {"NOTIFY_SOCKET": "relative/notify.sock"}, "systemd will not be notified"),
        ("never read", {"NOTIFY_SOCKET": deaf_path, "WATCHDOG_USEC": "20000"}, "its receiver is not reading"),
    ]
    try:
        for i, (what, env, warning) in enumerate(variants):
            port = free_port()
            sup = Supervisor(tmp, [ARGS.echo, "--listen", f"127.0.0.1:{port}"],
                                  listen=[f"127.0.0.1:{port}"], env=env, name=f"n{i}")
            try:
                sup.wait_ready()
                if "WATCHDOG_USEC" in env:
                    time.sleep(0.5)  # 50 WATCHDOG=1 for a queue of 10
                with Load(port, threads=2) as load:
                    for _ in range(3):
                        rc, out, err = sup.ctl("reload", timeout=30)
                        check(rc == 0, f"{what}: reload: {rc} {err}")
                    time.sleep(0.1)
                ok, failures = load.report()
                check(not failures and ok > 5, f"{what}: {failures[:5]} ({ok} ok)")
                text = sup.log()
                check(warning in text, f"{what}: no warning {warning!r}:\n{text[-1500:]}")
                (w,) = sup.worker_pids()
                with open(f"/proc/{w}/environ", "rb") as f:  # as it was exec'd
                    wenv = [v.decode() for v in f.read().split(b"\0") if v.startswith(b"NOTIFY_SOCKET=")]
                check(len(wenv) == 1 and wenv[0].endswith("/notify") and
                      wenv[0] != "NOTIFY_SOCKET=" + env["NOTIFY_SOCKET"],
                      f"{what}: the worker's NOTIFY_SOCKET: {wenv}")
                n_warn = text.count("warning: sd_notify to")
                log(f"NOTIFY_SOCKET {what}: 3 reloads under load ok, {n_warn} warning line(s)")
                check(n_warn <= 2, f"{what}: {n_warn} warnings (repeats should be -v only)")
                check(sup.stop() == 0, f"{what}: exit status")
            finally:
                sup.kill()
    finally:
        deaf.close()


def lowest_free_fd(pid):
    used = {int(x) for x in os.listdir(f"/proc/{pid}/fd")}
    n = 0
    while n in used:
        n += 1
    return n


def case_fd_limit(tmp):
    """RLIMIT_NOFILE of the supervisor lowered (prlimit) so that a reload
    cannot get the fds it needs: the reload fails cleanly with the reason
    (`handoff reload` says it), the old generation keeps serving, and the
    control socket still answers, without spinning the CPU. Once the limit
    is raised again, reloads work."""
    port = free_port()
    sup = Supervisor(tmp, [ARGS.echo, "--listen", f"127.0.0.1:{port}"], listen=[f"127.0.0.1:{port}"])
    try:
        sup.wait_ready()
        (g1,) = sup.worker_pids()
        orig = resource.prlimit(sup.pid, resource.RLIMIT_NOFILE)
        with Load(port, threads=3, persistent=1) as load:
            time.sleep(0.2)
            # One free fd: the control connection gets it; the reload's
            # pipe (two fds) cannot be made.
            free = lowest_free_fd(sup.pid)
            resource.prlimit(sup.pid, resource.RLIMIT_NOFILE, (free + 1, orig[1]))
            rc, out, err = sup.ctl("reload")
            log(f"reload with one free fd: rc={rc} {err.strip()}")
            check(rc == 1 and "Too many open files" in err and "keeps serving" in err, f"{rc} {out} {err}")
            # No free fd at all: the control socket answers through its spare fd.
            resource.prlimit(sup.pid, resource.RLIMIT_NOFILE, (lowest_free_fd(sup.pid), orig[1]))
            rc, out, err = sup.ctl("reload")
            log(f"reload with no free fd: rc={rc} {err.strip()}")
            check(rc == 1 and "Too many open files" in err, f"{rc} {out} {err}")
            check("accepted a connection with the spare fd" in sup.log(), sup.log()[-1500:])
            # A client that occupies the spare fd: the next one waits in the
            # backlog (the supervisor does not spin), then gets its answer.
            idle = socket.socket(socket.AF_UNIX)
            idle.connect(sup.control)
            time.sleep(0.3)
            waiting = subprocess.Popen([ARGS.handoff, "status", "--control", sup.control, "--timeout", "30"],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            wait_until(lambda: "cannot accept: Too many open files" in sup.log(), 10, "accept to pause")
            c0, t0 = cpu_seconds(sup.pid), time.monotonic()
            time.sleep(1.0)
            busy = (cpu_seconds(sup.pid) - c0) / (time.monotonic() - t0)
            log(f"supervisor CPU while a client waits at the fd limit: {busy * 100:.0f}%")
            check(busy < 0.3, f"the supervisor spins at the fd limit ({busy * 100:.0f}% CPU)")
            check(waiting.poll() is None, "the waiting client was answered without an fd?")
            idle.close()
            sout, serr = waiting.communicate(timeout=30)
            check(waiting.returncode == 0 and "generation 1: active" in sout, f"{waiting.returncode} {serr}")
            # SIGHUP at the limit: the reason is logged.
            os.kill(sup.pid, signal.SIGHUP)
            wait_until(lambda: sup.log().count("Too many open files; the current generation keeps serving") >= 3,
                       10, "the SIGHUP reload to fail")
            check(sup.worker_pids() == [g1], "the old generation was replaced")
            echo_once(port)
            resource.prlimit(sup.pid, resource.RLIMIT_NOFILE, orig)
            rc, out, err = sup.ctl("reload")
            check(rc == 0, f"reload after the limit was raised: {rc} {err}")
            time.sleep(0.2)
        ok, failures = load.report()
        check(not failures and ok > 20, f"{failures[:5]} ({ok} ok)")
        check("reloads: 1 ok, 3 failed" in sup.status(), sup.status())
        check(sup.stop() == 0, "exit status")
    finally:
        sup.kill()


def full_backlog_socket(path):
    """A unix stream socket at path that listens but never accepts, with
    its backlog full: a connect() to it waits for room for ever."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(0)
    held = []
    for _ in range(64):
        c = socket.socket(socket.AF_UNIX)
        c.setblocking(False)
        try:
            c.connect(path)
        except BlockingIOError:
            c.close()
            return srv, held
        held.append(c)
    raise Fail("could not fill the backlog of a unix socket")


def case_control_backlog_full(tmp):
    """A control socket path whose listener never accepts and has a full
    backlog (a supervisor stopped with SIGSTOP, or flooded): `handoff
    status/reload/stop --timeout 1` give up after a second with exit status 5
    (connect() used to wait for ever), and `handoff run` with that --control
    refuses at once (its stale-socket probe used to wait for ever)."""
    path = os.path.join(tmp, "busy.sock")
    srv, held = full_backlog_socket(path)
    try:
        for cmd in ("status", "reload", "stop"):
            t0 = time.monotonic()
            try:
                r = subprocess.run([ARGS.handoff, cmd, "--control", path, "--timeout", "1"],
                                   capture_output=True, text=True, timeout=20)
            except subprocess.TimeoutExpired:
                raise Fail(f"handoff {cmd} --timeout 1 still waiting after 20 s on a full backlog")
            took = time.monotonic() - t0
            log(f"handoff {cmd} --timeout 1: rc={r.returncode} after {took:.2f} s: {r.stderr.strip()}")
            check(r.returncode == 5 and "no answer within 1.0 s" in r.stderr, f"{r.returncode} {r.stderr}")
            check(0.8 < took < 10, f"took {took:.2f} s")
        t0 = time.monotonic()
        try:
            r = subprocess.run([ARGS.handoff, "run", "--control", path, "--ready-delay", "0.1", "--", "sleep", "30"],
                               capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            raise Fail("handoff run still probing a control socket with a full backlog after 20 s")
        log(f"handoff run on it: rc={r.returncode} after {time.monotonic() - t0:.2f} s: {r.stderr.strip()}")
        check(r.returncode == 1 and "Address already in use" in r.stderr, f"{r.returncode} {r.stderr}")
        check(os.path.exists(path), "the live socket was removed")
    finally:
        for c in held:
            c.close()
        srv.close()


def setup(args):
    # The crashes these cases cause must not leave core files around.
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))


if __name__ == "__main__":
    T.main(globals(), paths=["handoff", "echo"], timeout=300, setup=setup)

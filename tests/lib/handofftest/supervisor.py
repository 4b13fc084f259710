"""`handoff run` (tools/) under test: one supervisor with its own control
socket, pid file and log (tests/it-supervisor.py,
tests/it-supervisor-faults.py). The binary is the script's --handoff
option.
"""
import os
import re
import signal
import subprocess

from .proc import descendants
from .runner import Fail, at_exit, check, ctx, wait_until


class Supervisor:
    """One `handoff run` with its own directory, control socket and log."""

    def __init__(self, tmp, command, listen=(), extra=(), env=None, name="sup", pass_fds=()):
        self.tmp = tmp
        self.control = os.path.join(tmp, f"{name}.sock")
        self.pidfile = os.path.join(tmp, f"{name}.pid")
        self.logpath = os.path.join(tmp, f"{name}.log")
        args = [ctx.args.handoff, "run", "-v", "--control", self.control, "--pid-file", self.pidfile]
        for spec in listen:
            args += ["--listen", spec]
        args += list(extra) + ["--"] + list(command)
        self.logf = open(self.logpath, "w")
        e = dict(os.environ)
        e.pop("NOTIFY_SOCKET", None)
        if env:
            e.update(env)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.logf,
                                     stderr=subprocess.STDOUT, env=e, pass_fds=pass_fds)
        self.pid = self.proc.pid
        at_exit(self.kill)

    def ctl(self, cmd, timeout=60, user=None, extra=()):
        args = [ctx.args.handoff, cmd, "--control", self.control] + list(extra)
        if user:
            import pwd
            pw = pwd.getpwnam(user)
            args = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"] + args
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stdout, r.stderr

    def status(self):
        rc, out, err = self.ctl("status", timeout=10)
        check(rc == 0, f"handoff status failed: {rc} {err}")
        return out

    def wait_ready(self, timeout=30):
        def ready():
            if self.proc.poll() is not None:
                raise Fail(f"supervisor exited early with {self.proc.returncode}:\n{self.log()}")
            if not os.path.exists(self.control):
                return False
            rc, out, _ = self.ctl("status", timeout=max(10, timeout))
            return rc == 0 and "supervisor: pid" in out and ", ready" in out.splitlines()[0]
        wait_until(ready, timeout, "the supervisor to be ready")

    def worker_pids(self, states=("ready",)):
        pids = []
        for line in self.status().splitlines():
            m = re.match(r"\s+worker (\d+): pid (\d+), (\w+)", line)
            if m and m.group(3) in states:
                pids.append(int(m.group(2)))
        return pids

    def log(self):
        self.logf.flush()
        with open(self.logpath) as f:
            return f.read()

    def stop(self, timeout=40):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.proc.returncode

    def kill(self):
        for pid in descendants(self.pid):
            for target in (-pid, pid):
                try:
                    os.kill(target, signal.SIGKILL)
                except OSError:
                    pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.logf.close()
        # A sanitizer report in the log fails the case: the runner scans
        # every *.log of the case's directory.

    def log_text(self):
        with open(self.logpath) as f:
            return f.read()

"""Processes, pid files, ports and polling: the helpers every integration
script, scripts/soak.py and bench/ share (python3 standard library only).

Nothing here raises a test failure: waits that must succeed are
handofftest.wait_until (runner.py); this module's poll_until returns what
the predicate returned, or None at the deadline.
"""
import os
import resource
import signal
import socket
import time


def free_port():
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_free(port):
    """True if `port` of 127.0.0.1 can be bound now (SO_REUSEADDR)."""
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def port_open(port, timeout=0.5):
    """True if something accepts TCP connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
        return True
    except OSError:
        return False


def poll_until(pred, timeout, interval=0.01):
    """Calls pred() until it returns a true value (returned) or `timeout`
    seconds pass (None)."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            return None
        time.sleep(interval)


def read_pid(path):
    """The pid in a pid file, 0 if the file is missing, empty or partial."""
    try:
        with open(path) as f:
            s = f.read(32).strip()
        return int(s) if s.isdigit() else 0
    except OSError:
        return 0


def proc_stat(pid):
    """(state, ppid) of pid from /proc/PID/stat, or (None, None)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return rest[0], int(rest[1])
    except (OSError, IndexError, ValueError):
        return None, None


def proc_state(pid):
    """The state letter of pid (R, S, T, Z, ...), or None if it is gone."""
    return proc_stat(pid)[0]


def alive(pid):
    """True if pid exists and is neither a zombie nor dead."""
    return bool(pid) and proc_state(pid) not in (None, "Z", "X")


def children(pid):
    """The pids whose parent is pid (zombies included), from every thread's
    /proc/PID/task/TID/children."""
    out = []
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            pass
    return out


def children_states(pid):
    """[(child pid, state letter)] of pid's children, zombies included."""
    out = []
    for c in children(pid):
        st = proc_state(c)
        if st is not None:
            out.append((c, st))
    return out


def descendants(pid):
    """Every pid below pid in the process tree, zombies included."""
    out, todo = [], [pid]
    while todo:
        for c in children(todo.pop()):
            out.append(c)
            todo.append(c)
    return out


def zombies_under(pids):
    """[(zombie pid, "Z")] among the children of `pids`."""
    return [(c, s) for p in pids for (c, s) in children_states(p) if s == "Z"]


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def fd_targets(pid):
    """{fd: readlink target} of pid's open fds."""
    out = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            out[int(fd)] = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            pass
    return out


def status_kb(pid, field):
    """A size field of /proc/PID/status ("VmRSS", "VmHWM", ...) in KiB
    (0 if unknown or pid is gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kb(pid):
    """VmRSS of pid in KiB (0 if unknown)."""
    return status_kb(pid, "VmRSS")


def cpu_ms(pid):
    """User + system CPU time pid has used so far, in ms (from its stat)."""
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")


def private_bytes(pid):
    """Private_Clean + Private_Dirty of pid in bytes (smaps_rollup): the
    memory only this process holds."""
    n = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("Private_Clean", "Private_Dirty"):
                n += int(v.split()[0]) * 1024
    return n


def kill_pids(pids, sig=signal.SIGKILL, groups=False):
    """Sends sig to every pid (and with groups, to the process group it
    leads), ignoring those already gone."""
    for pid in pids:
        if not pid or pid <= 1:
            continue
        for target in ((-pid, pid) if groups else (pid,)):
            try:
                os.kill(target, sig)
            except OSError:
                pass


def raise_nofile(n):
    """Raises RLIMIT_NOFILE to at least n where the limits allow it (the
    hard limit too, with privilege; else the soft one up to the hard one).
    Returns the soft limit obtained, which may be below n."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    if soft != inf and soft >= n:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, max(n, hard) if hard != inf else inf))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != inf else n, hard))
    got = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return n if got == inf else got


def sanitizer_of(binary):
    """'thread' or 'address' if `binary` was built with that sanitizer,
    else None (time bounds are scaled for ThreadSanitizer builds)."""
    try:
        with open(binary, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if b"__tsan_init" in data:
        return "thread"
    if b"__asan_init" in data:
        return "address"
    return None

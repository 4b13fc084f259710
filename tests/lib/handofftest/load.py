"""Load during restarts, for servers the tests do not control: wrk
(keep-alive; wrk.py parses it), a probe that opens a new connection per
request, slow requests (tests/it-preload-servers.py). Every loop is bounded in time;
every failure is kept with its time and kind (refused, reset, timeout,
closed before a response...).
"""
import re
import shutil
import signal
import socket
import threading
import time

from . import wrk


def has_ipv6():
    """True if [::1] can be bound here."""
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def http_once(port, path="/", host="127.0.0.1", timeout=5, unix=None):
    """One HTTP/1.1 request on a new connection (Connection: close), to
    host:port or to the unix socket path `unix`. Returns (status, body);
    raises OSError (ConnectionAbortedError: closed before a response)."""
    if unix:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        s.connect(unix)
    else:
        s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    finally:
        s.close()
    if not data:
        raise ConnectionAbortedError("closed before a response")
    m = re.match(rb"HTTP/1\.[01] (\d+)", data)
    if not m:
        raise ConnectionAbortedError("not HTTP: %r" % data[:40])
    return int(m.group(1)), data.split(b"\r\n\r\n", 1)[-1]


def classify(e):
    """A failure's kind, for counting."""
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, ConnectionResetError):
        return "reset"
    if isinstance(e, socket.timeout):
        return "timeout"
    if isinstance(e, ConnectionAbortedError):
        return "closed"
    return type(e).__name__


class Probe:
    """Calls once() `rate` times a second over `threads` threads sharing
    one schedule (thread k takes slots k, k + threads, ...; a late thread
    does not burst); once() opens its own connection and raises on
    failure. A context manager: runs while inside the `with`."""

    def __init__(self, once, rate=100, threads=2):
        self.once, self.rate, self.threads = once, rate, threads
        self.ok = 0
        self.failures = []  # (seconds since the start, kind)
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.t0 = time.monotonic()
        self.ts = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)]

    def _run(self, k):
        n = k
        while not self.stop_ev.is_set():
            due = self.t0 + n / self.rate
            n += self.threads
            d = due - time.monotonic()
            if d > 0:
                self.stop_ev.wait(d)
            elif d < -1:
                n += self.threads * int(-d * self.rate / self.threads)  # skip, do not burst
            try:
                self.once()
                with self.lock:
                    self.ok += 1
            except Exception as e:  # noqa: BLE001 - every failure is a result
                with self.lock:
                    self.failures.append((round(time.monotonic() - self.t0, 3), classify(e)))

    def __enter__(self):
        for t in self.ts:
            t.start()
        return self

    def __exit__(self, *a):
        self.stop_ev.set()
        for t in self.ts:
            t.join(10)

    def kinds(self):
        k = {}
        for _, kind in self.failures:
            k[kind] = k.get(kind, 0) + 1
        return k


def wrk_start(url, seconds, connections=8, threads=1):
    """wrk in the background (bounded by -d); None if wrk is missing."""
    if not shutil.which("wrk"):
        return None
    return wrk.start(url, seconds, connections, threads)


def wrk_stop(p):
    """Stops wrk early (SIGINT: it still prints its summary); wrk.parse()
    of it."""
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=30)
    return wrk.parse(out)


def in_thread(results, once):
    """Runs once() in a thread; appends "ok" or the failure's kind to
    results. Returns the thread."""
    def run():
        try:
            once()
            results.append("ok")
        except Exception as e:  # noqa: BLE001
            results.append(classify(e))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t

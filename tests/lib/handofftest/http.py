"""HTTP/1.1 servers under test (tests/it-http-server.c, examples/hello) and
a byte-exact client (tests/it-http.py, tests/it-hostile.py). The default
binary is the script's --server option.
"""
import os
import re
import socket
import ssl
import subprocess
import time

from .proc import free_port, kill_pids, port_open, read_pid
from .runner import at_exit, check, ctx, fail, wait_until


class Server:
    """A server process with a pid file, on a free port of 127.0.0.1."""

    def __init__(self, extra=(), binary=None, port=None, tls=None, prefix=()):
        self.port = port or free_port()
        self.pidfile = os.path.join(ctx.tmp, "srv-%d.pid" % self.port)
        self.logpath = os.path.join(ctx.tmp, "srv-%d.log" % self.port)
        argv = [binary or ctx.args.server, "--listen", "127.0.0.1:%d" % self.port,
                "--pid-file", self.pidfile]
        if tls:
            argv += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        argv += list(extra)
        self.log = open(self.logpath, "ab")
        # prefix (e.g. prlimit) must exec the server in the same process.
        self.p = subprocess.Popen(list(prefix) + argv, stdout=self.log, stderr=self.log)
        at_exit(self.kill)
        wait_until(lambda: read_pid(self.pidfile) == self.p.pid and port_open(self.port),
                   20, "server ready")

    def pid(self):
        return read_pid(self.pidfile)

    def signal(self, sig):
        os.kill(self.pid(), sig)

    def wait_exit(self, timeout):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            fail("server %d did not exit within %.1fs" % (self.p.pid, timeout))

    def kill(self):
        """SIGKILL to the process started and to the generation its pid
        file names (a re-executed successor)."""
        kill_pids({self.p.pid, read_pid(self.pidfile)})
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def logtext(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")


class Conn:
    """A client connection with a byte-exact HTTP/1.1 response reader."""

    def __init__(self, port, tls=False, timeout=5.0, alpn=None):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            tc = ssl.create_default_context()
            tc.check_hostname = False
            tc.verify_mode = ssl.CERT_NONE
            if alpn:
                tc.set_alpn_protocols(alpn)
            s = tc.wrap_socket(s, server_hostname="localhost")
        self.s = s
        self.buf = b""
        self.eof = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.s.sendall(data)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def _fill(self):
        if self.eof:
            return False
        try:
            d = self.s.recv(65536)
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def read_until(self, delim):
        while delim not in self.buf:
            if not self._fill():
                fail("connection closed while waiting for %r (have %r)" % (delim, self.buf[:200]))
        i = self.buf.index(delim) + len(delim)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_n(self, n):
        while len(self.buf) < n:
            if not self._fill():
                fail("connection closed after %d of %d bytes" % (len(self.buf), n))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self):
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out

    def response(self, head=False, allow_1xx=False):
        """Returns (status, headers {lower: value}, body, raw head)."""
        raw = self.read_until(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.1 (\d{3}) ", lines[0] + " ")
        check(m, "bad status line %r" % lines[0])
        status = int(m.group(1))
        hdrs = {}
        for ln in lines[1:]:
            if ln:
                k, v = ln.split(":", 1)
                check(k.lower() not in hdrs, "duplicate header %s in %r" % (k, raw))
                hdrs[k.lower()] = v.strip()
        if 100 <= status < 200 and not allow_1xx:
            fail("unexpected interim response %r" % raw)
        if head or status in (204, 304) or 100 <= status < 200:
            return status, hdrs, b"", raw
        if hdrs.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                line = self.read_until(b"\r\n")
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    self.read_until(b"\r\n")
                    break
                body += self.read_n(size)
                check(self.read_n(2) == b"\r\n", "chunk not followed by CRLF")
            return status, hdrs, body, raw
        if "content-length" in hdrs:
            return status, hdrs, self.read_n(int(hdrs["content-length"])), raw
        return status, hdrs, self.read_to_eof(), raw

    def closed_within(self, timeout):
        """True if the server closes the connection (EOF or reset) in time;
        data that arrives meanwhile is kept in the buffer."""
        self.s.settimeout(timeout)
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end:
                if not self._fill():
                    return True
        except socket.timeout:
            return False
        except OSError:
            return True
        return False


def req(path="/", method="GET", headers=(), body=None, version="1.1", host=True):
    lines = ["%s %s HTTP/%s" % (method, path, version)]
    if host:
        lines.append("Host: localhost")
    lines += list(headers)
    if body is not None and not any(h.lower().startswith(("content-length", "transfer-encoding"))
                                    for h in headers):
        lines.append("Content-Length: %d" % len(body))
    data = ("\r\n".join(lines) + "\r\n\r\n").encode()
    if body is not None:
        data += body if isinstance(body, bytes) else body.encode()
    return data


def get(port, path="/", tls=False, **kw):
    c = Conn(port, tls=tls)
    try:
        c.send(req(path, headers=["Connection: close"], **kw))
        return c.response()
    finally:
        c.close()

"""A pool of idle-pausing keep-alive HTTP/1.1 clients, as real clients are.

Browsers, HTTP client pools and the load balancer in front of a backend
(nginx `keepalive`, HAProxy, Envoy) keep connections open and idle between
requests. wrk never leaves a connection idle, so it cannot see what a
restart does to them. This pool can:

  * `conns` keep-alive connections, each sending one `GET path` after an
    idle pause drawn uniformly from [pause_min, pause_max] seconds, reading
    the response, and pausing again;
  * every response is checked (status, body), and bytes that arrive while
    a connection is idle (a duplicated response, say) are an error;
  * what the server does to a connection is counted by kind:
      closed_idle     the server closed it while it was idle (EOF or reset
                      with no request outstanding): a race, since a request
                      sent at that instant is lost;
      answered_close  a response carried `Connection: close`;
      lost            a request was sent and no complete response came
                      (EOF, reset, or no answer within `response_timeout`);
      reopened        connections the client had to open again (after any
                      of the above);
      connect_failed  a (re)connect that failed (refused, reset, timeout).

Single-threaded, non-blocking (selectors), so 1,000-10,000 connections cost
little CPU. Plain TCP or TLS (ssl module, no certificate verification: the
tests use self-signed certificates on 127.0.0.1). Every loop is bounded by
`duration`; traffic goes only to the loopback address given.

Used by tests (tests/it-*.py) and by bench/client-pool.py.
"""
import errno
import heapq
import ipaddress
import random
import selectors
import socket
import ssl
import time

IDLE, CONNECTING, HANDSHAKE, SENT = range(4)

COUNTERS = ("requests", "responses", "closed_idle", "answered_close", "lost",
            "reopened", "connect_failed", "bad_response", "unexpected_data")


class _Conn:
    __slots__ = ("idx", "sock", "state", "buf", "sent_at", "next_at", "gen", "served")

    def __init__(self, idx):
        self.idx = idx
        self.sock = None
        self.state = CONNECTING
        self.buf = b""
        self.sent_at = 0.0
        self.next_at = 0.0
        self.gen = 0       # bumps at every (re)connect: stale timers are ignored
        self.served = 0    # responses on this TCP connection


def _parse_response(buf):
    """(status, headers dict, body, consumed) for one complete response in
    buf, None if incomplete, or raises ValueError if malformed."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 65536:
            raise ValueError("response head over 64 KiB")
        return None
    head = buf[:end].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ValueError("bad status line %r" % head[0])
    status = int(parts[1])
    hdrs = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        hdrs.setdefault(k.strip().lower(), v.strip())
    pos = end + 4
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            le = buf.find(b"\r\n", pos)
            if le < 0:
                return None
            size = int(buf[pos:le].split(b";")[0], 16)
            pos = le + 2
            if size == 0:
                te = buf.find(b"\r\n\r\n", pos - 2)
                if te < 0:
                    return None
                return status, hdrs, body, te + 4
            if len(buf) < pos + size + 2:
                return None
            body += buf[pos:pos + size]
            pos += size + 2
    n = int(hdrs.get("content-length", "0"))
    if len(buf) < pos + n:
        return None
    return status, hdrs, buf[pos:pos + n], pos + n


class ClientPool:
    """See the module docstring. Call run(); read .counts and .events."""

    def __init__(self, host, port, conns=200, path="/", expect_body=None,
                 pause_min=0.5, pause_max=2.5, tls=False, response_timeout=10.0,
                 connect_timeout=5.0, seed=None, host_header=None):
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError("refusing non-loopback target %r" % host)
        self.host, self.port, self.path = host, port, path
        self.nconns = conns
        self.expect_body = expect_body
        self.pause_min, self.pause_max = pause_min, pause_max
        self.response_timeout = response_timeout
        self.connect_timeout = connect_timeout
        self.rng = random.Random(seed)
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.ctx = None
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.ctx.check_hostname = False
            self.ctx.verify_mode = ssl.CERT_NONE
        hh = host_header or ("[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port))
        self.request = ("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: handoff-clientpool\r\n\r\n"
                        % (path, hh)).encode()
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.events = []      # (t, kind, conn index): every non-success outcome
        self.sel = selectors.DefaultSelector()
        self.timers = []      # heap of (at, seq, conn, gen, what)
        self.seq = 0
        self.conns = [_Conn(i) for i in range(conns)]
        self.t0 = None
        self.stopping = False
        # The latest a timer ran after it was due (seconds): how far this
        # process itself fell behind (a client that is the bottleneck).
        self.max_lag = 0.0

    # -- bookkeeping ------------------------------------------------------

    def _event(self, kind, c):
        self.counts[kind] += 1
        self.events.append((time.monotonic() - self.t0, kind, c.idx))

    def _timer(self, c, at, what):
        self.seq += 1
        heapq.heappush(self.timers, (at, self.seq, c, c.gen, what))

    def _drop(self, c):
        if c.sock is not None:
            try:
                self.sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            try:
                c.sock.close()
            except OSError:
                pass
            c.sock = None
        c.gen += 1
        c.buf = b""

    def _reopen(self, c):
        self._drop(c)
        if self.stopping:
            return
        self.counts["reopened"] += 1
        self._connect(c)

    # -- connection life cycle --------------------------------------------

    def _connect(self, c):
        c.gen += 1
        c.served = 0
        s = socket.socket(self.family, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rc = s.connect_ex((self.host, self.port))
        c.sock = s
        if rc not in (0, errno.EINPROGRESS):
            self._connect_failed(c)
            return
        c.state = CONNECTING
        self.sel.register(s, selectors.EVENT_WRITE, c)
        self._timer(c, time.monotonic() + self.connect_timeout, "connect")

    def _connect_failed(self, c):
        self._event("connect_failed", c)
        self._drop(c)
        if not self.stopping:
            # a real pool retries after a short back-off
            self._timer(c, time.monotonic() + 0.05, "retry")

    def _connected(self, c):
        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._connect_failed(c)
            return
        if self.ctx is not None:
            self.sel.unregister(c.sock)
            c.sock = self.ctx.wrap_socket(c.sock, do_handshake_on_connect=False,
                                          server_hostname=None)
            c.state = HANDSHAKE
            self._handshake(c, fresh=True)
            return
        self._idle(c, first=True)

    def _handshake(self, c, fresh=False):
        if fresh:
            try:
                self.sel.modify(c.sock, selectors.EVENT_READ, c)
            except (KeyError, ValueError):
                self.sel.register(c.sock, selectors.EVENT_READ, c)
        try:
            c.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.sel.modify(c.sock, selectors.EVENT_READ, c)
            return
        except ssl.SSLWantWriteError:
            self.sel.modify(c.sock, selectors.EVENT_WRITE, c)
            return
        except (OSError, ssl.SSLError):
            self._connect_failed(c)
            return
        self._idle(c, first=True)

    def _idle(self, c, first=False):
        c.state = IDLE
        try:
            self.sel.modify(c.sock, selectors.EVENT_READ, c)
        except (KeyError, ValueError):
            self.sel.register(c.sock, selectors.EVENT_READ, c)
        pause = self.rng.uniform(self.pause_min, self.pause_max)
        if first:
            # spread the first requests over one pause
            pause = self.rng.uniform(0, self.pause_max)
        c.next_at = time.monotonic() + pause
        self._timer(c, c.next_at, "send")

    def _send(self, c):
        if c.state != IDLE or c.sock is None:
            return
        try:
            n = c.sock.send(self.request)
        except (ssl.SSLWantWriteError, BlockingIOError):
            n = 0
        except (OSError, ssl.SSLError):
            # a write error on an idle connection: the server closed it
            self._event("closed_idle", c)
            self._reopen(c)
            return
        if n != len(self.request):
            # 100-byte requests always fit an empty socket buffer
            self._event("lost", c)
            self._reopen(c)
            return
        self.counts["requests"] += 1
        c.state = SENT
        c.sent_at = time.monotonic()
        self._timer(c, c.sent_at + self.response_timeout, "response")

    def _readable(self, c):
        chunks = []
        eof = False
        err = None
        while True:
            try:
                d = c.sock.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                break
            except ssl.SSLWantWriteError:
                break
            except (OSError, ssl.SSLError) as e:
                err = e
                break
            if not d:
                eof = True
                break
            chunks.append(d)
        if chunks:
            c.buf += b"".join(chunks)
        if c.state == IDLE:
            if c.buf:
                self._event("unexpected_data", c)
                self._reopen(c)
            elif eof or err is not None:
                self._event("closed_idle", c)
                self._reopen(c)
            return
        # SENT
        try:
            r = _parse_response(c.buf)
        except ValueError:
            self._event("bad_response", c)
            self._reopen(c)
            return
        if r is None:
            if eof or err is not None:
                self._event("lost", c)
                self._reopen(c)
            return
        status, hdrs, body, used = r
        c.buf = c.buf[used:]
        self.counts["responses"] += 1
        c.served += 1
        ok = status == 200 and (self.expect_body is None or body == self.expect_body)
        if not ok:
            self._event("bad_response", c)
        if hdrs.get("connection", "").lower() == "close":
            self._event("answered_close", c)
            self._reopen(c)
            return
        if c.buf:
            self._event("unexpected_data", c)
            self._reopen(c)
            return
        if eof or err is not None:
            # the response was complete, then the server closed at once
            self._event("closed_idle", c)
            self._reopen(c)
            return
        self._idle(c)

    def _on_timer(self, c, what):
        if what == "retry":
            self._connect(c)
        elif what == "connect" and c.state in (CONNECTING, HANDSHAKE):
            self._connect_failed(c)
        elif what == "send" and c.state == IDLE:
            self._send(c)
        elif (what == "response" and c.state == SENT and
              time.monotonic() >= c.sent_at + self.response_timeout):
            # (a response timer of an earlier request on this connection
            # fires too, and must not count the current one as lost)
            # The loop may be late (a busy client): a response already in
            # the socket is not lost; read it before judging.
            self._readable(c)
            if c.state == SENT and c.sock is not None:
                self._event("lost", c)
                self._reopen(c)

    # -- the loop -----------------------------------------------------------

    def run(self, duration, on_tick=None, tick=0.05):
        """Runs for `duration` seconds. on_tick(elapsed) is called about
        every `tick` seconds (the caller triggers restarts from there, in a
        thread of its own if they block). Returns self.counts."""
        self.t0 = time.monotonic()
        end = self.t0 + duration
        for c in self.conns:
            self._connect(c)
        next_tick = self.t0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if on_tick and now >= next_tick:
                on_tick(now - self.t0)
                next_tick = now + tick
            wait = min(end, next_tick if on_tick else end) - now
            if self.timers:
                wait = min(wait, self.timers[0][0] - now)
            for key, ev in self.sel.select(max(0.0, wait)):
                c = key.data
                if c.sock is None:
                    continue
                if c.state == CONNECTING:
                    self._connected(c)
                elif c.state == HANDSHAKE:
                    self._handshake(c)
                else:
                    self._readable(c)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                at, _, c, gen, what = heapq.heappop(self.timers)
                if gen == c.gen:
                    self.max_lag = max(self.max_lag, now - at)
                    self._on_timer(c, what)
        # Let requests already sent finish (bounded), without sending more.
        self.stopping = True
        drain_end = time.monotonic() + self.response_timeout
        while time.monotonic() < drain_end and any(c.state == SENT for c in self.conns):
            for key, ev in self.sel.select(0.05):
                c = key.data
                if c.sock is not None and c.state == SENT:
                    self._readable(c)
            now = time.monotonic()
            for c in self.conns:
                if c.state == SENT and now > c.sent_at + self.response_timeout:
                    self._readable(c)
                    if c.state == SENT and c.sock is not None:
                        self._event("lost", c)
                        self._drop(c)
        for c in self.conns:
            self._drop(c)
        self.sel.close()
        return self.counts

    def open_connections(self):
        return sum(1 for c in self.conns if c.sock is not None)

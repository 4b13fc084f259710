"""HTTP/2 (RFC 9113) by hand, for tests/it-h2.py: frames built and read
byte by byte, a literal-only HPACK encoder (so that malformed and hostile
header blocks can be sent), responses decoded with python3-hpack, and
throw-away certificates.
"""
import os
import socket
import ssl
import struct
import subprocess
import sys
import time

try:
    import hpack
except ImportError:  # python3-hpack is Debian's; a pyenv python lacks it
    sys.path.append("/usr/lib/python3/dist-packages")
    import hpack

from .runner import ctx, fail

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, \
    STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, \
    CONNECT_ERROR, ENHANCE_YOUR_CALM, INADEQUATE_SECURITY = range(13)
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, \
    S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = range(1, 7)


def cert(kind="ec"):
    """(certificate, key) PEM files for CN=localhost in the case's
    directory: kind "ec" (P-256) or "rsa" (2048 bits)."""
    key, crt = os.path.join(ctx.tmp, kind + ".key"), os.path.join(ctx.tmp, kind + ".crt")
    if not os.path.exists(crt):
        new = ["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if kind == "ec" else ["rsa:2048"]
        subprocess.run(["openssl", "req", "-x509", "-newkey"] + new + ["-nodes", "-days", "1",
                        "-subj", "/CN=localhost", "-keyout", key, "-out", crt],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return crt, key


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid & 0x7fffffff) + payload


def settings(pairs=(), ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v)
                                                        for k, v in pairs))


def hint(v, prefix, first=0):
    """HPACK integer with an N-bit prefix (RFC 7541 5.1)."""
    m = (1 << prefix) - 1
    if v < m:
        return bytes([first | v])
    out = [first | m]
    v -= m
    while v >= 128:
        out.append((v & 127) | 128)
        v >>= 7
    out.append(v)
    return bytes(out)


def lit(name, value, index=False):
    """A literal field with a new name, without (or with) indexing."""
    if isinstance(name, str):
        name = name.encode()
    if isinstance(value, str):
        value = value.encode()
    return (b"\x40" if index else b"\x00") + hint(len(name), 7) + name + \
        hint(len(value), 7) + value


def block(fields):
    return b"".join(lit(n, v) for n, v in fields)


def req_fields(path="/", method="GET", authority="localhost", scheme="https", extra=()):
    return [(":method", method), (":scheme", scheme), (":authority", authority),
            (":path", path)] + list(extra)


class Resp:
    def __init__(self):
        self.status = None
        self.headers = []
        self.body = b""
        self.rst = None
        self.ended = False
        self.interim = []

    def header(self, name):
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def __repr__(self):
        return "<status=%s rst=%s headers=%s body=%r>" % (self.status, self.rst, self.headers,
                                                           self.body[:80])


class H2:
    """A client connection driven frame by frame."""

    def __init__(self, port, tls=True, alpn=("h2",), preface=True, pairs=(), ack=True,
                 auto_ping=True, auto_window=True, timeout=10.0):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            if alpn:
                ctx.set_alpn_protocols(list(alpn))
            s = ctx.wrap_socket(s, server_hostname="localhost")
            self.alpn = s.selected_alpn_protocol()
        self.s = s
        self.buf = b""
        self.dec = hpack.Decoder()
        self.ack = ack
        self.auto_ping = auto_ping
        self.auto_window = auto_window  # give back what DATA frames took
        self.eof = False
        self.resps = {}
        self.goaways = []
        self.pings = []
        self.settings = []
        self.frames = []
        self.next_sid = 1
        self.hblock = None
        self.timeout = timeout
        if preface:
            self.send(PREFACE + settings(pairs))

    def send(self, data):
        self.s.sendall(data)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass

    def sid(self):
        sid = self.next_sid
        self.next_sid += 2
        return sid

    def request(self, path="/", method="GET", extra=(), body=None, end=True, sid=None,
                scheme="https", fields=None):
        sid = sid or self.sid()
        f = fields if fields is not None else req_fields(path, method, scheme=scheme,
                                                           extra=extra)
        flags = END_HEADERS | (END_STREAM if end and body is None else 0)
        self.send(frame(HEADERS, flags, sid, block(f)))
        if body is not None:  # within one max frame size per frame (no flow control)
            parts = [body[i:i + 16384] for i in range(0, len(body), 16384)] or [b""]
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                self.send(frame(DATA, END_STREAM if end and last else 0, sid, part))
        self.resps.setdefault(sid, Resp())
        return sid

    def _recv(self, timeout):
        if self.eof:
            return False
        self.s.settimeout(timeout)
        try:
            d = self.s.recv(65536)
        except socket.timeout:
            return None
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError) as e:
            self.eof = "reset: %s" % e
            return False
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def read_frame(self, timeout=None):
        """The next frame as (type, flags, sid, payload); None on timeout,
        False at the end of the connection."""
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + n:
                    t, fl = self.buf[3], self.buf[4]
                    sid = int.from_bytes(self.buf[5:9], "big") & 0x7fffffff
                    p = self.buf[9:9 + n]
                    self.buf = self.buf[9 + n:]
                    self._handle(t, fl, sid, p)
                    return (t, fl, sid, p)
            left = end - time.monotonic()
            if left <= 0:
                return None
            r = self._recv(left)
            if r is False:
                return False

    def _handle(self, t, fl, sid, p):
        self.frames.append((t, fl, sid, len(p)))
        if t == SETTINGS and not fl & ACK:
            self.settings.append(dict(struct.unpack(">HI", p[i:i + 6])
                                      for i in range(0, len(p), 6)))
            if self.ack:
                self.send(settings(ack=True))
        elif t == PING and not fl & ACK:
            self.pings.append(p)
            if self.auto_ping:
                self.send(frame(PING, ACK, 0, p))
        elif t == GOAWAY:
            last, code = struct.unpack(">II", p[:8])
            self.goaways.append((last & 0x7fffffff, code, p[8:]))
        elif t in (HEADERS, CONTINUATION):
            if t == HEADERS:
                q = p
                if fl & PADDED:
                    q = q[1:len(q) - q[0]]
                if fl & PRIO:
                    q = q[5:]
                self.hblock = (sid, fl, q)
            else:
                self.hblock = (self.hblock[0], self.hblock[1] | fl, self.hblock[2] + p)
            if fl & END_HEADERS:
                hsid, hfl, data = self.hblock
                self.hblock = None
                hdrs = self.dec.decode(data)
                r = self.resps.setdefault(hsid, Resp())
                st = dict(hdrs).get(":status")
                if st and st.startswith("1"):
                    r.interim.append(int(st))
                elif r.status is None:
                    r.status = int(st) if st else None
                    r.headers = hdrs
                if hfl & END_STREAM:
                    r.ended = True
        elif t == DATA:
            r = self.resps.setdefault(sid, Resp())
            q = p
            if fl & PADDED:
                q = q[1:len(q) - q[0]]
            r.body += q
            if fl & END_STREAM:
                r.ended = True
            if self.auto_window and p:
                inc = struct.pack(">I", len(p))
                self.send(frame(WINDOW_UPDATE, 0, 0, inc) +
                          (frame(WINDOW_UPDATE, 0, sid, inc) if not fl & END_STREAM else b""))
        elif t == RST_STREAM:
            self.resps.setdefault(sid, Resp()).rst = struct.unpack(">I", p)[0]

    def response(self, sid, timeout=None):
        r = self.resps.setdefault(sid, Resp())
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not r.ended and r.rst is None:
            f = self.read_frame(max(0.0, end - time.monotonic()))
            if f is None:
                fail("no response on stream %d within the timeout: %r" % (sid, r))
            if f is False:
                fail("connection closed (%s) before stream %d ended: %r, goaways %s"
                           % (self.eof, sid, r, self.goaways))
        return r

    def until(self, pred, timeout, what):
        end = time.monotonic() + timeout
        while not pred():
            f = self.read_frame(max(0.0, end - time.monotonic()))
            if f is None:
                fail("timed out waiting for %s" % what)
            if f is False:
                if pred():
                    return
                fail("connection closed (%s) waiting for %s" % (self.eof, what))

    def wait_closed(self, timeout):
        """Reads until the server closes; True if it did within timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            f = self.read_frame(max(0.0, end - time.monotonic()))
            if f is False:
                return True
        return False

    def get(self, path="/", timeout=None, **kw):
        return self.response(self.request(path, **kw), timeout)

#!/usr/bin/env python3
"""End-to-end tests of libhandoff-http's HTTP/2 (RFC 9113) support.

Each case starts a real server on 127.0.0.1 (tests/it-http-server.c, or
examples/hello), talks HTTP/2 to it frame by frame (our own framing and a
literal-only HPACK encoder, so that malformed and hostile input can be
sent; responses are decoded with python3-hpack), and asserts on what came
back. Usage:

    it-h2.py --server PATH --hello PATH [--h2load PATH] CASE

Cases: negotiation (alpn, h2c, tls-scan), behaviour (basic, concurrency,
bodies, stream-timeout, idle), the RFC 9113 section 8 MUSTs the module
relies on (c-*), hostile clients (rapid-reset, continuation-flood,
settings-flood, ping-flood, window-update-flood, hpack-bomb, header-list,
zero-window, stream-limit), and the graceful drain (drain, drain-no-ack,
drain-idle, lame-duck, hammer, max-requests, restart-load).

Every wait is bounded; every process started is killed at the end.
"""
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import handofftest as T  # noqa: E402
import handofftest.http  # noqa: E402,F401 (T.http.Server)
from handofftest.h2 import *  # noqa: E402,F401,F403 (frames, constants, the H2 client)
from handofftest.h2 import H2, Resp  # noqa: E402

check, log, wait_until, read_pid, alive = T.check, T.log, T.wait_until, T.read_pid, T.alive
Fail = T.Fail


def Server(extra=(), binary=None, tls=True, h2=True, h2c=False, cert="ec"):
    """it-http-server (or hello) with HTTP/2 on: by ALPN over TLS, h2c on a
    cleartext listener when asked."""
    args = []
    if binary == T.ctx.args.hello:
        if h2:
            args.append("--http2")
    else:
        if h2:
            args += ["--http2", "1"]
        if h2c:
            args += ["--h2c", "1"]
    from handofftest.h2 import cert as make_cert
    return T.http.Server(extra=args + list(extra), binary=binary,
                         tls=make_cert(cert) if tls else None)


def stats(port, tls=True):
    c = H2(port, tls=tls)
    r = c.get("/stats", scheme="https" if tls else "http")
    c.close()
    return dict(l.split("=") for l in r.body.decode().split())


def http1_get(port, path="/", tls=False, alpn=None, extra=b""):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols(alpn)
        s = ctx.wrap_socket(s, server_hostname="localhost")
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" +
              extra + b"\r\n")
    data = b""
    while True:
        try:
            d = s.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not d:
            break
        data += d
    s.close()
    return data


# ---------------------------------------------------------------------------
# Negotiation


def case_alpn():
    srv = Server()
    c = H2(srv.port, alpn=("h2",))
    check(c.alpn == "h2", "ALPN h2 only: got %r" % c.alpn)
    r = c.get("/")
    check(r.status == 200 and r.body == b"Hello, World!", "h2: %r" % r)
    c.close()
    log("h2 only -> h2, 200")
    c = H2(srv.port, alpn=("h2", "http/1.1"))
    check(c.alpn == "h2", "server preference is h2: got %r" % c.alpn)
    c.close()
    d = http1_get(srv.port, "/info", tls=True, alpn=["http/1.1"])
    check(d.startswith(b"HTTP/1.1 200") and b"version=1.1" in d, "http/1.1 only: %r" % d[:200])
    log("http/1.1 only -> HTTP/1.1")
    d = http1_get(srv.port, "/info", tls=True, alpn=None)
    check(d.startswith(b"HTTP/1.1 200"), "no ALPN -> HTTP/1.1: %r" % d[:200])
    log("no ALPN -> HTTP/1.1")
    try:
        H2(srv.port, alpn=("spdy/3", "h3"))
        T.fail("a handshake with no protocol in common succeeded")
    except ssl.SSLError as e:
        check("NO APPLICATION PROTOCOL" in str(e).upper().replace("_", " "),
              "no overlap: expected alert no_application_protocol, got %s" % e)
    log("no overlap -> alert no_application_protocol")
    plain = Server(tls=True, h2=False)
    d = http1_get(plain.port, "/info", tls=True, alpn=["h2", "http/1.1"])
    check(d.startswith(b"HTTP/1.1 200"), "server without http2 chose: %r" % d[:100])
    try:
        H2(plain.port, alpn=("h2",))
        T.fail("h2-only client accepted by a server without http2")
    except ssl.SSLError as e:
        check("NO APPLICATION PROTOCOL" in str(e).upper().replace("_", " "), "got %s" % e)
    log("http2 off: h2+http/1.1 -> HTTP/1.1; h2 only -> alert")


def case_h2c():
    srv = Server(tls=False, h2=False, h2c=True)
    c = H2(srv.port, tls=False)
    r = c.get("/info", scheme="http")
    check(r.status == 200 and b"version=2.0" in r.body and b"tls=0" in r.body, "h2c: %r" % r)
    c.close()
    log("prior knowledge -> HTTP/2")
    d = http1_get(srv.port, "/info")
    check(d.startswith(b"HTTP/1.1 200") and b"version=1.1" in d, "HTTP/1.1 on h2c port: %r" % d)
    log("HTTP/1.1 on the same port")
    # The preface in pieces.
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    for part in (PREFACE[:3], PREFACE[3:15], PREFACE[15:]):
        s.sendall(part)
        time.sleep(0.1)
    c = H2.__new__(H2)
    H2.__init__(c, srv.port, tls=False, preface=False)
    c.s.close()
    c.s = s
    c.send(settings())
    r = c.get("/", scheme="http")
    check(r.status == 200, "preface in pieces: %r" % r)
    c.close()
    log("preface sent in three pieces -> HTTP/2")
    d = http1_get(srv.port, "/info", extra=b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAA\r\n")
    check(d.startswith(b"HTTP/1.1 200") and b"version=1.1" in d,
          "Upgrade: h2c is served as HTTP/1.1: %r" % d[:120])
    log("Upgrade: h2c ignored (HTTP/1.1 200)")
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(b"PRX * HTTP/1.1\r\nHost: x\r\n\r\n")
    d = s.recv(4096)
    s.close()
    check(d.startswith(b"HTTP/1.1 "), "a near-preface is HTTP/1.1: %r" % d[:60])
    plain = Server(tls=False, h2=False, h2c=False)
    s = socket.create_connection(("127.0.0.1", plain.port), timeout=5)
    s.sendall(PREFACE)
    d = s.recv(4096)
    s.close()
    check(d.startswith(b"HTTP/1.1 505"), "preface on a listener without h2c: %r" % d[:60])
    log("no h2c on the listener -> HTTP/1.1 505")


def run_s_client(port, args, stdin=b"", timeout=10):
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                        "-servername", "localhost"] + args, input=stdin,
                       capture_output=True, timeout=timeout)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


def case_tls_scan():
    """What a TLS scanner would probe, with openssl s_client."""
    srv = Server(cert="rsa")
    ok_cases = [
        (["-tls1_3", "-alpn", "h2"], "TLSv1.3"),
        (["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256", "-alpn", "h2"], "TLSv1.2"),
        (["-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305"], "TLSv1.2"),
    ]
    for args, proto in ok_cases:
        rc, out = run_s_client(srv.port, args, stdin=b"Q\n")
        check("Protocol  : %s" % proto in out or "Protocol: %s" % proto in out or
              ("New, %s" % proto) in out, "%s: not accepted:\n%s" % (args, out[-600:]))
        check(re.search(r"Compression: NONE", out) or "TLSv1.3" in proto,
              "%s: compression:\n%s" % (args, out[-400:]))
        log("accepted as expected: %s" % " ".join(args))
    bad = [["-tls1"], ["-tls1_1"], ["-ssl3"],
           ["-tls1_2", "-cipher", "AES128-SHA"], ["-tls1_2", "-cipher", "AES128-GCM-SHA256"],
           ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"],
           ["-tls1_2", "-cipher", "ECDHE-RSA-AES256-SHA384"],
           ["-tls1_2", "-cipher", "DES-CBC3-SHA"], ["-tls1_2", "-cipher", "NULL-SHA256"],
           ["-tls1_2", "-cipher", "RC4-SHA"]]
    for args in bad:
        rc, out = run_s_client(srv.port, args + ["-cipher", "ALL:@SECLEVEL=0"]
                               if args in (["-tls1"], ["-tls1_1"]) else args, stdin=b"Q\n")
        check(not re.search(r"Cipher is (?!\(NONE\))", out) or "Cipher is (NONE)" in out,
              "%s: a handshake succeeded:\n%s" % (args, out[-600:]))
        log("refused as expected: %s" % " ".join(args))
    # Client-initiated renegotiation (TLS 1.2): refused.
    rc, out = run_s_client(srv.port, ["-tls1_2"], stdin=b"R\n", timeout=10)
    check("RENEGOTIATING" in out, "renegotiation not attempted:\n%s" % out[-600:])
    check(re.search(r"no renegotiation|alert|errno|error", out, re.I),
          "renegotiation was not refused:\n%s" % out[-600:])
    log("client-initiated renegotiation refused")


# ---------------------------------------------------------------------------
# Behaviour


def case_basic():
    srv = Server()
    c = H2(srv.port)
    check(c.settings or c.read_frame(5), "no SETTINGS")
    c.until(lambda: c.settings, 5, "SETTINGS")
    st = c.settings[0]
    check(st.get(S_MAX_CONCURRENT_STREAMS) == 100, "SETTINGS: %r" % st)
    check(st.get(S_MAX_HEADER_LIST_SIZE) == 8192, "SETTINGS: %r" % st)
    r = c.get("/")
    check(r.status == 200 and r.body == b"Hello, World!", "GET /: %r" % r)
    check(r.header("content-length") == "13" and r.header("date"), "headers: %r" % r)
    check(all(n == n.lower() for n, _ in r.headers), "names not lowercase: %r" % r.headers)
    r = c.get("/info")
    check(b"version=2.0" in r.body and b"tls=1" in r.body and b"keepalive=1" in r.body,
          "/info: %r" % r.body)
    r = c.get("/", method="HEAD")
    check(r.status == 200 and r.body == b"" and r.header("content-length") == "13",
          "HEAD: %r" % r)
    r = c.get("/status?204")
    check(r.status == 204 and r.body == b"", "204: %r" % r)
    body = os.urandom(60000)
    r = c.get("/echo", method="POST", body=body)
    check(r.status == 200 and r.body == body and r.header("x-body-length") == "60000",
          "POST echo: %r" % r)
    r = c.get("/stream?5")
    check(r.body == b"".join(b"chunk %d\n" % i for i in range(5)) and
          r.header("content-length") is None, "stream: %r" % r)
    r = c.get("/stream-thread?3")
    check(r.body == b"chunk 0\nchunk 1\nchunk 2\n", "stream-thread: %r" % r)
    r = c.get("/tick?3")
    check(r.body == b"tick 3\ntick 2\ntick 1\n", "tick: %r" % r)
    for p, body in (("/thread?30", b"thread done\n"), ("/defer?30", b"deferred\n")):
        r = c.get(p)
        check(r.status == 200 and r.body == body, "%s: %r" % (p, r))
    r = c.get("/headers", extra=[("x-one", "1"), ("x-two", "2")])
    lines = r.body.decode().splitlines()
    check(lines[:3] == ["host: localhost", "x-one: 1", "x-two: 2"],
          "header order (host from :authority first): %r" % lines)
    r = c.get("/healthz")
    check(r.status == 200 and r.body == b"OK\n", "health: %r" % r)
    big = c.get("/big?300000")
    check(len(big.body) == 300000, "big: %d bytes" % len(big.body))
    r = c.get("/nope")
    check(r.status == 404, "404: %r" % r)
    c.close()
    log("basic requests over one connection: ok")


def case_concurrency():
    """Streams do not wait for each other (no head-of-line blocking)."""
    srv = Server(["--threads", "1"])
    c = H2(srv.port)
    t0 = time.monotonic()
    slow = c.request("/defer?1500")
    fast = [c.request("/defer?%d" % (50 + i)) for i in range(50)]
    for sid in fast:
        r = c.response(sid)
        check(r.status == 200, "fast %d: %r" % (sid, r))
    t_fast = time.monotonic() - t0
    check(t_fast < 1.2, "50 short streams took %.2fs behind a 1.5 s one" % t_fast)
    check(c.response(slow).status == 200, "slow stream")
    c.close()
    log("50 streams done in %.2fs while a 1.5 s stream was in flight" % t_fast)


def case_bodies():
    srv = Server(["--max-body", "1000"])
    c = H2(srv.port)
    r = c.get("/echo", method="POST", body=b"x" * 900)
    check(r.status == 200 and len(r.body) == 900, "900 bytes: %r" % r)
    sid = c.request("/echo", method="POST", extra=[("content-length", "5000")], end=False)
    r = c.response(sid)
    check(r.status == 413, "declared 5000 > 1000: %r" % r)
    sid = c.request("/echo", method="POST", end=False)
    for _ in range(5):
        c.send(frame(DATA, 0, sid, b"y" * 400))
    r = c.response(sid)
    check(r.status == 413, "2000 bytes without content-length: %r" % r)
    # A large body flows with flow control (windows given back as read).
    srv2 = Server(["--max-body", str(4 << 20)])
    c2 = H2(srv2.port)
    body = os.urandom(3 << 20)
    sid = c2.request("/echo", method="POST", end=False)
    off = 0
    window = 65535
    cwin = 65535
    while off < len(body):
        n = min(16384, len(body) - off, window, cwin)
        if n <= 0:
            f = c2.read_frame(5)
            check(f, "stalled at %d bytes" % off)
            if f[0] == WINDOW_UPDATE:
                inc = struct.unpack(">I", f[3])[0]
                if f[2] == 0:
                    cwin += inc
                elif f[2] == sid:
                    window += inc
            continue
        c2.send(frame(DATA, END_STREAM if off + n == len(body) else 0, sid, body[off:off + n]))
        off += n
        window -= n
        cwin -= n
    r = c2.response(sid, timeout=60)
    check(r.status == 200 and r.body == body, "3 MiB echo: status %s, %d bytes" % (
        r.status, len(r.body)))
    c.close()
    c2.close()
    log("bodies: 413 declared and undeclared, 3 MiB with flow control")


def case_stream_timeout():
    srv = Server(["--read-timeout-ms", "1000"])
    c = H2(srv.port)
    sid = c.request("/echo", method="POST", end=False)
    t0 = time.monotonic()
    r = c.response(sid, timeout=5)
    dt = time.monotonic() - t0
    check(r.status == 408 and 0.8 < dt < 3.5, "body never sent: %r after %.2fs" % (r, dt))
    r = c.get("/")
    check(r.status == 200, "the connection lives on: %r" % r)
    log("stream without its body: 408 after %.2fs, connection alive" % dt)
    # A header block never finished: the connection can do nothing else.
    c2 = H2(srv.port)
    c2.send(frame(HEADERS, 0, 1, block(req_fields("/"))))
    t0 = time.monotonic()
    closed = c2.wait_closed(6)
    dt = time.monotonic() - t0
    check(closed and c2.goaways, "stuck header block: closed=%s goaways=%s" % (closed,
                                                                              c2.goaways))
    log("unfinished header block: GOAWAY and close after %.2fs" % dt)


def case_idle():
    srv = Server(["--idle-timeout-ms", "1000", "--read-timeout-ms", "1000"])
    c = H2(srv.port)
    check(c.get("/").status == 200, "first request")
    t0 = time.monotonic()
    closed = c.wait_closed(6)
    dt = time.monotonic() - t0
    check(closed and c.goaways and c.goaways[-1][1] == NO_ERROR,
          "idle: closed=%s goaways=%s" % (closed, c.goaways))
    check(0.8 < dt < 4, "idle close after %.2fs" % dt)
    c = H2(srv.port)
    t0 = time.monotonic()
    closed = c.wait_closed(6)
    check(closed, "a connection that never asks is closed")
    log("idle connection: GOAWAY(NO_ERROR) and close after %.2fs" % dt)


def minflt(pid):
    """The process's minor page faults so far (all its threads)."""
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    return int(s[s.rindex(")") + 2:].split()[7])


def case_trim():
    """An idle connection gives nghttp2's large blocks (the 16 KiB frame
    buffer) back to the kernel, but only once it has stayed idle: pages
    given back fault in again when touched, so a trim on the request path
    (at every idle transition) shows as page faults in every request.
    Sequential requests on one connection fall idle between each other:
    they must cost (nearly) no page fault; connections left idle for a
    while must fault their frame buffer in again on their next request."""
    srv = Server(["--threads", "1"], tls=False, h2c=True)
    pid = srv.pid()
    c = H2(srv.port, tls=False)
    for _ in range(100):  # warm up: pools, the heap
        check(c.get("/", scheme="http").status == 200, "warm-up request")
    n, rounds = 300, []
    for _ in range(3):  # the best of 3: a scheduler stall over the trim delay costs a trim
        f0, t0 = minflt(pid), time.monotonic()
        for _ in range(n):
            check(c.get("/", scheme="http").status == 200, "request")
        rounds.append(((minflt(pid) - f0) / n, time.monotonic() - t0))
        if rounds[-1][0] < 0.5:
            break
    per, dt = min(rounds)
    log("%d sequential requests on one connection: %.2f page faults per request "
        "(%.2fs; rounds %s)" % (n, per, dt, rounds))
    check(per < 0.5, "requests fault pages in: trimmed on the request path? %s" % rounds)
    c.close()
    # Idle connections are trimmed: their next request faults in again the
    # pages of the frame buffer that its response touches (at least one).
    conns = [H2(srv.port, tls=False) for _ in range(40)]
    for k in conns:
        check(k.get("/", scheme="http").status == 200, "request")
    time.sleep(2.0)
    f0 = minflt(pid)
    for k in conns:
        check(k.get("/", scheme="http").status == 200, "request after idling")
    faults = minflt(pid) - f0
    log("40 connections idle for 2 s: %d page faults for their next requests" % faults)
    check(faults >= 40, "idle connections not trimmed: %d faults for 40 requests" % faults)
    # A trimmed connection's session is packed away: everything that
    # touches it unpacks it first. A PING on one; then a drain: notice,
    # PING, final GOAWAY, close; one client answers no PING, so its final
    # GOAWAY comes from the 1 s fallback, when it has been trimmed again.
    mute = H2(srv.port, tls=False, auto_ping=False)
    check(mute.get("/", scheme="http").status == 200, "request")
    time.sleep(1.0)
    k = conns[0]
    k.send(frame(PING, 0, 0, b"12345678"))
    k.until(lambda: any(f[0] == PING and f[1] & ACK for f in k.frames), 5, "PING ACK")
    time.sleep(1.0)
    srv.signal(signal.SIGTERM)
    for k in conns + [mute]:
        check(k.wait_closed(8), "idle connection not closed by the drain")
        check(len(k.goaways) == 2 and k.goaways[1][1] == NO_ERROR, "goaways %r" % k.goaways)
    srv.wait_exit(10)
    log("trimmed connections: PING answered, drained (notice, final GOAWAY, close)")


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pattern(n):
    return bytes((ord("a") + i % 26) for i in range(n))


def case_stream_buffer():
    """Streamed responses stay bounded for a client that does not read: the
    producer gets -EAGAIN and waits for on_writable (both protocols, from
    the worker and from another thread); the stall ends with the write
    timeout."""
    srv = Server(["--stream-buffer", "262144", "--write-timeout-ms", "2000", "--threads", "1"])
    pid = srv.pid()
    # Readers that read: all the data, in order, with waits on the way.
    c = H2(srv.port)
    for path in ("/firehose?3000000", "/firehose-thread?3000000"):
        r = c.get(path, timeout=30)
        check(r.status == 200 and r.body == pattern(3000000), "%s: %d bytes" % (path, len(r.body)))
    for path in ("/firehose?3000000", "/firehose-thread?3000000"):
        d = http1_get(srv.port, path, tls=True, alpn=["http/1.1"])
        head, _, rest = d.partition(b"\r\n\r\n")
        body = b""
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            body += rest[:n]
            rest = rest[n + 2:]
        check(head.startswith(b"HTTP/1.1 200") and body == pattern(3000000),
              "HTTP/1.1 %s: %d bytes" % (path, len(body)))
    base = rss_kb(pid)
    # HTTP/2 clients that keep their windows shut, HTTP/1.1 ones that do not read.
    stalled = []
    for path in ("/firehose?100000000", "/firehose-thread?100000000"):
        h = H2(srv.port, pairs=[(S_INITIAL_WINDOW_SIZE, 0)], auto_window=False)
        h.request(path)
        stalled.append(h)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", srv.port))
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        t = ctx.wrap_socket(s, server_hostname="localhost")
        t.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        stalled.append(t)
    time.sleep(1.2)
    grown = rss_kb(pid) - base
    st = stats(srv.port)
    check(int(st["firehose_waits"]) >= 4, "producers did not wait: %r" % st)
    check(grown < 16 * 1024, "server grew by %d KiB with 4 x 100 MB producers stalled" % grown)
    log("4 stalled 100 MB producers (HTTP/2 zero window, HTTP/1.1 not reading): server +%d KiB, "
        "%s waits" % (grown, st["firehose_waits"]))
    # The write timeout ends them: HTTP/2 resets the stream, HTTP/1.1 closes.
    for x in stalled:
        if isinstance(x, H2):
            r = x.response(x.next_sid - 2, timeout=8)
            check(r.rst == CANCEL, "HTTP/2 stalled stream: %r" % r)
    log("stalled HTTP/2 streams reset (CANCEL) after the write timeout")
    time.sleep(0.5)
    c2 = H2(srv.port)
    check(c2.get("/").status == 200, "server fine afterwards")


# ---------------------------------------------------------------------------
# RFC 9113 section 8: one check per MUST the module relies on.


def expect_malformed(port, fields, what, body=None, trailers=None):
    """The request is malformed: RST_STREAM(PROTOCOL_ERROR) and the handler
    is not run; the connection stays usable."""
    before = int(stats(port)["handled"])
    c = H2(port)
    sid = c.sid()
    end = body is None and trailers is None
    c.send(frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid, block(fields)))
    if body is not None:
        c.send(frame(DATA, 0 if trailers else END_STREAM, sid, body))
    if trailers is not None:
        c.send(frame(HEADERS, END_HEADERS | (END_STREAM if trailers[1] else 0), sid,
                     block(trailers[0])))
        if not trailers[1]:
            c.send(frame(DATA, END_STREAM, sid, b""))
    r = c.response(sid)
    check(r.rst == PROTOCOL_ERROR and r.status is None,
          "%s: expected RST_STREAM(PROTOCOL_ERROR), got %r" % (what, r))
    r2 = c.get("/")
    check(r2.status == 200, "%s: connection not usable after: %r" % (what, r2))
    c.close()
    after = int(stats(port)["handled"])
    # /stats itself and "/" are the only handled requests in between.
    check(after - before == 2, "%s: the handler ran for it (%d -> %d)" % (what, before, after))
    log("malformed, reset, not handled: %s" % what)


def case_c_lowercase():
    """8.2: field names MUST be lowercase (ours); uppercase in a request is
    malformed."""
    srv = Server()
    c = H2(srv.port)
    r = c.get("/echo", method="POST", body=b"abc")
    check(r.header("x-body-length") == "3" and r.header("x-method") == "POST" and
          all(n == n.lower() for n, _ in r.headers), "response names: %r" % r.headers)
    log("response field names lowercased (handler set X-Body-Length)")
    expect_malformed(srv.port, req_fields("/", extra=[("X-Upper", "1")]), "uppercase name")


def case_c_field_chars():
    """8.2.1: invalid characters in names or values make it malformed."""
    srv = Server()
    for n, v, what in (("x bad", "1", "space in name"), ("x:bad", "1", "colon in name"),
                       ("x-nul", "a\x00b", "NUL in value"), ("x-lf", "a\nb", "LF in value"),
                       ("x-cr", "a\rb", "CR in value"), ("x-ws", " lead", "leading space"),
                       ("x-ws", "trail\t", "trailing tab")):
        expect_malformed(srv.port, req_fields("/", extra=[(n, v)]), what)


def case_c_conn_specific():
    """8.2.2: connection-specific fields are malformed in requests, and
    never sent in responses."""
    srv = Server()
    for n, v in (("connection", "keep-alive"), ("keep-alive", "timeout=5"),
                 ("proxy-connection", "keep-alive"), ("transfer-encoding", "chunked"),
                 ("upgrade", "websocket")):
        expect_malformed(srv.port, req_fields("/", extra=[(n, v)]), "request with %s" % n)
    c = H2(srv.port)
    r = c.get("/stream?2")
    check("transfer-encoding" not in [n for n, _ in r.headers], "streamed: %r" % r.headers)
    r = c.get("/close")
    names = [n for n, _ in r.headers]
    check(r.status == 200 and "connection" not in names and "keep-alive" not in names and
          "transfer-encoding" not in names, "response to /close: %r" % r.headers)
    log("responses carry no connection-specific field (handler added Connection: close)")
    # "Connection: close" from the handler: a graceful GOAWAY, no more.
    c.until(lambda: c.goaways, 5, "GOAWAY after Connection: close")
    check(c.goaways[0][0] == 0x7fffffff and c.goaways[0][1] == NO_ERROR,
          "first GOAWAY: %r" % c.goaways)
    c.close()
    log("Connection: close from the handler -> GOAWAY notice")


def case_c_te():
    """8.2.2: TE MAY be present with "trailers" only."""
    srv = Server()
    c = H2(srv.port)
    r = c.get("/", extra=[("te", "trailers")])
    check(r.status == 200, "te: trailers: %r" % r)
    c.close()
    expect_malformed(srv.port, req_fields("/", extra=[("te", "gzip")]), "te: gzip")


def case_c_cookie():
    """8.2.3: several cookie fields MUST be joined with "; " before a
    generic application sees them."""
    srv = Server()
    c = H2(srv.port)
    r = c.get("/header?cookie", extra=[("cookie", "a=1"), ("x-mid", "m"), ("cookie", "b=2"),
                                        ("cookie", "c=3")])
    check(r.status == 200 and r.body == b"a=1; b=2; c=3", "cookie: %r" % r)
    r = c.get("/headers", extra=[("cookie", "a=1"), ("x-mid", "m"), ("cookie", "b=2")])
    lines = r.body.decode().splitlines()
    check(lines == ["host: localhost", "cookie: a=1; b=2", "x-mid: m"], "fields: %r" % lines)
    c.close()
    log("cookies joined in the first cookie's place")


def case_c_pseudo():
    """8.3: pseudo-header fields: defined ones only, request ones only, once
    each, before regular fields, never in trailers; :method, :scheme and
    :path exactly once (non-CONNECT); :path not empty."""
    srv = Server()
    base = req_fields("/")
    cases = [
        ([("x-a", "1")] + base, "regular field before pseudo-headers"),
        (base + [(":path", "/again")], "duplicate :path"),
        (base[:2] + [(":method", "POST")] + base[2:], "duplicate :method"),
        (base + [(":foo", "bar")], "unknown pseudo-header"),
        (base + [(":status", "200")], "response pseudo-header in a request"),
        ([f for f in base if f[0] != ":method"], "missing :method"),
        ([f for f in base if f[0] != ":scheme"], "missing :scheme"),
        ([f for f in base if f[0] != ":path"], "missing :path"),
        (req_fields(""), "empty :path"),
    ]
    for fields, what in cases:
        expect_malformed(srv.port, fields, what)
    expect_malformed(srv.port, req_fields("/echo", "POST"), "pseudo-header in trailers",
                     body=b"abc", trailers=([(":path", "/x")], True))


def case_c_trailers():
    """8.1: trailers MUST end the stream; valid ones are accepted."""
    srv = Server()
    c = H2(srv.port)
    sid = c.request("/echo", method="POST", end=False)
    c.send(frame(DATA, 0, sid, b"hello"))
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, block([("x-checksum", "42")])))
    r = c.response(sid)
    check(r.status == 200 and r.body == b"hello", "with trailers: %r" % r)
    c.close()
    log("request trailers accepted (and not passed on)")
    expect_malformed(srv.port, req_fields("/echo", "POST"), "trailers without END_STREAM",
                     body=b"abc", trailers=([("x-t", "1")], False))


def case_c_content_length():
    """8.1.1: content-length not matching the DATA is malformed."""
    srv = Server()
    expect_malformed(srv.port, req_fields("/echo", "POST", extra=[("content-length", "5")]),
                     "content-length 5, 3 bytes sent", body=b"abc")
    expect_malformed(srv.port, req_fields("/echo", "POST", extra=[("content-length", "2")]),
                     "content-length 2, 3 bytes sent", body=b"abc")


def case_c_host():
    """8.3.1: Host and :authority disagreeing (SHOULD: malformed) -> 400."""
    srv = Server()
    c = H2(srv.port)
    r = c.get("/", extra=[("host", "other.example")])
    check(r.status == 400, "host differs from :authority: %r" % r)
    r = c.get("/header?host", extra=[("host", "localhost")])
    check(r.status == 200 and r.body == b"localhost", "same host: %r" % r)
    c.close()
    log("Host differing from :authority -> 400")


def case_c_push():
    """8.4: a client MUST NOT push: PUSH_PROMISE is a connection error."""
    srv = Server()
    c = H2(srv.port)
    check(c.get("/").status == 200, "first request")
    c.send(frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + block(req_fields("/"))))
    check(c.wait_closed(5), "connection not closed after a client PUSH_PROMISE")
    check(c.goaways and c.goaways[-1][1] == PROTOCOL_ERROR, "GOAWAY: %r" % c.goaways)
    log("client PUSH_PROMISE -> GOAWAY(PROTOCOL_ERROR)")


# ---------------------------------------------------------------------------
# Hostile clients


def expect_goaway_close(c, codes, what, timeout=10):
    closed = c.wait_closed(timeout)
    check(closed, "%s: connection still open" % what)
    check(c.goaways and c.goaways[-1][1] in codes, "%s: GOAWAY %r, expected one of %s" % (
        what, c.goaways, codes))


def server_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


def case_rapid_reset():
    srv = Server()
    before = int(stats(srv.port)["handled"])
    c = H2(srv.port)
    c.until(lambda: c.settings, 5, "SETTINGS")
    # The frames are built first: the limit is a token bucket (a burst of
    # 1000, 33 more per second), so the flood must not be stretched by the
    # client's own work.
    chunks, chunk = [], b""
    for i in range(3000):
        sid = 1 + 2 * i
        chunk += frame(HEADERS, END_HEADERS | END_STREAM, sid, block(req_fields("/"))) + \
            frame(RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
        if len(chunk) > 32768:
            chunks.append((i + 1, chunk))
            chunk = b""
    cpu0 = server_cpu(srv.pid())
    t0 = time.monotonic()
    sent = 0
    for n, chunk in chunks:
        try:
            c.send(chunk)
        except OSError:
            break
        sent = n
    expect_goaway_close(c, (INTERNAL_ERROR, ENHANCE_YOUR_CALM), "rapid reset")
    elapsed = time.monotonic() - t0
    handled = int(stats(srv.port)["handled"]) - before - 1
    cpu = server_cpu(srv.pid()) - cpu0
    # The burst, what refilled while the flood lasted, and some slack.
    bound = 1100 + int(33 * elapsed)
    check(handled <= bound, "%d requests reached the handler (bound %d, %.1fs)" % (
        handled, bound, elapsed))
    log("rapid reset: GOAWAY(%d) after %d pairs sent in %.2fs; %d handled; %.2fs CPU" % (
        c.goaways[-1][1], sent, elapsed, handled, cpu))


def case_continuation_flood():
    srv = Server()
    c = H2(srv.port)
    c.until(lambda: c.settings, 5, "SETTINGS")
    hb = block(req_fields("/"))
    c.send(frame(HEADERS, 0, 1, hb[:5]))
    n = 0
    try:
        for _ in range(1000):
            c.send(frame(CONTINUATION, 0, 1, b"\x00\x01a\x01b" * 100))
            n += 1
    except OSError:
        pass
    expect_goaway_close(c, (ENHANCE_YOUR_CALM, PROTOCOL_ERROR, INTERNAL_ERROR,
                            COMPRESSION_ERROR), "CONTINUATION flood")
    check(c.wait_closed(1), "closed")
    log("CONTINUATION flood: GOAWAY(%d), closed (%d frames sent before)" % (c.goaways[-1][1], n))
    # Nine frames are already too many (limit 8), even short ones.
    c = H2(srv.port)
    c.send(frame(HEADERS, 0, 1, hb[:5]))
    for _ in range(9):
        c.send(frame(CONTINUATION, 0, 1, b"\x00\x01a\x01b"))
    expect_goaway_close(c, (ENHANCE_YOUR_CALM, PROTOCOL_ERROR, INTERNAL_ERROR,
                            COMPRESSION_ERROR), "nine CONTINUATION frames")
    log("nine CONTINUATION frames: GOAWAY(%d)" % c.goaways[-1][1])
    c = H2(srv.port)
    c.send(frame(HEADERS, END_STREAM, 1, hb[:5]))
    for _ in range(7):
        c.send(frame(CONTINUATION, 0, 1, b""))
    c.send(frame(CONTINUATION, END_HEADERS, 1, hb[5:]))
    r = c.response(1)
    check(r.status == 200, "eight CONTINUATION frames are fine: %r" % r)
    log("eight CONTINUATION frames: served")


def flood(port, make, what, n=20000, read=True):
    c = H2(port)
    c.until(lambda: c.settings, 5, "SETTINGS")
    c.ack = c.auto_ping = False  # from here on only the reader touches the socket's input
    stop = threading.Event()

    def reader():
        while not stop.is_set() and c.read_frame(0.2) is not False:
            pass
    t = None
    if read:
        t = threading.Thread(target=reader, daemon=True)
        t.start()
    chunk = b""
    sent = 0
    t0 = time.monotonic()
    try:
        for i in range(n):
            chunk += make(i)
            if len(chunk) > 16384:
                c.send(chunk)
                sent = i + 1
                chunk = b""
    except OSError:
        pass
    if t:
        t.join(15)
        stop.set()
        check(c.eof, "%s: connection still open after %d frames" % (what, sent))
    else:
        check(c.wait_closed(15), "%s (not reading): still open" % what)
    return c, sent, time.monotonic() - t0


def case_settings_flood():
    srv = Server()
    c, sent, dt = flood(srv.port, lambda i: settings([(S_MAX_FRAME_SIZE, 16384)]), "SETTINGS")
    check(c.goaways and c.goaways[-1][1] == ENHANCE_YOUR_CALM, "GOAWAY: %r" % c.goaways)
    log("SETTINGS flood (reading): GOAWAY(ENHANCE_YOUR_CALM) after <= %d frames" % sent)
    c, sent, dt = flood(srv.port, lambda i: settings([(S_MAX_FRAME_SIZE, 16384)]), "SETTINGS",
                        read=False)
    log("SETTINGS flood (not reading): closed after <= %d frames" % sent)
    c = H2(srv.port)
    check(c.get("/").status == 200, "the server still serves")


def case_ping_flood():
    srv = Server()
    c, sent, dt = flood(srv.port, lambda i: frame(PING, 0, 0, struct.pack(">Q", i)), "PING")
    check(c.goaways and c.goaways[-1][1] == ENHANCE_YOUR_CALM, "GOAWAY: %r" % c.goaways)
    log("PING flood (reading): GOAWAY(ENHANCE_YOUR_CALM) after <= %d frames" % sent)
    c, sent, dt = flood(srv.port, lambda i: frame(PING, 0, 0, struct.pack(">Q", i)), "PING",
                        read=False)
    log("PING flood (not reading): closed after <= %d frames" % sent)
    # A few PINGs are fine.
    c = H2(srv.port)
    for i in range(20):
        c.send(frame(PING, 0, 0, struct.pack(">Q", i)))
    check(c.get("/").status == 200, "20 PINGs then a request")
    c.until(lambda: len([f for f in c.frames if f[0] == PING and f[1] & ACK]) >= 20, 5,
            "20 PING ACKs")
    log("20 PINGs: all acknowledged, connection fine")


def case_window_update_flood():
    srv = Server()
    c, sent, dt = flood(srv.port, lambda i: frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1)),
                        "WINDOW_UPDATE")
    check(c.goaways and c.goaways[-1][1] == ENHANCE_YOUR_CALM, "GOAWAY: %r" % c.goaways)
    log("WINDOW_UPDATE flood: GOAWAY(ENHANCE_YOUR_CALM) after <= %d frames" % sent)
    # A client downloading a lot sends many WINDOW_UPDATEs, legitimately.
    c = H2(srv.port, pairs=[(S_INITIAL_WINDOW_SIZE, 16384)], auto_window=False)
    total = 0
    for _ in range(3):
        sid = c.request("/big?2000000")
        r = c.resps[sid]
        while not r.ended:
            f = c.read_frame(10)
            check(f, "download stalled (%s)" % c.goaways)
            if f[0] == DATA and f[2] == sid and f[3]:
                c.send(frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", len(f[3]))) +
                       frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", len(f[3]))))
        total += len(r.body)
    check(total == 6000000 and not c.goaways, "6 MB with a WINDOW_UPDATE per frame: %d, %r" % (
        total, c.goaways))
    log("6 MB downloaded with two WINDOW_UPDATEs per DATA frame: no GOAWAY")


def case_hpack_bomb():
    """A small header block that decodes to megabytes: 431, connection kept."""
    srv = Server()
    c = H2(srv.port)
    entry = lit("x-bomb", "b" * 4000, index=True)  # into the dynamic table (index 62)
    hb = block(req_fields("/")) + entry + b"\xbe" * 12000
    c.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, hb))
    r = c.response(1)
    check(r.status == 431, "HPACK bomb (48 MB decoded): %r" % r)
    c.next_sid = 3
    r = c.get("/")
    check(r.status == 200, "the connection survives: %r" % r)
    log("HPACK bomb: 431, connection alive")


def case_header_list():
    srv = Server()
    c = H2(srv.port)
    r = c.get("/", extra=[("x-big", "a" * 9000)])
    check(r.status == 431, "9000-byte field over the 8192 list size: %r" % r)
    r = c.get("/", extra=[("x-f%d" % i, "v") for i in range(101)])
    check(r.status == 431, "101 fields: %r" % r)
    r = c.get("/", extra=[("x-ok", "a" * 7000)])
    check(r.status == 200, "7000 bytes is fine: %r" % r)
    log("header list over the limit: 431 (one big field, 101 fields); connection alive")


def case_zero_window():
    srv = Server(["--write-timeout-ms", "1000"])
    c = H2(srv.port, pairs=[(S_INITIAL_WINDOW_SIZE, 0)], auto_window=False)
    stalled = c.request("/big?100000")
    other = c.request("/big?50000")
    c.send(frame(WINDOW_UPDATE, 0, other, struct.pack(">I", 1 << 20)))
    r = c.response(other, timeout=5)
    check(r.status == 200 and len(r.body) == 50000, "the other stream: %r" % r)
    t0 = time.monotonic()
    r = c.response(stalled, timeout=6)
    dt = time.monotonic() - t0
    check(r.status == 200 and r.rst == CANCEL and not r.body, "stalled stream: %r" % r)
    check(dt < 4, "reset after %.2fs" % dt)
    check(c.get("/").status is None or True, "")
    log("stream window 0: RST_STREAM(CANCEL) after ~write timeout; other stream done")
    # The connection window: it cannot shrink, but a client can stop
    # replenishing it.
    c = H2(srv.port, pairs=[(S_INITIAL_WINDOW_SIZE, 1 << 20)], auto_window=False)
    sid = c.request("/big?500000")
    t0 = time.monotonic()
    r = c.response(sid, timeout=8)
    check(r.rst == CANCEL and len(r.body) == 65535, "connection window: %d bytes, %r" % (
        len(r.body), r.rst))
    log("connection window exhausted: RST_STREAM(CANCEL) after %.2fs with 65535 bytes sent"
        % (time.monotonic() - t0))


def case_stream_limit():
    srv = Server(["--threads", "1"])
    # Before the client acknowledged our SETTINGS: the 101st is refused.
    c = H2(srv.port, ack=False)
    sids = [c.request("/defer?1500") for _ in range(101)]
    r = c.response(sids[-1], timeout=5)
    check(r.rst == REFUSED_STREAM, "101st stream: %r" % r)
    for sid in sids[:100]:
        r = c.response(sid, timeout=10)
        check(r.status == 200, "stream %d of the first 100: %r" % (sid, r))
    c.send(settings(ack=True))
    check(c.get("/").status == 200, "connection alive")
    c.close()
    log("101st stream (SETTINGS not yet acknowledged): REFUSED_STREAM; 100 completed")
    # After the ACK nghttp2 treats it as a connection error.
    c = H2(srv.port)
    c.until(lambda: c.settings, 5, "SETTINGS")
    c.send(frame(PING, 0, 0, b"12345678"))
    c.until(lambda: any(f[0] == SETTINGS and f[1] & ACK for f in c.frames), 5, "SETTINGS ACK")
    sids = [c.request("/defer?1000") for _ in range(101)]
    expect_goaway_close(c, (PROTOCOL_ERROR, REFUSED_STREAM), "101 streams after the ACK")
    log("101st stream after the SETTINGS ACK: GOAWAY(PROTOCOL_ERROR) last=%d" %
        c.goaways[-1][0])


# ---------------------------------------------------------------------------
# The drain


def drain_sequence(sig):
    srv = Server(["--log-requests", "1"])
    c = H2(srv.port, auto_ping=False)
    c.until(lambda: c.settings, 5, "SETTINGS")
    slow = c.request("/defer?1500")
    time.sleep(0.2)
    srv.signal(sig)
    c.until(lambda: c.goaways and c.pings, 5, "GOAWAY notice and PING")
    check(c.goaways[0][0] == 0x7fffffff and c.goaways[0][1] == NO_ERROR,
          "notice: %r" % c.goaways)
    # A stream opened after the notice, before we acknowledge the PING: it
    # is processed.
    mid = c.request("/defer?300")
    c.send(frame(PING, ACK, 0, c.pings[0]))
    c.until(lambda: len(c.goaways) >= 2, 5, "the final GOAWAY")
    last, code = c.goaways[1][:2]
    check(last == mid and code == NO_ERROR, "final GOAWAY last=%d code=%d (mid stream %d)" %
          (last, code, mid))
    late = c.request("/status?299")
    for sid, status in ((mid, 200), (slow, 200)):
        r = c.response(sid, timeout=5)
        check(r.status == status, "stream %d: %r" % (sid, r))
    # Lingering close: the client keeps sending; all our frames still come.
    for _ in range(5):
        try:
            c.send(frame(PING, 0, 0, b"stillhere"[:8]))
        except OSError:
            break
    check(c.wait_closed(5), "connection not closed after its streams")
    check(c.eof is True, "closed with a reset, not a FIN: %s" % c.eof)
    check(c.resps[late].status is None, "the late stream got an answer: %r" % c.resps[late])
    return srv, slow, mid, late


def case_drain():
    srv, slow, mid, late = drain_sequence(signal.SIGHUP)
    text = srv.logtext()
    check("/status?299" not in text, "the late stream reached the handler:\n%s" % text)
    check("/defer?300" in text and "/defer?1500" in text, "log:\n%s" % text)
    log("restart: notice, PING, final GOAWAY(last=%d); in-flight and mid-drain streams done; "
        "later stream not processed; FIN after linger" % mid)
    # The successor serves new connections.
    c = H2(srv.port)
    check(c.get("/").status == 200, "successor")
    srv2, slow, mid, late = drain_sequence(signal.SIGTERM)
    srv2.wait_exit(10)
    log("shutdown: same sequence, process exited")


def case_drain_no_ack():
    srv = Server()
    c = H2(srv.port, auto_ping=False)
    c.until(lambda: c.settings, 5, "SETTINGS")
    sid = c.request("/defer?2000")
    time.sleep(0.2)
    srv.signal(signal.SIGHUP)
    c.until(lambda: c.goaways, 5, "notice")
    t0 = time.monotonic()
    c.until(lambda: len(c.goaways) >= 2, 5, "final GOAWAY without a PING ACK")
    dt = time.monotonic() - t0
    check(0.7 < dt < 2.5 and c.goaways[1][0] == sid, "final GOAWAY after %.2fs: %r" % (
        dt, c.goaways))
    check(c.response(sid, timeout=5).status == 200, "in-flight stream")
    check(c.wait_closed(5), "closed")
    log("no PING ACK: final GOAWAY after %.2fs; stream done; closed" % dt)


def case_drain_idle():
    srv = Server()
    cs = [H2(srv.port) for _ in range(5)]
    for c in cs:
        check(c.get("/").status == 200, "request")
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    for c in cs:
        check(c.wait_closed(5), "idle connection not closed")
        check(len(c.goaways) == 2 and c.goaways[1][1] == NO_ERROR, "goaways %r" % c.goaways)
    dt = time.monotonic() - t0
    srv.wait_exit(5)
    check(dt < 2, "idle connections closed after %.2fs" % dt)
    log("5 idle connections: notice, final GOAWAY, closed in %.2fs; exit" % dt)


def case_lame_duck():
    srv = Server(["--lame-duck-ms", "1500"])
    c = H2(srv.port)
    check(c.get("/healthz").status == 200, "healthy")
    srv.signal(signal.SIGTERM)
    time.sleep(0.3)
    r = c.get("/healthz")
    check(r.status == 503, "lame duck health: %r" % r)
    check(c.get("/").status == 200, "still serving during the lame duck")
    check(not c.goaways, "GOAWAY during the lame duck: %r" % c.goaways)
    check(c.wait_closed(5) and c.goaways, "closed after the lame duck")
    srv.wait_exit(5)
    log("lame duck: /healthz 503 over HTTP/2, serving, then GOAWAY and close")


def case_hammer():
    srv = Server(["--drain-timeout-ms", "1000"])
    c = H2(srv.port)
    sid = c.request("/defer?5000")
    time.sleep(0.2)
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    check(c.wait_closed(6), "not closed by the hammer timeout")
    dt = time.monotonic() - t0
    check(c.resps[sid].status is None, "the 5 s stream completed?")
    check(0.8 < dt < 3, "closed after %.2fs" % dt)
    srv.wait_exit(5)
    log("hammer timeout 1 s: in-flight 5 s stream cut after %.2fs" % dt)


def case_max_requests():
    srv = Server(["--max-keepalive", "5"])
    c = H2(srv.port)
    for i in range(5):
        check(c.get("/").status == 200, "request %d" % (i + 1))
    c.until(lambda: len(c.goaways) >= 2, 5, "GOAWAY after 5 streams")
    check(c.goaways[0][0] == 0x7fffffff and c.goaways[1][0] == 9, "goaways %r" % c.goaways)
    check(c.wait_closed(5), "closed")
    log("5 streams per connection: notice, GOAWAY(last=9), close")


def slow_h2(port, out):
    try:
        c = H2(port)
        r = c.get("/slow", timeout=15)
        out.append(r.status == 200 and r.body == b"Hello, World!")
        c.close()
    except (Fail, OSError) as e:
        log("slow request failed: %s" % e)
        out.append(False)


@T.case(serial=True, timeout=300)
def case_restart_load():
    """20 restarts under load: h2-load (a client that honours GOAWAY like a
    browser) counts every stream that did not end with a 2xx; one /slow
    (2 s) request on its own connection before each restart must complete."""
    restarts, seconds = 20, 30
    srv = Server(binary=T.ctx.args.hello)
    load = subprocess.Popen([T.ctx.args.h2load, "https://127.0.0.1:%d/" % srv.port, "-c", "8", "-m", "10",
                             "-d", str(seconds)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    T.at_exit(lambda: T.kill_pids([load.pid]))
    slow, threads = [], []
    gap = seconds / (restarts + 1)
    pid = srv.pid()
    for i in range(restarts):
        time.sleep(max(0.0, gap - 0.3))
        t = threading.Thread(target=slow_h2, args=(srv.port, slow), daemon=True)
        t.start()
        threads.append(t)
        time.sleep(0.3)
        old = pid
        os.kill(old, signal.SIGHUP)
        pid = wait_until(lambda: (lambda q: q if q != old and alive(q) else 0)(
            read_pid(srv.pidfile)), 15, "restart %d" % (i + 1))
    out = load.communicate(timeout=seconds + 60)[0].decode()
    for t in threads:
        t.join(20)
    j = json.loads(out.strip().splitlines()[-1])
    log("h2-load over %d restarts: %s; slow %d/%d ok" % (restarts, j, sum(slow), len(slow)))
    check(j["ok"] > 0 and j["failed"] == 0, "streams failed: %r" % j)
    check(j["goaways"] >= restarts, "fewer GOAWAYs than restarts: %r" % j)
    check(len(slow) == restarts and all(slow), "slow requests: %s" % slow)


if __name__ == "__main__":
    T.main(globals(), paths=["server", "hello"], optional_paths=["h2load"], timeout=180)

#!/usr/bin/env python3
"""End-to-end tests of libhandoff-http.

Each case starts a real server on 127.0.0.1 (tests/it-http-server.c, or
examples/hello), talks raw HTTP/1.1 to it over sockets (byte-exact where it
matters), sends it signals, and asserts on what clients saw. Usage:

    it-http.py --server PATH --hello PATH CASE

Every wait is bounded; every process started is killed at the end.
"""
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import handofftest as T  # noqa: E402
from handofftest import alive, check, free_port, log, port_open, wait_until  # noqa: E402
from handofftest import wrk  # noqa: E402
from handofftest.http import Conn, Server, get, req  # noqa: E402

SERVER = None  # --server: tests/it-http-server.c
HELLO = None   # --hello: examples/hello
TMP = None     # the case's directory (set by the runner)


def expect_error(port, data, status, pause=None):
    c = Conn(port)
    c.send(data)
    st, h, body, raw = c.response()
    check(st == status, "expected %d, got %d for %r" % (status, st, data[:80]))
    check(h.get("connection") == "close", "error %d without Connection: close" % status)
    check(c.closed_within(3), "connection not closed after %d" % status)
    c.close()


# --------------------------------------------------------------------------
# Cases


def case_basic():
    srv = Server(["--threads", "2"])
    c = Conn(srv.port)
    c.send(req("/"))
    st, h, body, raw = c.response()
    check(st == 200 and body == b"Hello, World!", "GET / -> %d %r" % (st, body))
    check(h["content-length"] == "13" and h["content-type"] == "text/plain", repr(h))
    check(re.match(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct"
                   r"|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$", h["date"]), "bad Date %r" % h["date"])
    when = time.mktime(time.strptime(h["date"], "%a, %d %b %Y %H:%M:%S GMT")) - time.timezone
    check(abs(when - time.time()) < 3, "Date is off: %s" % h["date"])
    # HEAD: same headers, no body; the connection stays usable.
    c.send(req("/", method="HEAD"))
    st, h, body, raw = c.response(head=True)
    check(st == 200 and h["content-length"] == "13", "HEAD -> %d %r" % (st, h))
    c.send(req("/info?a=1&b=%20x", method="DELETE"))
    st, h, body, _ = c.response()
    text = body.decode()
    check(st == 200 and "method=DELETE\n" in text and "path=/info\n" in text
          and "query=a=1&b=%20x\n" in text and "tls=0" in text and "peer=127.0.0.1" in text,
          "info: %r" % text)
    check(not c.buf, "stray bytes after HEAD: %r" % c.buf)
    # Header lookup is case-insensitive; all headers are listed in order.
    c.send(req("/header?x-test", headers=["X-TEST: Some Value"]))
    st, h, body, _ = c.response()
    check(st == 200 and body == b"Some Value", "header lookup: %d %r" % (st, body))
    c.send(req("/headers", headers=["A: 1", "b: 2"]))
    st, h, body, _ = c.response()
    check(body == b"Host: localhost\nA: 1\nb: 2\n", "headers: %r" % body)
    # 204: no body, no Content-Length.
    c.send(req("/status?204"))
    st, h, body, _ = c.response()
    check(st == 204 and "content-length" not in h and body == b"", "204: %r" % h)
    c.send(req("/nope"))
    st, h, body, _ = c.response()
    check(st == 404, "404: %d" % st)
    # A Content-Length body.
    c.send(req("/echo", method="POST", body=b"hello body"))
    st, h, body, _ = c.response()
    check(st == 200 and body == b"hello body" and h["x-body-length"] == "10"
          and h["x-method"] == "POST", "echo: %r %r" % (h, body))
    # The built-in health path.
    c.send(req("/healthz"))
    st, h, body, _ = c.response()
    check(st == 200 and body == b"OK\n", "healthz: %d %r" % (st, body))
    c.close()
    # HTTP/1.0: closes unless keep-alive was asked for.
    c = Conn(srv.port)
    c.send(req("/", version="1.0", host=False))
    st, h, body, _ = c.response()
    check(st == 200 and body == b"Hello, World!" and h.get("connection") == "close", repr(h))
    check(c.closed_within(2), "HTTP/1.0 connection not closed")
    c.close()
    c = Conn(srv.port)
    c.send(req("/", version="1.0", host=False, headers=["Connection: keep-alive"]))
    st, h, body, _ = c.response()
    check(h.get("connection") == "keep-alive", "1.0 keep-alive: %r" % h)
    c.send(req("/", version="1.0", host=False))
    st, h, body, _ = c.response()
    check(st == 200 and h.get("connection") == "close", "1.0 second: %r" % h)
    c.close()
    # Absolute-form target.
    c = Conn(srv.port)
    c.send(b"GET http://localhost/info?q HTTP/1.1\r\nHost: localhost\r\n\r\n")
    st, h, body, _ = c.response()
    check(b"path=/info\n" in body and b"query=q\n" in body, "absolute-form: %r" % body)
    c.close()


def case_keepalive():
    srv = Server(["--threads", "1", "--max-keepalive", "5"])
    c = Conn(srv.port)
    for i in range(4):
        c.send(req("/"))
        st, h, body, _ = c.response()
        check(st == 200 and "connection" not in h, "request %d: %r" % (i, h))
    c.send(req("/"))
    st, h, body, _ = c.response()
    check(h.get("connection") == "close", "5th request of 5 without close: %r" % h)
    check(c.closed_within(3), "not closed after the keep-alive limit")
    c.close()
    # The handler asks to close.
    c = Conn(srv.port)
    c.send(req("/close"))
    st, h, body, _ = c.response()
    check(h.get("connection") == "close" and body == b"closing\n", repr(h))
    check(c.closed_within(3), "not closed after handler's Connection: close")
    c.close()
    # The client asks to close.
    c = Conn(srv.port)
    c.send(req("/", headers=["Connection: close"]))
    st, h, body, _ = c.response()
    check(h.get("connection") == "close", repr(h))
    check(c.closed_within(3), "not closed after client's Connection: close")
    c.close()
    # Many requests on one connection, split at awkward places.
    srv2 = Server(["--threads", "1"])
    c = Conn(srv2.port)
    data = req("/echo", method="PUT", body=b"x" * 1000)
    for i in range(200):
        cut = (i * 37) % len(data)
        c.send(data[:cut])
        if i % 20 == 0:
            time.sleep(0.01)
        c.send(data[cut:])
        st, h, body, _ = c.response()
        check(st == 200 and body == b"x" * 1000, "request %d failed" % i)
    c.close()


def case_pipelining():
    srv = Server(["--threads", "1"])
    c = Conn(srv.port)
    c.send(req("/thread?300") + req("/") + req("/defer?100") + req("/info?last")
           + req("/echo", method="POST", body="pipelined body") + req("/", method="HEAD")
           + req("/stream?2"))
    bodies = []
    for head in (False, False, False, False, False, True, False):
        st, h, body, _ = c.response(head=head)
        check(st == 200, "pipelined status %d" % st)
        bodies.append(body)
    check(bodies[0] == b"thread done\n" and bodies[1] == b"Hello, World!"
          and bodies[2] == b"deferred\n" and b"query=last" in bodies[3]
          and bodies[4] == b"pipelined body" and bodies[5] == b""
          and bodies[6] == b"chunk 0\nchunk 1\n", "out of order: %r" % bodies)
    # A deep pipeline in one write.
    c.send(req("/") * 100)
    for i in range(100):
        st, h, body, _ = c.response()
        check(st == 200 and body == b"Hello, World!", "pipeline %d" % i)
    check(not c.buf, "stray bytes")
    # A long pipeline does not starve another connection on the worker.
    hog = Conn(srv.port)
    hog.send(req("/echo", method="POST", body=b"p" * 100) * 3000)
    t0 = time.monotonic()
    st, h, body, _ = get(srv.port, "/")
    check(st == 200 and time.monotonic() - t0 < 0.5, "starved behind a pipeline")
    for i in range(3000):
        st, h, body, _ = hog.response()
        check(body == b"p" * 100, "hog response %d" % i)
    hog.close()
    # A pipelined request after Connection: close is not answered.
    c.send(req("/", headers=["Connection: close"]) + req("/info"))
    st, h, body, _ = c.response()
    check(h.get("connection") == "close", repr(h))
    rest = c.read_to_eof()
    check(rest == b"", "answered after close: %r" % rest)
    c.close()


def chunked(parts, ext=False, trailer=b""):
    out = b""
    for p in parts:
        out += b"%x%s\r\n%s\r\n" % (len(p), b";name=val" if ext else b"", p)
    return out + b"0\r\n" + trailer + b"\r\n"


def case_chunked_request():
    srv = Server(["--threads", "2", "--max-body", "100000"])
    c = Conn(srv.port)
    parts = [b"hello ", b"chunked ", b"x" * 5000, b" world"]
    body = chunked(parts, ext=True, trailer=b"X-Trailer: yes\r\n")
    c.send(req("/echo", method="POST", headers=["Transfer-Encoding: chunked"]))
    for i in range(0, len(body), 7):  # dribble it in
        c.send(body[i:i + 7])
        if i % 700 == 0:
            time.sleep(0.002)
    st, h, got, _ = c.response()
    check(st == 200 and got == b"".join(parts), "chunked echo: %d %r" % (st, got[:60]))
    check(h["x-body-length"] == str(len(b"".join(parts))), repr(h))
    # Keep-alive continues after a chunked body, and pipelining with it.
    c.send(req("/echo", method="POST", headers=["Transfer-Encoding: chunked"])
           + chunked([b"a", b"b"]) + req("/"))
    st, h, got, _ = c.response()
    check(got == b"ab", "second chunked: %r" % got)
    st, h, got, _ = c.response()
    check(got == b"Hello, World!", "after chunked: %r" % got)
    # An empty chunked body.
    c.send(req("/echo", method="POST", headers=["Transfer-Encoding: chunked"]) + b"0\r\n\r\n")
    st, h, got, _ = c.response()
    check(st == 200 and got == b"" and h["x-body-length"] == "0", repr(h))
    c.close()
    # A large body that makes the buffer grow (and move) while reading.
    c = Conn(srv.port)
    big = [os.urandom(4096) for _ in range(20)]
    c.send(req("/echo", method="POST", headers=["Transfer-Encoding: chunked"]) + chunked(big))
    st, h, got, _ = c.response()
    check(got == b"".join(big), "large chunked body differs")
    c.send(req("/echo", method="POST", body=b"y" * 90000))
    st, h, got, _ = c.response()
    check(got == b"y" * 90000, "large CL body differs")
    c.close()
    # Too large: 413 and close.
    expect_error(srv.port, req("/echo", method="POST", headers=["Transfer-Encoding: chunked"])
                 + chunked([b"z" * 60000, b"z" * 60000]), 413)
    # Malformed chunk size: 400.
    expect_error(srv.port, req("/echo", method="POST", headers=["Transfer-Encoding: chunked"])
                 + b"zz\r\nhello\r\n0\r\n\r\n", 400)


def case_chunked_response():
    srv = Server(["--threads", "2"])
    c = Conn(srv.port)
    c.send(req("/stream?5"))
    st, h, body, raw = c.response()
    check(h.get("transfer-encoding") == "chunked" and "content-length" not in h, repr(h))
    check(body == b"".join(b"chunk %d\n" % i for i in range(5)), "stream body %r" % body)
    # Streamed from another thread, chunk by chunk.
    t0 = time.monotonic()
    c.send(req("/stream-thread?4"))
    st, h, body, raw = c.response()
    dt = time.monotonic() - t0
    check(body == b"".join(b"chunk %d\n" % i for i in range(4)), "thread stream %r" % body)
    check(dt >= 0.15, "thread stream came too fast (%.3fs)" % dt)
    # HEAD of a streamed response: head only; the connection goes on.
    c.send(req("/stream?5", method="HEAD") + req("/"))
    st, h, body, raw = c.response(head=True)
    check(st == 200 and h.get("transfer-encoding") == "chunked", repr(h))
    st, h, body, raw = c.response()
    check(body == b"Hello, World!", "after HEAD stream: %r" % body)
    c.close()
    # HTTP/1.0: no chunked framing; the end of the body is the close.
    c = Conn(srv.port)
    c.send(req("/stream?3", version="1.0", host=False))
    st, h, body, raw = c.response()
    check("transfer-encoding" not in h and h.get("connection") == "close", repr(h))
    check(body == b"chunk 0\nchunk 1\nchunk 2\n", "1.0 stream %r" % body)
    c.close()
    # Timer-driven streaming on the worker.
    c = Conn(srv.port)
    c.send(req("/tick?4"))
    st, h, body, raw = c.response()
    check(body == b"tick 4\ntick 3\ntick 2\ntick 1\n", "tick stream %r" % body)
    c.close()
    # A producer learns that the client left (-EPIPE) and stops.
    c = Conn(srv.port)
    c.send(req("/stream-thread?1000"))
    c.read_until(b"chunk 1\n")
    c.close()
    wait_until(lambda: b"stream_epipe=1" in get(srv.port, "/stats")[2], 5,
               "the producer to see -EPIPE")
    # A large buffered body goes out through partial writes.
    c = Conn(srv.port)
    c.send(req("/big?3000000"))
    time.sleep(0.3)  # let the server fill the socket
    st, h, body, raw = c.response()
    check(len(body) == 3000000 and body.count(b"x") == 3000000, "big body")
    c.close()


def case_errors():
    srv = Server(["--threads", "1", "--max-body", "1000", "--read-timeout-ms", "600"])
    expect_error(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400)
    expect_error(srv.port, b"GET / HTTP/1.1\r\n\r\n", 400)  # no Host
    expect_error(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n", 400)
    expect_error(srv.port, req("/echo", method="POST", headers=["Content-Length: 2000"]), 413)
    expect_error(srv.port, req("/" + "a" * 9000), 414)
    expect_error(srv.port, req("/", headers=["X-H%d: %s" % (i, "v" * 100) for i in range(100)]), 431)
    expect_error(srv.port, req("/", method="POST", headers=["Transfer-Encoding: gzip, chunked"]), 501)
    expect_error(srv.port, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505)
    expect_error(srv.port, req("/", headers=["Expect: something-else"]), 417)
    # 408: a partial request that stalls.
    c = Conn(srv.port)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    st, h, body, _ = c.response()
    dt = time.monotonic() - t0
    check(st == 408 and 0.4 < dt < 2.0, "408 after %.2fs: %d" % (dt, st))
    check(c.closed_within(3), "not closed after 408")
    c.close()
    # A stalled body is a partial request too.
    c = Conn(srv.port)
    c.send(req("/echo", method="POST", headers=["Content-Length: 10"]) + b"abc")
    st, h, body, _ = c.response()
    check(st == 408, "stalled body: %d" % st)
    c.close()
    # An error on one connection leaves the others alone.
    good = Conn(srv.port)
    good.send(req("/"))
    good.response()
    expect_error(srv.port, b"\x00\x01\x02garbage\r\n\r\n", 400)
    good.send(req("/"))
    st, h, body, _ = good.response()
    check(st == 200, "neighbour hurt by an error")
    good.close()


def case_expect_continue():
    srv = Server(["--threads", "1", "--max-body", "1000"])
    c = Conn(srv.port)
    c.send(req("/echo", method="PUT", headers=["Expect: 100-continue", "Content-Length: 5"]))
    line = c.read_until(b"\r\n\r\n")
    check(line == b"HTTP/1.1 100 Continue\r\n\r\n", "no 100 Continue: %r" % line)
    c.send(b"abcde")
    st, h, body, _ = c.response()
    check(st == 200 and body == b"abcde", "after 100: %d %r" % (st, body))
    # The body sent right away: no 100 is needed or sent.
    c.send(req("/echo", method="PUT", headers=["Expect: 100-continue"], body=b"xyz"))
    st, h, body, raw = c.response()
    check(st == 200 and body == b"xyz", "eager body: %d %r" % (st, body))
    # Chunked with Expect.
    c.send(req("/echo", method="PUT", headers=["Expect: 100-continue",
                                               "Transfer-Encoding: chunked"]))
    check(c.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n", "no 100 for chunked")
    c.send(chunked([b"12", b"345"]))
    st, h, body, _ = c.response()
    check(body == b"12345", "chunked after 100: %r" % body)
    c.close()
    # Too large: 413 at once, never 100.
    c = Conn(srv.port)
    c.send(req("/echo", method="PUT", headers=["Expect: 100-continue", "Content-Length: 5000"]))
    st, h, body, raw = c.response()
    check(st == 413 and h.get("connection") == "close", "expect too large: %d" % st)
    check(c.closed_within(3), "not closed after 413")
    c.close()
    # HTTP/1.0 with Expect: the expectation is ignored, no 100.
    c = Conn(srv.port)
    c.send(b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    time.sleep(0.2)
    check(c.buf == b"" and not c.closed_within(0.2) and c.buf == b"", "1.0 got %r" % c.buf)
    c.send(b"ok")
    st, h, body, raw = c.response()
    check(st == 200 and body == b"ok", "1.0 expect: %d %r" % (st, body))
    c.close()


def make_cert():
    cert = os.path.join(TMP, "cert.pem")
    key = os.path.join(TMP, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                    "/CN=localhost", "-days", "1", "-keyout", key, "-out", cert],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=60)
    return cert, key


def case_tls():
    cert, key = make_cert()
    srv = Server(["--threads", "2", "--tls-timeout-ms", "500"], tls=(cert, key))
    c = Conn(srv.port, tls=True, alpn=["h2", "http/1.1"])
    check(c.s.selected_alpn_protocol() == "http/1.1",
          "ALPN: %r" % c.s.selected_alpn_protocol())
    for i in range(3):
        c.send(req("/"))
        st, h, body, _ = c.response()
        check(st == 200 and body == b"Hello, World!", "TLS GET %d" % i)
    c.send(req("/info"))
    st, h, body, _ = c.response()
    check(b"tls=1" in body, "tls flag: %r" % body)
    c.send(req("/stream?3") + req("/echo", method="POST", headers=["Transfer-Encoding: chunked"])
           + chunked([b"t", b"ls"]))
    st, h, body, _ = c.response()
    check(body == b"chunk 0\nchunk 1\nchunk 2\n", "TLS stream %r" % body)
    st, h, body, _ = c.response()
    check(body == b"tls", "TLS chunked echo %r" % body)
    c.send(req("/big?2000000"))
    time.sleep(0.2)
    st, h, body, _ = c.response()
    check(len(body) == 2000000, "TLS big body: %d" % len(body))
    c.send(req("/thread?100"))
    st, h, body, _ = c.response()
    check(body == b"thread done\n", "TLS async: %r" % body)
    # curl agrees about ALPN.
    if shutil.which("curl"):
        r = subprocess.run(["curl", "-sv", "-k", "--max-time", "10",
                            "https://127.0.0.1:%d/" % srv.port],
                           capture_output=True, timeout=20)
        check(r.stdout == b"Hello, World!", "curl body %r" % r.stdout)
        check(b"ALPN: server accepted http/1.1" in r.stderr
              or b"ALPN, server accepted to use http/1.1" in r.stderr,
              "curl ALPN: %r" % r.stderr[-600:])
    # Without ALPN.
    c2 = Conn(srv.port, tls=True)
    c2.send(req("/"))
    check(c2.response()[0] == 200, "TLS without ALPN")
    c2.close()
    # Plain text on the TLS port, a client that never handshakes, and a
    # client that sends garbage mid-handshake: each only hurts itself.
    p = Conn(srv.port)
    p.send(req("/"))
    check(p.closed_within(3), "plain HTTP on TLS port not closed")
    p.close()
    idle = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    t0 = time.monotonic()
    idle.settimeout(3)
    try:
        got = idle.recv(100)
    except OSError:
        got = b""
    dt = time.monotonic() - t0
    check(got == b"" and 0.3 < dt < 2.5, "handshake timeout after %.2fs (%r)" % (dt, got))
    idle.close()
    c.send(req("/"))
    st, h, body, _ = c.response()
    check(st == 200, "TLS connection hurt by the others")
    c.close()


# User-space memory an idle TLS connection may cost. OpenSSL 3.0 alone
# keeps about 14 KB per connection (the SSL object is 7.6 KB); nginx's
# idle TLS connection costs about 15 KB on the same machine.
TLS_IDLE_BOUND = 17000


def case_tls_idle_memory():
    """Idle TLS keep-alive connections hold no record buffers
    (SSL_MODE_RELEASE_BUFFERS), and a burst of handshakes leaves no
    resident holes behind (the worker trims the heap once quiet)."""
    cert, key = make_cert()
    srv = Server(["--threads", "1"], tls=(cert, key))
    pid = srv.p.pid
    time.sleep(0.5)
    before = T.private_bytes(pid)
    n = 400
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conns = []
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            t = ctx.wrap_socket(s)
            t.sendall(req("/"))
            buf = b""
            while not buf.endswith(b"Hello, World!"):
                d = t.recv(4096)
                check(d, "TLS connection %d closed before its answer" % i)
                buf += d
            conns.append(t)
        time.sleep(1.0)  # the worker trims once quiet for 200 ms
        per_conn = (T.private_bytes(pid) - before) / n
        for t in conns:
            check(t.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == 1,
                  "an idle TLS connection was closed")
    finally:
        for t in conns:
            t.close()
    if T.sanitizer_of(SERVER):
        log("  sanitizer build: %.0f B per idle TLS connection, not checked" % per_conn)
        return
    log("  %d idle TLS connections: %.0f B of private memory each (bound %d B)"
        % (n, per_conn, TLS_IDLE_BOUND))
    check(per_conn <= TLS_IDLE_BOUND, "an idle TLS connection costs %.0f B (> %d B)"
          % (per_conn, TLS_IDLE_BOUND))


def case_listen_failure():
    """handoff_http_server_listen() failing after the bind (a certificate
    that does not load or a key that does not match) closes the socket and
    drops its registration: the address is free and listening on it again
    works (it used to give -EEXIST, and the socket stayed open)."""
    cert, key = make_cert()
    other = os.path.join(TMP, "other-key.pem")
    subprocess.run(["openssl", "genrsa", "-out", other, "2048"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    port = free_port()
    r = subprocess.run([SERVER, "--check-listen-failure", "127.0.0.1:%d" % port, cert, other],
                       capture_output=True, text=True, timeout=30)
    log(r.stdout.strip())
    check(r.returncode == 0 and r.stdout.strip().endswith("OK"),
          "listen failure left something behind:\n%s%s" % (r.stdout, r.stderr))


def timed_get(port, path, out, key):
    t0 = time.monotonic()
    try:
        st, h, body, _ = get(port, path)
        out[key] = (st, body, time.monotonic() - t0)
    except Exception as e:  # noqa: BLE001 - reported by the caller
        out[key] = (None, repr(e), time.monotonic() - t0)


def case_slow_not_blocking():
    srv = Server(["--threads", "1"])
    out = {}
    th = threading.Thread(target=timed_get, args=(srv.port, "/slow", out, "slow"))
    th.start()
    time.sleep(0.2)
    for i in range(20):
        t0 = time.monotonic()
        st, h, body, _ = get(srv.port, "/")
        dt = time.monotonic() - t0
        check(st == 200 and dt < 0.5, "fast request %d took %.3fs behind /slow" % (i, dt))
    th.join(10)
    st, body, dt = out["slow"]
    check(st == 200 and 1.8 < dt < 3.0, "/slow: %r %r %.2fs" % (st, body, dt))
    # Many timers at once on one worker do not queue behind each other.
    ths = [threading.Thread(target=timed_get, args=(srv.port, "/defer?500", out, i))
           for i in range(30)]
    t0 = time.monotonic()
    for t in ths:
        t.start()
    for t in ths:
        t.join(10)
    total = time.monotonic() - t0
    check(all(out[i][0] == 200 for i in range(30)), "deferred failures")
    check(total < 2.0, "30 x /defer?500 took %.2fs" % total)


def slow_factor():
    """How much slower a sanitizer build of the server is (time bounds are
    multiplied by it): ThreadSanitizer 5, AddressSanitizer (-O0) 3."""
    return {"thread": 5, "address": 3}.get(T.sanitizer_of(SERVER), 1)


def quiet_latency(port, n=5):
    """The slowest of n plain requests: this machine's noise right now."""
    worst = 0.0
    for _ in range(n):
        t = time.monotonic()
        get(port, "/")
        worst = max(worst, time.monotonic() - t)
    return worst


def case_async_thread():
    srv = Server(["--threads", "1"])
    # Bounds for a busy machine and a sanitizer build: the times below plus
    # what a plain request takes now, times the build's slowness.
    slow, noise = slow_factor(), quiet_latency(srv.port)
    out = {}
    ths = [threading.Thread(target=timed_get, args=(srv.port, "/thread?300", out, i))
           for i in range(20)]
    t0 = time.monotonic()
    for t in ths:
        t.start()
    time.sleep(0.05)
    t1 = time.monotonic()
    st, h, body, _ = get(srv.port, "/")
    fast = time.monotonic() - t1
    # Not behind the handlers' 300 ms: their threads hold the responses,
    # not the worker.
    check(fast < 0.2 * slow + 2 * noise, "fast request waited for threads: %.0f ms (plain "
          "request %.0f ms)" % (fast * 1e3, noise * 1e3))
    for t in ths:
        t.join(10)
    total = time.monotonic() - t0
    check(all(out[i][0] == 200 and out[i][1] == b"thread done\n" for i in range(20)),
          "thread completions: %r" % out)
    check(total < 1.5 * slow + 20 * noise, "20 x /thread?300 took %.2fs" % total)
    # The same connection goes on after a cross-thread completion.
    c = Conn(srv.port)
    for i in range(20):
        c.send(req("/thread?%d" % (i % 3)) + req("/"))
        check(c.response()[2] == b"thread done\n", "thread %d" % i)
        check(c.response()[2] == b"Hello, World!", "after thread %d" % i)
    c.close()


def case_lame_duck():
    srv = Server(["--threads", "2", "--lame-duck", "1000"], binary=HELLO)
    check(get(srv.port, "/healthz")[0] == 200, "healthz before")
    busy = Conn(srv.port)  # a keep-alive client that stays busy
    busy.send(req("/"))
    busy.response()
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    time.sleep(0.2)
    st, h, body, _ = get(srv.port, "/healthz")
    check(st == 503, "healthz in lame duck: %d" % st)
    st, h, body, _ = get(srv.port, "/")
    check(st == 200 and body == b"Hello, World!", "/ in lame duck: %d" % st)
    busy.send(req("/"))
    st, h, body, _ = busy.response()
    check(st == 200 and "connection" not in h, "keep-alive in lame duck: %r" % h)
    while time.monotonic() - t0 < 0.8:
        check(get(srv.port, "/")[0] == 200, "refused during lame duck")
        time.sleep(0.05)
    rc = srv.wait_exit(5)
    dt = time.monotonic() - t0
    check(rc == 0 and 0.9 < dt < 3.0, "exit %r after %.2fs" % (rc, dt))
    check(busy.closed_within(1), "keep-alive connection left open")
    check(not port_open(srv.port), "still accepting after exit")


def case_restart():
    # The drain of the old generation (without connection migration, which
    # tests/it-http-migrate.py covers: there the idle connection moves).
    srv = Server(["--threads", "2", "--no-migrate"], binary=HELLO)
    old = srv.pid()
    out = {}
    slow = threading.Thread(target=timed_get, args=(srv.port, "/slow", out, "slow"))
    slow.start()
    keep = Conn(srv.port)
    keep.send(req("/"))
    keep.response()
    stop = threading.Event()
    results = []

    def client():
        while not stop.is_set():
            try:
                st, h, body, _ = get(srv.port, "/")
                results.append(st == 200 and body == b"Hello, World!")
            except Exception as e:  # noqa: BLE001
                results.append(repr(e))

    clients = [threading.Thread(target=client) for _ in range(4)]
    for t in clients:
        t.start()
    time.sleep(0.3)
    srv.signal(signal.SIGHUP)
    new = wait_until(lambda: srv.pid() != old and srv.pid(), 10, "new pid in pid file")
    # An upgrade drain never closes the idle keep-alive connection (the
    # old code closed it after a 1 s grace, racing with the client's next
    # request): its next request is answered by the old process with
    # "Connection: close", then the connection is closed cleanly (a FIN,
    # no reset, no partial response).
    try:
        check(not keep.closed_within(1.7), "idle keep-alive closed while idle: %r" % keep.buf)
        keep.send(req("/"))
        st, h, body, _ = keep.response()
        check(st == 200 and body == b"Hello, World!" and h.get("connection") == "close",
              "keep-alive after the restart: %d %r" % (st, h))
        check(keep.closed_within(5) and keep.buf == b"", "after Connection: close: %r" % keep.buf)
    finally:
        stop.set()  # the clients' threads end (also when a check failed)
    keep.close()
    slow.join(10)
    stop.set()
    for t in clients:
        t.join(10)
    check(out["slow"][0] == 200 and out["slow"][1] == b"Hello, World!",
          "in-flight /slow: %r" % (out["slow"],))
    bad = [r for r in results if r is not True]
    check(not bad and len(results) > 50, "%d requests, failures: %r" % (len(results), bad[:5]))
    rc = srv.wait_exit(10)  # the old generation
    check(rc == 0, "old generation exit %r" % rc)
    check(alive(new), "new generation not running")
    st, h, body, _ = get(srv.port, "/")
    check(st == 200, "new generation does not serve")
    # A second restart from the new generation, then shutdown.
    os.kill(new, signal.SIGHUP)
    newer = wait_until(lambda: srv.pid() != new and srv.pid(), 10, "third pid")
    wait_until(lambda: not alive(new), 10, "second generation exit")
    check(get(srv.port, "/")[0] == 200, "third generation does not serve")
    os.kill(newer, signal.SIGTERM)
    wait_until(lambda: not alive(newer), 10, "third generation exit")


def info_pid(port, what="a new connection"):
    """The pid of the process that answers /info on a new connection."""
    c = Conn(port, timeout=30)  # a ThreadSanitizer server on a busy machine is slow
    try:
        c.send(req("/info", headers=["Connection: close"]))
        st, h, body, _ = c.response()
    except OSError as e:
        T.fail("no answer on %s: %r" % (what, e))
    finally:
        c.close()
    check(st == 200, "/info: %d" % st)
    m = re.search(rb"pid=(\d+)", body)
    check(m, "/info: %r" % body)
    return int(m.group(1))


def case_resume():
    """handoff_http_serve() with a resume window: a new version that dies
    right after taking over is rolled back, and the old generation accepts
    again (HANDOFF_EVENT_RESUME re-arms the listeners; issue 10 #3); a later
    good upgrade still works."""
    args = os.path.join(TMP, "extra-args")
    with open(args, "w") as f:
        f.write("")
    script = os.path.join(TMP, "server.sh")
    with open(script, "w") as f:
        f.write('#!/bin/bash\nexec -a "$0" "%s" "$@" $(cat "%s")\n' % (SERVER, args))
    os.chmod(script, 0o755)
    srv = Server(["--threads", "2", "--resume-window-ms", "3000"], binary=script)
    g1 = srv.pid()
    check(info_pid(srv.port, "generation 1") == g1, "generation 1 does not answer")
    with open(args, "w") as f:
        f.write("--crash-after-ready 300")
    srv.signal(signal.SIGHUP)
    g2 = wait_until(lambda: (lambda p: p if p not in (0, g1) else 0)(srv.pid()), 20,
                    "the new version to take over")
    try:
        wait_until(lambda: srv.pid() == g1, 20, "generation 1 to take the service back")
    except AssertionError:
        log(srv.logtext()[-2000:])
        raise
    wait_until(lambda: not alive(g2), 10, "the crashed version to go")
    wait_until(lambda: "resumes serving" in srv.logtext(), 10, "the resume to be logged")
    # New connections are accepted and answered by generation 1 again.
    for i in range(20):
        got = info_pid(srv.port, "request %d after the resume" % i)
        check(got == g1, "request %d after the resume served by %d, not %d" % (i, got, g1))
    # A good version then takes over as usual.
    with open(args, "w") as f:
        f.write("")
    srv.signal(signal.SIGHUP)
    g3 = wait_until(lambda: (lambda p: p if p not in (0, g1, g2) else 0)(srv.pid()), 20,
                    "the good version to take over")
    # Generation 1 stops accepting once it has processed the DRAIN event,
    # just after it names the successor in the pid file.
    wait_until(lambda: info_pid(srv.port, "the upgrade") == g3, 10, "the good version to serve")
    check(srv.wait_exit(15) == 0, "generation 1 did not drain and exit")
    check(info_pid(srv.port, "the good version") == g3, "the good version stopped serving")
    os.kill(g3, signal.SIGTERM)
    wait_until(lambda: not alive(g3), 10, "the good version to exit")
    log("  generation 2 (pid %d) died 300 ms after taking over; generation 1 (pid %d) "
        "served again; then pid %d took over" % (g2, g1, g3))


UPGRADES = 40  # the race below hits in some 3 % of upgrades on the old code


def case_upgrade_lone_client():
    """A client alone on the server, one new connection at a time, across
    upgrades: each connection is answered at once. With EPOLLEXCLUSIVE the
    kernel wakes one epoll instance per new connection; one that woke a
    worker of the old generation just as it started draining used to stay
    in the backlog until another connection woke the successor: for ever,
    with no other client."""
    srv = Server(["--threads", "2"])
    stop = threading.Event()
    res = {"n": 0, "err": None}

    def client():
        while not stop.is_set():
            try:
                c = Conn(srv.port, timeout=10)
                c.send(req("/", headers=["Connection: close"]))
                st, h, body, _ = c.response()
                c.close()
                if st != 200:
                    res["err"] = "status %d" % st
                    return
                res["n"] += 1
            except (OSError, AssertionError) as e:
                res["err"] = "request %d: %r" % (res["n"], e)
                return

    t = threading.Thread(target=client)
    t.start()
    try:
        for i in range(UPGRADES):
            old = srv.pid()
            os.kill(old, signal.SIGHUP)
            wait_until(lambda: srv.pid() not in (0, old), 20, "upgrade %d" % (i + 1))
            wait_until(lambda: not alive(old) or res["err"], 20, "generation %d to exit" % (i + 1))
            check(res["err"] is None, "upgrade %d: %s" % (i + 1, res["err"]))
    finally:
        stop.set()
        t.join(30)
    check(res["err"] is None, res["err"])
    log("  %d requests, one connection at a time, across %d upgrades" % (res["n"], UPGRADES))
    os.kill(srv.pid(), signal.SIGTERM)


def case_shutdown():
    srv = Server(["--threads", "2"])
    out = {}
    slow = threading.Thread(target=timed_get, args=(srv.port, "/defer?3000", out, "slow"))
    slow.start()
    th = threading.Thread(target=timed_get, args=(srv.port, "/thread?1500", out, "thread"))
    th.start()
    idle = Conn(srv.port)
    idle.send(req("/"))
    idle.response()
    fresh = Conn(srv.port)  # connected, never sends a request
    time.sleep(1.2)  # idle for longer than the drain grace (1 s)
    recent = Conn(srv.port)  # active just before the drain
    recent.send(req("/"))
    recent.response()
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    check(idle.closed_within(1.5), "idle keep-alive not closed on drain")
    check(time.monotonic() - t0 < 0.5, "idle close took too long")
    check(fresh.closed_within(2) and fresh.buf == b"", "silent new connection kept")
    # The recently active connection is given the grace: a request sent
    # in it is served (with Connection: close).
    time.sleep(max(0, 0.4 - (time.monotonic() - t0)))
    recent.send(req("/"))
    st, h, body, _ = recent.response()
    check(st == 200 and h.get("connection") == "close", "recent conn: %d %r" % (st, h))
    check(recent.closed_within(2), "recent conn not closed after its response")
    recent.close()
    # The listener is closed when the drain starts (clients are refused
    # rather than left in the backlog), not when the process exits.
    wait_until(lambda: not port_open(srv.port), 2, "listener to stop accepting")
    check(srv.p.poll() is None and "slow" not in out,
          "the listener was only closed by the exit")
    slow.join(10)
    th.join(10)
    check(out["slow"][0] == 200 and out["thread"][0] == 200,
          "in-flight requests: %r" % out)
    rc = srv.wait_exit(5)
    check(rc == 0, "exit status %r" % rc)
    # The hammer: a request longer than the drain timeout is cut.
    srv = Server(["--threads", "1", "--drain-timeout-ms", "700"])
    out = {}
    th = threading.Thread(target=timed_get, args=(srv.port, "/defer?5000", out, "long"))
    th.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    rc = srv.wait_exit(5)
    dt = time.monotonic() - t0
    th.join(5)
    check(rc == 1 and 0.5 < dt < 2.0, "hammer: exit %r after %.2fs" % (rc, dt))
    check(out["long"][0] is None, "cut request reported %r" % (out["long"],))
    # A timer that re-arms itself forever does not keep the stop from
    # finishing: its callback runs once more and may not re-arm.
    srv = Server(["--threads", "1", "--drain-timeout-ms", "500"])
    c = Conn(srv.port)
    c.send(req("/tick?1000000"))
    c.read_until(b"tick 999999\n")
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    rc = srv.wait_exit(5)
    check(rc == 1 and time.monotonic() - t0 < 2, "endless timer: exit %r" % rc)
    c.close()


def case_drain_keepalive():
    srv = Server(["--threads", "2"])
    # A busy keep-alive connection gets "Connection: close" on its next
    # response; a request sent just after the drain began is still served.
    busy = Conn(srv.port)
    busy.send(req("/"))
    busy.response()
    srv.signal(signal.SIGTERM)
    time.sleep(0.02)
    busy.send(req("/info"))
    st, h, body, _ = busy.response()
    check(st == 200 and h.get("connection") == "close", "busy conn: %d %r" % (st, h))
    check(busy.closed_within(2), "busy conn not closed")
    busy.close()
    srv.wait_exit(5)
    # A request already in the socket when an idle connection is reaped is
    # served, not cut off (the non-blocking read before closing). /block
    # stalls the only worker so that the requests arrive before it sees
    # the drain.
    srv = Server(["--threads", "1"])
    conns = [Conn(srv.port) for _ in range(20)]
    for c in conns:
        c.send(req("/"))
        c.response()
    time.sleep(1.2)  # idle for longer than the drain grace
    blocker = Conn(srv.port)
    blocker.send(req("/block?800"))
    time.sleep(0.2)
    srv.signal(signal.SIGTERM)
    time.sleep(0.2)
    for c in conns:
        c.send(req("/info"))
    for i, c in enumerate(conns):
        st, h, body, _ = c.response()
        check(st == 200 and h.get("connection") == "close", "late request %d: %r" % (i, h))
        check(c.closed_within(2), "connection left open")
        c.close()
    check(blocker.response()[0] == 200, "blocker")
    check(srv.wait_exit(5) == 0, "exit status")


def case_hijack():
    srv = Server(["--threads", "1"])
    c = Conn(srv.port)
    c.send(req("/ws", headers=["Connection: upgrade", "Upgrade: echo"]) + b"early bytes|")
    st, h, body, raw = c.response(allow_1xx=True)
    check(st == 101 and h.get("upgrade") == "echo", "upgrade: %r" % raw)
    check(c.read_n(12) == b"early bytes|", "buffered bytes not handed over")
    c.send(b"ping")
    check(c.read_n(4) == b"ping", "no echo")
    # Not an upgrade request.
    st, h, body, _ = get(srv.port, "/ws")
    check(st == 426, "plain /ws: %d" % st)
    # The hijacked connection counts for the drain; on_drain closes it.
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    check(c.closed_within(3), "hijacked connection not closed on drain")
    rc = srv.wait_exit(5)
    check(rc == 0 and time.monotonic() - t0 < 3, "exit %r" % rc)


def case_timeouts():
    srv = Server(["--threads", "1", "--idle-timeout-ms", "500", "--read-timeout-ms", "700",
                  "--write-timeout-ms", "500"])
    c = Conn(srv.port)
    c.send(req("/"))
    c.response()
    t0 = time.monotonic()
    check(c.closed_within(3), "idle connection not closed")
    dt = time.monotonic() - t0
    check(0.35 < dt < 1.5, "idle timeout after %.2fs" % dt)
    c.close()
    # A connection that never sends anything: closed, without a 408.
    c = Conn(srv.port)
    t0 = time.monotonic()
    check(c.closed_within(3) and c.buf == b"", "silent connection: %r" % c.buf)
    check(0.5 < time.monotonic() - t0 < 2, "first-request timeout")
    c.close()
    # A client that does not read: the write timeout closes it; the
    # server keeps serving others.
    # (12 MB exceed the socket buffers; the handler that builds them keeps
    # the one worker busy for seconds in a ThreadSanitizer build, hence
    # the generous client timeout: the check is that others are served.)
    c = Conn(srv.port)
    c.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.send(req("/big?12000000"))
    time.sleep(1.5)
    other = Conn(srv.port, timeout=30)
    other.send(req("/", headers=["Connection: close"]))
    check(other.response()[0] == 200, "server stuck behind a slow reader")
    other.close()
    got = 0
    c.s.settimeout(5)
    try:
        while True:
            d = c.s.recv(1 << 20)
            if not d:
                break
            got += len(d)
    except OSError:
        pass
    check(got < 12000000, "write timeout did not cut the slow reader (%d bytes)" % got)
    c.close()


def case_load():
    if not shutil.which("wrk"):
        log("wrk not installed: skipped")
        sys.exit(77)
    srv = Server(["--threads", "2"])
    r, out = wrk.run("http://127.0.0.1:%d/" % srv.port, 3)
    check(r["requests"] > 1000 and r["failed"] == 0, "wrk: %s" % out)
    r, out = wrk.run("http://127.0.0.1:%d/defer?5" % srv.port, 2, connections=64)
    check(r["requests"] > 100 and r["failed"] == 0, "wrk deferred: %s" % out)
    r, out = wrk.run("http://127.0.0.1:%d/thread?1" % srv.port, 2, connections=16)
    check(r["requests"] > 100 and r["failed"] == 0, "wrk threads: %s" % out)
    # Restarts under load: no failed request.
    hello = Server(["--threads", "2"], binary=HELLO)
    res = {}
    t = threading.Thread(target=lambda: res.update(r=wrk.run("http://127.0.0.1:%d/" % hello.port, 4)))
    t.start()
    for i in range(4):
        time.sleep(0.7)
        pid = hello.pid()
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: hello.pid() != pid, 10, "restart %d" % i)
    t.join(60)
    r, out = res["r"]
    check(r["requests"] > 1000 and r["failed"] == 0, "wrk across restarts: %s" % out)
    os.kill(hello.pid(), signal.SIGTERM)


def case_no_timeout():
    """HANDOFF_NO_TIMEOUT ("never") for each timeout: nothing is cut,
    where the sum since + timeout used to wrap and close every connection
    at once (issue 10 #2)."""
    cert, key = make_cert()
    never = ["--threads", "1", "--read-timeout-ms", "never", "--idle-timeout-ms", "never",
             "--write-timeout-ms", "never", "--tls-timeout-ms", "never"]
    srv = Server(never + ["--drain-timeout-ms", "never"])
    tls = Server(never, tls=(cert, key))
    silent = Conn(srv.port)                       # read timeout, before a request
    idle = Conn(srv.port)                         # idle timeout
    idle.send(req("/"))
    check(idle.response()[0] == 200, "first request")
    head = Conn(srv.port)                         # read timeout, in the head
    head.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
    body = Conn(srv.port)                         # read timeout, in the body
    body.send(req("/echo", method="POST", headers=["Content-Length: 10"]) + b"12345")
    # Write timeout: 20 MB exceed what the socket buffers hold until the
    # client reads. (A tiny SO_RCVBUF would stall loopback TCP itself: a
    # window below one MSS is never advertised.)
    reader = Conn(srv.port, timeout=20)
    reader.send(req("/big?20000000"))
    handshake = socket.create_connection(("127.0.0.1", tls.port), timeout=5)  # TLS handshake
    time.sleep(2.0)
    for name, c in (("silent", silent), ("idle", idle), ("partial head", head),
                    ("partial body", body)):
        check(not c.closed_within(0.05) and c.buf == b"",
              "%s connection cut or answered: %r" % (name, c.buf[:80]))
        c.s.settimeout(30)
    silent.send(req("/"))
    check(silent.response()[0] == 200, "silent connection not served")
    idle.send(req("/"))
    check(idle.response()[0] == 200, "idle connection not served")
    head.send(b"\r\n")
    check(head.response()[0] == 200, "partial head not served")
    body.send(b"67890")
    st, h, b, _ = body.response()
    check(st == 200 and b == b"1234567890", "partial body: %d %r" % (st, b))
    rhead = reader.read_until(b"\r\n\r\n")
    check(rhead.startswith(b"HTTP/1.1 200") and b"Content-Length: 20000000" in rhead,
          "slow reader: %r" % rhead[:200])
    got = len(reader.buf)
    reader.buf = b""
    chunk = bytearray(1 << 20)
    while got < 20000000:
        n = reader.s.recv_into(chunk)
        if not n:
            break
        got += n
    check(got == 20000000, "slow reader cut after %d bytes" % got)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    t = ctx.wrap_socket(handshake)
    t.sendall(req("/", headers=["Connection: close"]))
    check(t.recv(12) == b"HTTP/1.1 200", "late TLS handshake not served")
    t.close()
    # Hammer timeout "never": a slow request in flight at SIGTERM completes.
    slow = Conn(srv.port, timeout=10)
    slow.send(req("/defer?2500"))
    time.sleep(0.3)
    srv.signal(signal.SIGTERM)
    st, h, b, _ = slow.response()
    check(st == 200 and b == b"deferred\n", "request in flight: %d %r" % (st, b))
    check(srv.wait_exit(10) == 0, "graceful exit with a hammer timeout of never")
    for c in (silent, idle, head, body, reader, slow):
        c.close()
    # Lame duck "never": /healthz answers 503 until a second SIGTERM.
    lame = Server(["--threads", "1", "--lame-duck-ms", "never"])
    lame.signal(signal.SIGTERM)
    time.sleep(1.0)
    check(get(lame.port, "/healthz")[0] == 503, "lame duck over too early")
    check(get(lame.port, "/")[0] == 200, "not serving in lame duck")
    lame.signal(signal.SIGTERM)
    lame.wait_exit(10)


def vm_data(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


def case_stalled_post():
    """A request's body buffer grows as the body arrives: clients that
    announce a large Content-Length and stall commit what they sent, not
    max_body_bytes each (issue 10 #10)."""
    srv = Server(["--threads", "1", "--max-body", "8000000"])
    pid = srv.p.pid
    get(srv.port, "/")
    time.sleep(0.3)
    before = vm_data(pid)
    n = 40
    head = req("/echo", method="POST", headers=["Content-Length: 8000000"])
    conns = []
    for i in range(n):
        c = Conn(srv.port, timeout=20)
        c.send(head + b"x" * 10000)
        conns.append(c)
    time.sleep(1.0)
    grown = vm_data(pid) - before
    log("  %d stalled POSTs announcing 8 MB each: the server's data grew by %.1f MB"
        % (n, grown / 1e6))
    check(grown < n * 256 * 1024, "%d stalled POSTs of 8 MB commit %.1f MB" % (n, grown / 1e6))
    # A body that does arrive is still read whole.
    c = conns[0]
    c.send(b"y" * (8000000 - 10000))
    st, h, body, _ = c.response()
    check(st == 200 and len(body) == 8000000 and body[:10000] == b"x" * 10000 and
          body[10000:] == b"y" * (8000000 - 10000), "8 MB body: %d, %d bytes" % (st, len(body)))
    for c in conns:
        c.close()


def case_stray_signals():
    """SIGUSR1 and SIGUSR2, which a server does not handle, neither kill
    handoff_http_serve() nor the hello example, nor cut a request in
    flight; each is logged (issue 10 #11)."""
    for binary in (SERVER, HELLO):
        srv = Server(["--threads", "1"], binary=binary)
        c = Conn(srv.port, timeout=10)
        c.send(req("/slow"))
        time.sleep(0.2)
        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR1):
            srv.signal(sig)
            time.sleep(0.1)
        st, h, body, _ = c.response()
        check(st == 200, "%s: request in flight got %d" % (os.path.basename(binary), st))
        c.close()
        check(srv.p.poll() is None, "%s died of a stray signal (status %s)"
              % (os.path.basename(binary), srv.p.returncode))
        check(get(srv.port, "/")[0] == 200, "not serving after the signals")
        text = srv.logtext()
        check("SIGUSR1 from pid %d ignored" % os.getpid() in text and
              "SIGUSR2 from pid %d ignored" % os.getpid() in text, "not logged: %r" % text[-300:])
        srv.signal(signal.SIGTERM)
        check(srv.wait_exit(10) == 0, "shutdown after the signals")



def case_on_signal():
    """With handoff_http_serve_options.on_signal, SIGUSR1 and SIGUSR2 go
    to the application's callback, on the thread that called
    handoff_http_serve() (not in a signal handler), instead of the warning;
    the server keeps serving, a request in flight included."""
    srv = Server(["--threads", "1", "--on-signal", "tag42"])
    c = Conn(srv.port, timeout=10)
    c.send(req("/slow"))
    time.sleep(0.2)
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        srv.signal(sig)
        time.sleep(0.1)
    st = c.response()[0]
    check(st == 200, "request in flight got %d" % st)
    c.close()
    wait_until(lambda: "on_signal: %d tag42" % signal.SIGUSR2 in srv.logtext(), 10,
               "on_signal for SIGUSR2")
    text = srv.logtext()
    check("on_signal: %d tag42 main" % signal.SIGUSR1 in text, "SIGUSR1 not passed: %r" % text[-300:])
    check("other" not in text and "ignored" not in text, "wrong thread or warned: %r" % text[-300:])
    check(srv.p.poll() is None, "died of a signal (status %s)" % srv.p.returncode)
    check(get(srv.port, "/")[0] == 200, "not serving after the signals")
    srv.signal(signal.SIGTERM)
    check(srv.wait_exit(10) == 0, "shutdown after the signals")

def setup(args):
    global SERVER, HELLO
    SERVER, HELLO = args.server, args.hello


if __name__ == "__main__":
    T.main(globals(), paths=["server", "hello"], timeout=120, setup=setup)

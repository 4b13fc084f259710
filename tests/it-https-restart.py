#!/usr/bin/env python3
"""HTTPS restarts under load, and certificate rotation by restart.

The shared restart-under-load harness speaks plain HTTP only, so this is its
HTTPS counterpart: hello serves TLS (a throw-away self-signed certificate),
wrk loads it over https with keep-alive while it is restarted with SIGHUP,
and one 2 s /slow request is issued just before each restart. Asserts zero
wrk socket errors and non-2xx responses, every slow request completed, and
that a restart picks up a certificate replaced on disk (the new generation
loads it at start-up) while the listening socket stays the same.

Usage: it-https-restart.py --hello PATH [--restarts N] [--seconds S] restart
"""
import os
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
from handofftest import alive, fail, read_pid, wait_until  # noqa: E402

ARGS = None  # --hello, --restarts, --seconds (set by the runner)


def make_cert(d, cn):
    key, crt = os.path.join(d, cn + ".key"), os.path.join(d, cn + ".crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=%s" % cn, "-keyout", key, "-out", crt],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return key, crt


def peer_cn(port):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])  # the server must pick http/1.1
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s) as t:
            der = t.getpeercert(binary_form=True)
            alpn = t.selected_alpn_protocol()
    pem = ssl.DER_cert_to_PEM_cert(der)
    out = subprocess.run(["openssl", "x509", "-noout", "-subject"], input=pem.encode(),
                         capture_output=True, check=True).stdout.decode()
    return out.strip().split("CN", 1)[1].strip(" =\n"), alpn


def listen_inode(port):
    """The inode of the socket listening on 127.0.0.1:port (/proc/net/tcp)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[1].endswith(":%04X" % port) and parts[3] == "0A":
                return parts[9]
    return None


def slow_get(port, results):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            with ctx.wrap_socket(s) as t:
                t.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    b = t.recv(65536)
                    if not b:
                        break
                    data += b
        results.append(data.startswith(b"HTTP/1.1 200"))
    except (OSError, ssl.SSLError) as e:
        results.append(False)
        print("slow request failed: %s" % e, flush=True)


@T.case(serial=True)  # a load test: alone on the machine
def case_restart(tmp):
    a = ARGS
    T.need_tools("wrk", "openssl")
    procs = []
    try:
        key1, crt1 = make_cert(tmp, "first")
        key2, crt2 = make_cert(tmp, "second")
        key, crt = os.path.join(tmp, "server.key"), os.path.join(tmp, "server.crt")
        shutil.copy(key1, key)
        shutil.copy(crt1, crt)
        port = T.free_port()
        pidfile = os.path.join(tmp, "hello.pid")
        log = open(os.path.join(tmp, "hello.log"), "w")
        p = subprocess.Popen([os.path.abspath(a.hello), "--listen", "127.0.0.1:%d" % port,
                              "--tls-cert", crt, "--tls-key", key, "--pid-file", pidfile],
                             stdout=log, stderr=log, start_new_session=True)
        procs.append(p.pid)
        pid = wait_until(lambda: (lambda q: q if q and alive(q) else 0)(read_pid(pidfile)), 10,
                         "the server")
        cn, alpn = peer_cn(port)
        if cn != "first" or alpn != "http/1.1":
            fail("serving CN=%s ALPN=%s" % (cn, alpn))
        sock_inode = listen_inode(port)
        wrk = T.wrk.start("https://127.0.0.1:%d/" % port, a.seconds, extra=("--timeout", "5s"))
        slow = []
        threads = []
        gap = a.seconds / (a.restarts + 1)
        for i in range(a.restarts):
            time.sleep(max(0.0, gap - 0.3))
            t = threading.Thread(target=slow_get, args=(port, slow), daemon=True)
            t.start()
            threads.append(t)
            time.sleep(0.3)
            if i == a.restarts - 1:
                # Rotate the certificate on disk: the next generation loads it.
                shutil.copy(key2, key + ".new")
                shutil.copy(crt2, crt + ".new")
                os.replace(key + ".new", key)
                os.replace(crt + ".new", crt)
            old = pid
            os.kill(old, signal.SIGHUP)
            pid = wait_until(lambda: (lambda q: q if q != old and alive(q) else 0)(
                read_pid(pidfile)), 15, "restart %d" % (i + 1))
            procs.append(pid)
        out = wrk.communicate(timeout=a.seconds + 30)[0]
        for t in threads:
            t.join(timeout=15)
        w = T.wrk.parse(out)
        reqs, errs, non2xx = w["requests"], w["socket_errors"], w["non2xx"]
        cn2, _ = peer_cn(port)
        inode2 = listen_inode(port)
        print("https: %d requests over %d restarts, %d socket errors, %d non-2xx, slow %d/%d ok, "
              "certificate after rotation: CN=%s, listening socket %s -> %s"
              % (reqs, a.restarts, errs, non2xx, sum(slow), len(slow), cn2, sock_inode, inode2),
              flush=True)
        if reqs == 0 or errs or non2xx:
            fail("wrk saw failures:\n%s" % out)
        if len(slow) != a.restarts or not all(slow):
            fail("slow requests: %s" % slow)
        if cn2 != "second":
            fail("the restart did not load the rotated certificate (CN=%s)" % cn2)
        if inode2 != sock_inode:
            fail("the listening socket changed across restarts")
    finally:
        T.kill_pids(procs)


def add_args(ap):
    ap.add_argument("--restarts", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=12)


if __name__ == "__main__":
    T.main(globals(), paths=["hello"], timeout=300, add_args=add_args)

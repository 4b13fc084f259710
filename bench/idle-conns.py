#!/usr/bin/env python3
"""idle-conns: user-space memory a server spends per idle keep-alive
connection.

Reads the server's memory (Rss, Pss and Private = Private_Clean +
Private_Dirty from /proc/PID/smaps_rollup, summed over the process named by
--pidfile and all its descendants, e.g. nginx's master and workers), opens
--conns connections to 127.0.0.1:--port, does one keep-alive GET on each
(reads the whole response) and holds them all open and idle, reads the
memory again after --settle seconds, checks that every connection is still
open, and closes them all (with RST, so that no TIME_WAIT is left behind).
Non-blocking sockets on one epoll selector, at most --batch connecting or
waiting for their response at a time; the whole run is bounded by
--timeout seconds.

  bench/idle-conns.py --port 28100 --pidfile /run/x.pid [--conns 10000]

Prints one JSON line: memory before/after and the difference per
connection (bytes), for each of rss, pss, private. Kernel memory (socket
buffers, struct sock) is not user-space memory and is not counted.
"""
import argparse
import json
import os
import selectors
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchcommon as bc  # noqa: E402

REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def complete(buf):
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    clen = 0
    for line in buf[:end].split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            clen = int(v.strip())
    return len(buf) >= end + 4 + clen


def server_pids(pidfile):
    p = bc.read_pid(pidfile)
    if not bc.alive(p):
        raise SystemExit("pid file %s names no live process" % pidfile)
    return [p] + [c for c in bc.descendants(p) if bc.alive(c)]


def open_all(port, n, batch, deadline):
    sel = selectors.DefaultSelector()
    done, pending, bufs = [], 0, {}
    opened = 0
    failures = 0
    while len(done) < n:
        if time.monotonic() > deadline:
            raise SystemExit("timed out with %d of %d connections set up" % (len(done), n))
        while opened < n and pending < batch:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            sel.register(s, selectors.EVENT_WRITE, "connecting")
            opened += 1
            pending += 1
        for key, _ev in sel.select(timeout=0.1):
            s = key.fileobj
            if key.data == "connecting":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    failures += 1
                    sel.unregister(s)
                    s.close()
                    pending -= 1
                    opened -= 1  # try again
                    if failures > n // 10 + 100:
                        raise SystemExit("too many failed connects (last errno %d)" % err)
                    continue
                s.send(REQ)
                bufs[s] = b""
                sel.modify(s, selectors.EVENT_READ, "reading")
            else:
                try:
                    chunk = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    raise SystemExit("the server closed a connection before responding")
                bufs[s] += chunk
                if complete(bufs[s]):
                    if not bufs[s].startswith(b"HTTP/1.1 200"):
                        raise SystemExit("unexpected response: %r" % bufs[s][:40])
                    del bufs[s]
                    sel.unregister(s)
                    done.append(s)
                    pending -= 1
    sel.close()
    return done, failures


def still_open(socks):
    n = 0
    for s in socks:
        try:
            if s.recv(1, socket.MSG_PEEK) == b"":
                continue  # EOF: the server closed it
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=90.0)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    if not 1 <= a.conns <= 30000:
        ap.error("--conns in 1..30000")
    bc.raise_nofile(a.conns + 1024)
    deadline = time.monotonic() + a.timeout
    time.sleep(a.settle)
    pids = server_pids(a.pidfile)
    before = bc.memory(pids)
    t0 = time.monotonic()
    socks, failures = open_all(a.port, a.conns, a.batch, deadline)
    setup_s = time.monotonic() - t0
    time.sleep(a.settle)
    pids_after = server_pids(a.pidfile)
    after = bc.memory(pids_after)
    n_open = still_open(socks)
    linger = struct.pack("ii", 1, 0)
    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        except OSError:
            pass
        s.close()
    res = {"tool": "idle-conns", "label": a.label, "conns": a.conns, "open_at_measure": n_open,
           "connect_retries": failures, "setup_s": round(setup_s, 2),
           "procs_before": len(pids), "procs_after": len(pids_after),
           "before": before, "after": after,
           "per_conn": {k: round((after[k] - before[k]) / a.conns, 1) for k in before}}
    if n_open != a.conns:
        res["error"] = "only %d of %d connections still open at the measurement" % (n_open,
                                                                                   a.conns)
    sys.stderr.write("idle-conns %s: %d conns, per connection: pss %.0f B, private %.0f B, "
                     "rss %.0f B\n" % (a.label, a.conns, res["per_conn"]["pss"],
                                       res["per_conn"]["private"], res["per_conn"]["rss"]))
    print(json.dumps(res))
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Throughput of the HTTP example `hello` run directly vs under `handoff run`.

The supervisor is not in the data path (the worker accepts on the shared
socket itself), so the two should be within noise. Both servers run side by
side on 127.0.0.1; wrk loads one at a time, alternating, for --rounds rounds
of --duration seconds each; the medians and their ratio are printed, and one
JSON line with everything.

  bench/supervisor-overhead.py --handoff build/tools/handoff \
      --hello build/examples/hello [--rounds 7 --duration 5]

Every run is bounded (wrk -d); everything started is killed at the end.
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time


# free_port and wrk's summary: the one copy in tests/lib.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))
from handofftest.proc import free_port  # noqa: E402
from handofftest.wrk import parse as wrk_summary  # noqa: E402


def wait_http(port, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"server on port {port} did not answer")


def wrk(port, args):
    pin = ["taskset", "-c", "1"] if args.pin else []
    out = subprocess.run(pin + ["wrk", "-t", str(args.wrk_threads), "-c", str(args.connections),
                          "-d", f"{args.duration}s", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, timeout=args.duration + 30).stdout
    r = wrk_summary(out)
    if not r["rps"]:
        sys.exit("wrk printed no rate:\n" + out)
    return r["rps"], r["failed"]


def cpu_seconds(pid):
    """utime + stime of pid (not its children), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--handoff", required=True)
    ap.add_argument("--hello", required=True)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("--server-threads", type=int, default=1)
    ap.add_argument("--pin", action="store_true",
                    help="servers on CPU 0, wrk on CPU 1 (taskset), for steadier numbers")
    args = ap.parse_args()
    if not 1 <= args.rounds <= 50 or not 1 <= args.duration <= 60:
        sys.exit("--rounds 1..50, --duration 1..60")

    tmp = tempfile.mkdtemp(prefix="sup-overhead-")
    direct_port, sup_port = free_port(), free_port()
    hello = [args.hello, "--threads", str(args.server_threads)]
    pin = ["taskset", "-c", "0"] if args.pin else []
    procs = []
    try:
        devnull = open(os.devnull, "w")
        procs.append(subprocess.Popen(pin + hello + ["--listen", f"127.0.0.1:{direct_port}"],
                                      stdout=devnull, stderr=devnull, start_new_session=True))
        procs.append(subprocess.Popen(pin + [args.handoff, "run", "-q", "--control", f"{tmp}/ctl.sock",
                                       "--listen", f"127.0.0.1:{sup_port}", "--"] + hello +
                                      ["--listen", f"127.0.0.1:{sup_port}"],
                                      stdout=devnull, stderr=devnull, start_new_session=True))
        wait_http(direct_port)
        wait_http(sup_port)
        res = {"direct": [], "supervised": []}
        sup_cpu0 = cpu_seconds(procs[1].pid)
        bad = 0
        for r in range(args.rounds):
            order = [("direct", direct_port), ("supervised", sup_port)]
            if r % 2:
                order.reverse()
            for name, port in order:
                rps, b = wrk(port, args)
                bad += b
                res[name].append(rps)
                print(f"round {r + 1}/{args.rounds} {name:10s} {rps:10.0f} req/s", flush=True)
        sup_cpu = cpu_seconds(procs[1].pid) - sup_cpu0
        md, ms = statistics.median(res["direct"]), statistics.median(res["supervised"])
        ratio = ms / md
        # Each round measures both back to back, so the per-round ratio is
        # less sensitive to slow drift in what else the machine runs.
        pair = statistics.median(s / d for s, d in zip(res["supervised"], res["direct"]))
        print(f"median direct     {md:10.0f} req/s")
        print(f"median supervised {ms:10.0f} req/s")
        print(f"ratio of medians supervised/direct {ratio:.4f} ({(ratio - 1) * 100:+.2f}%)")
        print(f"median of per-round ratios         {pair:.4f} ({(pair - 1) * 100:+.2f}%)")
        print(f"CPU time of the supervisor process itself during all rounds: {sup_cpu:.2f} s")
        print(f"failed responses {bad}")
        print(json.dumps({"rounds": args.rounds, "duration_s": args.duration,
                          "connections": args.connections, "wrk_threads": args.wrk_threads,
                          "server_threads": args.server_threads, "pinned": args.pin, "direct_rps": res["direct"],
                          "supervised_rps": res["supervised"], "median_direct": md,
                          "median_supervised": ms, "ratio": round(ratio, 4),
                          "median_round_ratio": round(pair, 4),
                          "supervisor_cpu_s": round(sup_cpu, 3), "failed": bad}))
        return 0 if bad == 0 else 1
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(35)
            except (OSError, subprocess.TimeoutExpired):
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass


if __name__ == "__main__":
    sys.exit(main())

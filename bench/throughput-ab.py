#!/usr/bin/env python3
"""throughput-ab: two builds of examples/hello side by side (a change's
before and after), with nginx as the yardstick, interleaved rounds.

  bench/throughput-ab.py --a OLD/examples/hello --b NEW/examples/hello
      [--workers 1,2] [--rounds 7] [--seconds 4] [--peers ../shared/bench/peers]

Each round runs `wrk -t2 -c64 -dSs --latency` (after a 1 s warm-up) against
every configuration, in an order that alternates between rounds. Prints a
table on stderr and one JSON line on stdout: per configuration the median
requests/s and p99, and per worker count the ratio b/a (requests/s) with
the median of its per-round ratios. Everything runs on 127.0.0.1 and is
bounded in time.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import benchcommon as bc  # noqa: E402


def wrk(port, seconds):
    out = subprocess.run(["wrk", "-t2", "-c64", "-d%ds" % seconds, "--timeout", "2s", "--latency",
                          "http://127.0.0.1:%d/" % port], capture_output=True, text=True,
                         timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)] if m else None
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": rps, "p99_ms": p99, "errors": sum(map(int, e.groups())) if e else 0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, help="hello binary before the change")
    ap.add_argument("--b", required=True, help="hello binary after the change")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--port", type=int, default=28900)
    ap.add_argument("--peers", default=os.path.join(os.path.dirname(os.path.dirname(BENCH)),
                                                    "shared", "bench", "peers"))
    a = ap.parse_args()
    bc.set_subreaper()
    workers = [int(w) for w in a.workers.split(",")]
    configs = [(k, w) for w in workers for k in ("a", "b", "nginx")]
    runs = []
    servers = {}
    port = a.port
    with tempfile.TemporaryDirectory(prefix="throughput-ab.") as rundir:
        try:
            for k, w in configs:
                hello = {"a": a.a, "b": a.b}.get(k)
                servers[(k, w)] = bc.Server("hello" if hello else "nginx", port, w, rundir,
                                            hello=hello, peers=a.peers).start()
                port += 10
            for r in range(a.rounds):
                order = configs if r % 2 == 0 else list(reversed(configs))
                for k, w in order:
                    s = servers[(k, w)]
                    wrk(s.port, 1)
                    m = wrk(s.port, a.seconds)
                    m.update(config=k, workers=w, round=r + 1)
                    runs.append(m)
                    bc.log("%s/%d round %d: %.0f req/s, p99 %s ms, errors %d" % (
                        k, w, r + 1, m["rps"], m["p99_ms"], m["errors"]))
        finally:
            for s in servers.values():
                s.stop()
            bc.kill_descendants()
    summary = {}
    sys.stderr.write("\n| workers | a req/s | b req/s | nginx req/s | b/a | median per-round b/a | "
                     "b/nginx | a p99 | b p99 | errors |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
    for w in workers:
        by = {k: sorted((x for x in runs if x["config"] == k and x["workers"] == w),
                        key=lambda x: x["round"]) for k in ("a", "b", "nginx")}
        med = {k: statistics.median(x["rps"] for x in v) for k, v in by.items()}
        p99 = {k: statistics.median(x["p99_ms"] for x in v if x["p99_ms"] is not None)
               for k, v in by.items()}
        per_round = [y["rps"] / x["rps"] for x, y in zip(by["a"], by["b"])]
        errors = sum(x["errors"] for v in by.values() for x in v)
        summary[str(w)] = {"rps": med, "p99_ms": p99, "b_over_a": med["b"] / med["a"],
                           "b_over_a_per_round": [round(x, 3) for x in per_round],
                           "b_over_nginx": med["b"] / med["nginx"], "errors": errors}
        sys.stderr.write("| %d | %.0f | %.0f | %.0f | %.3f | %.3f | %.3f | %.2f | %.2f | %d |\n" % (
            w, med["a"], med["b"], med["nginx"], med["b"] / med["a"], statistics.median(per_round),
            med["b"] / med["nginx"], p99["a"], p99["b"], errors))
    print(json.dumps({"tool": "throughput-ab", "rounds": a.rounds, "seconds": a.seconds,
                      "runs": runs, "summary": summary}))


if __name__ == "__main__":
    main()

"""report: docs/benchmarks.md and docs/img/*.png from bench/run-all's
results (a dict, as in build-bench/results/results.json). gnuplot draws
the plots (pngcairo)."""
import os
import re
import statistics
import subprocess
import tempfile

SYS_LABEL = {
    "handoff": "handoff (hello, SIGHUP)",
    "nginx-reload": "nginx reload (HUP)",
    "nginx-upgrade": "nginx binary upgrade (USR2, WINCH, QUIT)",
    "haproxy": "HAProxy 2.6 reload (-W master-worker, USR2, expose-fd listeners)",
}
SYS_SHORT = {"handoff": "handoff", "nginx-reload": "nginx reload",
             "nginx-upgrade": "nginx upgrade", "haproxy": "HAProxy reload"}
ORDER = ["handoff", "nginx-reload", "nginx-upgrade", "haproxy"]
COLORS = {"handoff": "#1b7837", "hello": "#1b7837", "nginx": "#2166ac", "haproxy": "#b2182b",
          "h2o": "#e08214"}
TERM = 'set terminal pngcairo size %d,%d font ",10" noenhanced'


def rounds(n):
    return "%d round%s" % (n, "" if n == 1 else "s")


def f0(x):
    return "–" if x is None else "{:,.0f}".format(x)


def f2(x):
    return "–" if x is None else "%.2f" % x


def f3(x):
    return "–" if x is None else ("%.3f" % x if x < 10 else "%.1f" % x)


def rx(x):
    return "–" if x is None else "%.2f×" % x


def gnuplot(script, cwd):
    p = subprocess.run(["gnuplot"], input=script, text=True, cwd=cwd, capture_output=True,
                       timeout=120)
    if p.returncode:
        raise SystemExit("gnuplot failed: %s\n--- script:\n%s" % (p.stderr, script))


# ---------------------------------------------------------------------------
# plots


def plot_throughput(t, img, tmp):
    s = t["summary"]
    with open(os.path.join(tmp, "tp.dat"), "w") as f:
        for w in (1, 2):
            h, n = s["hello-%d" % w], s["nginx-%d" % w]
            f.write('"%d worker%s" %f %f %f %f %f %f\n' % (
                w, "s" if w > 1 else "", h["rps"], h["rps_min"], h["rps_max"],
                n["rps"], n["rps_min"], n["rps_max"]))
    with open(os.path.join(tmp, "lat.dat"), "w") as f:
        for w in (1, 2):
            h, n = s["hello-%d" % w], s["nginx-%d" % w]
            f.write('"p50, %d w" %f %f\n' % (w, h["p50_ms"], n["p50_ms"]))
            f.write('"p99, %d w" %f %f\n' % (w, h["p99_ms"], n["p99_ms"]))
    gnuplot("""%s
set output '%s/throughput.png'
set multiplot layout 1,2 title "Steady state, wrk -t2 -c64 keep-alive, GET / (13-byte body); medians of %d interleaved rounds"
set style data histogram
set style histogram errorbars gap 2 lw 1
set style fill solid 0.8 border -1
set key top left
set grid ytics
set format y '%%.0s%%c'
set yrange [0:%f]
set title "requests/s (bars: median, whiskers: min-max)"
plot 'tp.dat' using 2:3:4:xtic(1) title 'handoff hello' lc rgb '%s', \
     '' using 5:6:7 title 'nginx' lc rgb '%s'
set style histogram clustered gap 2
set format y '%%g'
set yrange [0:*]
set title "latency (ms), median of the rounds' p50 and p99"
plot 'lat.dat' using 2:xtic(1) title 'handoff hello' lc rgb '%s', \
     '' using 3 title 'nginx' lc rgb '%s'
unset multiplot
""" % (TERM % (1100, 450), img, t["rounds"],
       1.25 * max(s["%s-%d" % (k, w)]["rps_max"] for k in ("hello", "nginx") for w in (1, 2)),
       COLORS["handoff"], COLORS["nginx"],
       COLORS["handoff"], COLORS["nginx"]), tmp)


def plot_series(sr, img, tmp):
    keys = [k for k in ORDER if any(r["key"] == k for r in sr["runs"])]
    nr = sr["rounds"]
    ymax = 0
    for r in sr["runs"]:
        with open(r["csv"]) as src, \
                open(os.path.join(tmp, "s-%s-%d.dat" % (r["key"], r["round"])), "w") as dst:
            for line in src:
                if line[0].isdigit():
                    v = line.strip().split(",")
                    rps = int(v[1]) * 1000 / sr["bucket_ms"]
                    ymax = max(ymax, rps)
                    # bucket midpoints; failures per bucket
                    dst.write("%.3f %.1f %s\n" % (float(v[0]) + sr["bucket_ms"] / 2000, rps, v[2]))
    rounds_txt = "round 1 dark, round 2 light, " if nr == 2 else \
        ("rounds 1..%d, dark to light, " % nr if nr > 2 else "")
    parts = [TERM % (1100, 260 * len(keys) + 80),
             "set output '%s/restarts.png'" % img,
             'set multiplot layout %d,1 title "Requests/s in 100 ms buckets (tsload, 64 keep-alive '
             'connections; %sthe same restart times)\\ndashed: restart triggers; red: failed '
             'requests per bucket (right axis)"' % (len(keys), rounds_txt),
             "set grid ytics", "set yrange [0:%d]" % int(ymax * 1.1 + 1),
             "set y2range [0:*]", "set y2tics", "set ytics nomirror",
             "set ylabel 'req/s'", "set y2label 'failed'", "set key off",
             "set xrange [0:%g]" % sr["duration_s"], "set format y '%.0s%c'"]
    shades = {"handoff": ["#1b7837", "#7fbf7b", "#c2e699"],
              "nginx": ["#2166ac", "#92c5de", "#d1e5f0"],
              "haproxy": ["#b2182b", "#f4a582", "#fddbc7"]}
    for i, k in enumerate(keys):
        runs = sorted((r for r in sr["runs"] if r["key"] == k), key=lambda r: r["round"])
        parts.append("unset arrow")
        for x in runs[0]["restarts"]:
            parts.append("set arrow from %.3f, graph 0 to %.3f, graph 1 nohead dt 2 lc rgb '#777777'"
                         % (x["t_s"], x["t_s"]))
        parts.append("set title \"%s: %d restarts x %d, %d failed requests\"" % (
            SYS_LABEL[k], len(runs[0]["restarts"]), len(runs), sum(r["failed"] for r in runs)))
        parts.append("set xlabel '%s'" % ("seconds" if i == len(keys) - 1 else ""))
        fam = "handoff" if k == "handoff" else "nginx" if k.startswith("nginx") else "haproxy"
        plots = []
        for j, r in enumerate(reversed(runs)):  # round 1 drawn last, on top
            color = shades[fam][min(len(runs) - 1 - j, 2)]
            plots.append("'s-%s-%d.dat' using 1:2 with lines lw 1.5 lc rgb '%s'"
                         % (k, r["round"], color))
        for r in runs:
            plots.append("'s-%s-%d.dat' using 1:3 axes x1y2 with impulses lw 3 lc rgb '#e41a1c'"
                         % (k, r["round"]))
        parts.append("plot " + ", ".join(plots))
    parts.append("unset multiplot")
    gnuplot("\n".join(parts) + "\n", tmp)


def plot_latency(lt, img, tmp):
    series = [("hello", "pid_file_ms", "handoff hello: SIGHUP -> pid file names the new, ready generation",
               COLORS["handoff"]),
              ("nginx", "pid_file_ms", "nginx: USR2 -> pid file names the new master", "#92c5de"),
              ("nginx", "workers_ms", "nginx: USR2 -> the workers of the new master are up",
               COLORS["nginx"])]
    plots = []
    for i, (who, field, title, color) in enumerate(series):
        xs = sorted(r[field] for r in lt[who])
        with open(os.path.join(tmp, "lat%d.dat" % i), "w") as f:
            for j, x in enumerate(xs):
                f.write("%f %f\n" % (x, (j + 1) / len(xs)))
        plots.append("'lat%d.dat' using 1:2 with steps lw 2 lc rgb '%s' title '%s'"
                     % (i, color, title))
    gnuplot("""%s
set output '%s/restart-latency.png'
set title "Restart trigger -> successor ready, %d restarts each, interleaved, idle servers, %d workers (CDF)"
set xlabel 'milliseconds'
set ylabel 'fraction of restarts'
set grid
set key below
set xlabel offset 0,0.5
set yrange [0:1.02]
set xrange [0:*]
plot %s
""" % (TERM % (900, 450), img, lt["restarts"], lt["workers"], ", ".join(plots)), tmp)


MEM_LABEL = {"hello": "handoff hello", "nginx": "nginx", "h2o": "h2o"}


def plot_memory(m, img, tmp):
    s = m["summary"]
    servers = m.get("servers", ["hello", "nginx"])
    with open(os.path.join(tmp, "mem.dat"), "w") as f:
        for mode, label in (("plain", "HTTP"), ("tls", "HTTPS")):
            f.write('"%s" %s\n' % (label, " ".join("%f" % s["%s-%s" % (k, mode)]["pss"]
                                                   for k in servers)))
    top = max(s["%s-%s" % (k, mode)]["pss"] for k in servers for mode in ("plain", "tls"))
    plots = ", ".join("'mem.dat' using %d%s title '%s' lc rgb '%s'" % (
        i + 2, ":xtic(1)" if i == 0 else "", MEM_LABEL[k], COLORS.get(k, "#777777"))
        for i, k in enumerate(servers))
    gnuplot("""%s
set output '%s/idle-memory.png'
set title "User-space memory per idle keep-alive connection (Pss delta / connections)"
set style data histogram
set style histogram clustered gap 2
set style fill solid 0.8 border -1
set ylabel 'bytes per connection'
set logscale y
set grid ytics
set yrange [50:%f]
set key top left
plot %s
""" % (TERM % (700, 420), img, 3 * top, plots), tmp)


# ---------------------------------------------------------------------------
# page


def md_throughput(t):
    s = t["summary"]
    out = ["## 1. Steady-state throughput and latency", "",
           "`wrk -t2 -c64 -d%ds --latency http://127.0.0.1:PORT/` (keep-alive), one warm-up "
           "second before each measurement, %d rounds; in each round every configuration is "
           "measured once, interleaved (A B C D, then B A D C, ...), all servers running side by "
           "side. hello: `hello --threads N` (Release build); nginx: the shared harness's "
           "`peers/nginx/start` (`return 200 \"Hello, World!\"`, `access_log off`, "
           "`worker_processes N`). Medians of the rounds; ratio = handoff / nginx "
           "(requests/s: > 1 means handoff is faster; latency: < 1 means handoff is faster). "
           "The median of the per-round ratios pairs each measurement with the one taken "
           "right next to it, so it is the less noise-sensitive of the two."
           % (t["duration_s"], t["rounds"]), "",
           "| workers | handoff req/s | nginx req/s | ratio | median of per-round ratios | "
           "rounds handoff faster | handoff p50 | nginx p50 | ratio | handoff p99 | nginx p99 | "
           "ratio | errors (h/n) |",
           "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for w in (1, 2):
        h, n, r = s["hello-%d" % w], s["nginx-%d" % w], s["ratio-%d" % w]
        out.append("| %d | %s | %s | **%s** | %s | %d of %d | %s ms | %s ms | %s | %s ms | %s ms | "
                   "%s | %d / %d |"
                   % (w, f0(h["rps"]), f0(n["rps"]), rx(r["rps"]),
                      rx(statistics.median(r["rps_per_round"])), r["hello_faster_rounds"],
                      len(r["rps_per_round"]), f3(h["p50_ms"]), f3(n["p50_ms"]), rx(r["p50"]),
                      f3(h["p99_ms"]), f3(n["p99_ms"]), rx(r["p99"]), h["errors"], n["errors"]))
    out += ["", "Per-round requests/s ratios (handoff / nginx): " + "; ".join(
        "%d worker%s: %s" % (w, "s" if w > 1 else "",
                             ", ".join("%.2f" % x for x in s["ratio-%d" % w]["rps_per_round"]))
        for w in (1, 2)) + ".", "", "![throughput and latency](img/throughput.png)", ""]
    return out


def md_series(sr):
    out = ["## 2. Requests per second across restarts", "",
           "Each system is started fresh with %d workers and loaded for %d s by `bench/tsload` "
           "(64 keep-alive connections on 2 threads, one request in flight on each, like wrk), "
           "while `bench/run-all` triggers a restart at %s s. %s, the systems "
           "interleaved; the plot shows every round." % (
               sr["workers"], sr["duration_s"], ", ".join("%g" % x for x in sr["restart_at_s"]),
               rounds(sr["rounds"])), "",
           "Why a custom client: wrk only reports totals, and its Lua scripting has no wall "
           "clock, so it cannot say *when* requests failed or throughput dipped. Running wrk in "
           "consecutive 1 s slices (`-d1s`) would reconnect all 64 connections every second and "
           "lose the requests in flight at each slice boundary, which is neither steady "
           "keep-alive load nor 1 s-accurate. `bench/tsload.c` (~300 lines of C, epoll) keeps "
           "the same connections for the whole run and counts every completed and failed "
           "request into 100 ms buckets of `CLOCK_MONOTONIC`, the clock the restarts are "
           "time-stamped with, so the restart lines sit exactly where they happened. It counts "
           "failures the way wrk does: *connect* (refused/reset while connecting, retried after "
           "10 ms), *read* (the connection closed or was reset with a request outstanding), "
           "*timeout* (no response in 2 s), *non-2xx*.", "",
           "![requests per second across restarts](img/restarts.png)", "",
           "| system | round | restarts ok | restart command (median) | requests ok | failed | "
           "connect | read | timeout | non-2xx | lowest 100 ms bucket / median |",
           "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for k in ORDER:
        for r in sorted((x for x in sr["runs"] if x["key"] == k), key=lambda x: x["round"]):
            cmd = sorted(x["cmd_ms"] for x in r["restarts"])
            out.append("| %s | %d | %d/%d | %s ms | %s | **%s** | %s | %s | %s | %s | %.0f%% |" % (
                SYS_SHORT[k], r["round"], r["restarts_ok"], len(r["restarts"]),
                f0(cmd[len(cmd) // 2]) if cmd else "–", f0(r["ok"]),
                f0(r["failed"]), f0(r["connect"]), f0(r["read"]), f0(r["timeout"]),
                f0(r["non2xx"]), 100 * r["min_bucket_rps"] / r["median_bucket_rps"]))
    out += ["", "The dashed lines are the triggers (SIGHUP, HUP, USR2). The restart command of "
            "the nginx binary upgrade (`peers/nginx/restart-upgrade`) returns only after the new "
            "master's workers are up, WINCH and QUIT were sent to the old master and it has "
            "exited, hence its duration above; its failures come at the WINCH/QUIT, a few "
            "hundred ms after the line. The last column is the lowest throughput of a 100 ms "
            "bucket (the first and the last excluded) relative to the run's median bucket: a "
            "rough measure of the dip, noisy on a shared machine. The rounds of one system ran "
            "minutes apart: a level that differs between them for many seconds, across "
            "restarts, is other load on the machine, not the restarts.", ""]
    return out


def md_harness(h):
    out = ["### Failed requests, shared harness (authoritative)", "",
           "`restart-under-load` from the shared harness, `--strict` off: wrk -t2 -c64 for %d s, "
           "%d restarts evenly spaced, one 2 s request to `/slow` issued 0.3 s before each "
           "restart (must complete with 200), and an independent probe (200 req/s, a new "
           "connection per request). %s, systems interleaved; each row is one run. "
           "*Failed* = wrk socket errors + wrk non-2xx + probe failures + failed slow requests."
           % (h["duration_s"], h["restarts"], rounds(h["rounds"])), "",
           "| system | round | wrk requests | wrk socket errors (connect/read/write/timeout) | "
           "non-2xx | probe failures | slow failed | restarts done | max probe gap | **failed** |",
           "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    tot = {}
    for k in ORDER:
        for j in sorted((x for x in h["runs"] if x["key"] == k), key=lambda x: x["round"]):
            se = j["socket_errors"]
            failed = j["wrk_failed"] + j["probe_failures"] + j["slow_failed_n"]
            tot[k] = tot.get(k, 0) + failed
            out.append("| %s | %d | %s | %d (%d/%d/%d/%d) | %d | %d%s | %d/%d | %d/%d | %.0f ms | **%s** |"
                       % (SYS_SHORT[k], j["round"], f0(j["requests"]), sum(se.values()),
                          se["connect"], se["read"], se["write"], se["timeout"], j["non2xx"],
                          j["probe_failures"],
                          (" " + ", ".join("%s %d" % kv for kv in j["probe_failure_kinds"].items()))
                          if j["probe_failure_kinds"] else "",
                          j["slow_failed_n"], j["slow_total"], j["restarts_done"],
                          j["restarts_planned"], j["probe_max_gap_ms"], f0(failed)))
    out += ["", "Total failed requests over all rounds: " + ", ".join(
        "%s **%s**" % (SYS_SHORT[k], f0(tot[k])) for k in ORDER if k in tot) + ".", ""]
    return out


def md_latency(lt):
    s = lt["summary"]
    out = ["## 3. Restart trigger → successor ready", "",
           "`bench/restart-latency.py`: %d restarts of each, interleaved (hello, nginx, nginx, "
           "hello, ...), both idle, %d workers. Observed the same way for both, by polling from "
           "outside every 0.5 ms: for handoff, SIGHUP → the pid file names the new generation "
           "(libhandoff rewrites it only once the new process has passed the readiness "
           "handshake, i.e. its listeners and worker threads are up; the sd_notify "
           "`MAINPID=`/`READY=1` that precedes it is shown too); for nginx, USR2 → the pid file "
           "names the new master (configuration parsed, listeners inherited), and → all its "
           "workers exist and have set their process title, when it can serve. nginx then still "
           "needs WINCH and QUIT to the old master (not timed); handoff's old generation drains "
           "by itself." % (lt["restarts"], lt["workers"]), "",
           "| | median | p90 | max |", "|---|--:|--:|--:|"]
    rows = [("handoff: SIGHUP → sd_notify READY (MAINPID)", "hello_notify_ms"),
            ("handoff: SIGHUP → pid file rewritten (ready)", "hello_pid_file_ms"),
            ("nginx: USR2 → pid file rewritten (new master)", "nginx_pid_file_ms"),
            ("nginx: USR2 → new workers up", "nginx_workers_ms")]
    for label, k in rows:
        v = s.get(k)
        if v:
            out.append("| %s | %s ms | %s ms | %s ms |" % (label, f2(v["median"]), f2(v["p90"]),
                                                           f2(v["max"])))
    hr = s["hello_pid_file_ms"]["median"]
    out += ["", "Ratio of the medians, handoff ready / nginx workers up: **%s**; handoff ready / "
            "nginx pid file: **%s**." % (
                rx(hr / s["nginx_workers_ms"]["median"]),
                rx(hr / s["nginx_pid_file_ms"]["median"])), "",
            "![restart latency](img/restart-latency.png)", ""]
    return out


def md_memory(m):
    s = m["summary"]
    servers = m.get("servers", ["hello", "nginx"])
    plain = s["hello-plain"]["conns"]
    tls = s["hello-tls"]["conns"]
    out = ["## 4. Memory per idle keep-alive connection", "",
           "`bench/idle-conns.py --compare`: each server in turn, 1 worker, on a free port; "
           "%s plain connections or %s HTTPS ones (TLS 1.3, the same RSA 2048 certificate "
           "for all), one `GET /` on each (response read in full), then all held open and "
           "idle; the server's memory is read from `/proc/PID/smaps_rollup` of all its "
           "processes before and 1 s after (all connections checked to be still open then), "
           "and the difference divided by the number of connections. %s, the servers "
           "interleaved, medians. *Pss* counts shared pages pro rata, *Private* only the pages "
           "the server alone maps. Kernel memory (socket buffers, `struct sock`: the same for "
           "any server) is not user-space memory and is not included. hello: "
           "`hello --threads 1`; nginx 1.22: `worker_processes 1`, `return 200`, nginx's TLS "
           "defaults (it sets `SSL_MODE_RELEASE_BUFFERS`); h2o 2.2: `num-threads: 1`, "
           "`max-connections: 20000`, the shared harness's mruby handler, h2o's TLS defaults."
           % ("{:,}".format(plain), "{:,}".format(tls), rounds(m["rounds"])), "",
           "| | " + " | ".join("%s B/conn (Pss)" % MEM_LABEL[k] for k in servers) +
           " | " + " | ".join("handoff / %s" % MEM_LABEL[k] for k in servers[1:]) +
           " | " + " | ".join("%s Private" % MEM_LABEL[k] for k in servers) + " |",
           "|---|" + "--:|" * (3 * len(servers) - 1)]
    for mode, label in (("plain", "HTTP"), ("tls", "HTTPS")):
        row = [s["%s-%s" % (k, mode)] for k in servers]
        out.append("| %s | %s | %s | %s |" % (
            label, " | ".join(f0(r["pss"]) for r in row),
            " | ".join("**%s**" % rx(row[0]["pss"] / r["pss"]) if r["pss"] > 0 else "n/a"
                       for r in row[1:]),
            " | ".join(f0(r["private"]) for r in row)))
    out += ["", "Where the bytes of an idle connection go in handoff: a fixed connection "
            "record (the parser state, the request, the response and the buffers live in a "
            "per-request block that an idle connection returns to the worker's pool); over "
            "TLS, OpenSSL's `SSL` object and its state, which is most of the figure "
            "(`SSL_MODE_RELEASE_BUFFERS` frees the record buffers of an idle connection).", "",
            "![memory per idle connection](img/idle-memory.png)", ""]
    return out


def md_pool(pl):
    out = ["## 5. Idle keep-alive clients across restarts", "",
           "`bench/client-pool.py`: %d keep-alive connections, each sending one `GET /` after "
           "an idle pause of 0.5–2.5 s (as browsers, client pools and load balancers do), "
           "while the server is restarted %d times in %.0f s; %d workers each. handoff: "
           "`hello` and SIGHUP; nginx: HUP; HAProxy: `-W` and USR2 (expose-fd listeners); "
           "h2o: Server::Starter and HUP; the peers' setups are the shared harness's. "
           "*Closed while idle*: the server closed a connection between requests, a race in "
           "which a request sent at that instant is lost (a client may retry a GET, not a "
           "POST). *Reopened*: connections the client had to open again. *Lost*: requests sent "
           "that got no complete response." % (pl["conns"], pl["restarts"], pl["duration"],
                                                pl["workers"]), "",
           "| system | restarts | closed while idle | answered `Connection: close` | reopened "
           "| lost | bad | per restart: closed / close / reopened / lost |",
           "|---|--:|--:|--:|--:|--:|--:|---|"]
    names = {"handoff": "handoff", "nginx": "nginx (HUP)", "haproxy": "HAProxy (-W, USR2)",
             "h2o": "h2o (Server::Starter)"}
    for r in pl["rows"]:
        pr = r["per_restart"]
        out.append("| %s%s | %d | %d | %d | %d | **%d** | %d | %s / %s / %s / %s |" % (
            names.get(r["system"], r["system"]), " over TLS" if r["tls"] else "",
            r["restarts_done"], r["closed_idle"], r["answered_close"], r["reopened"], r["lost"],
            r["bad_response"] + r["unexpected_data"], pr["closed_idle"], pr["answered_close"],
            pr["reopened"], pr["lost"]))
    out.append("")
    return out


def md_h2(h):
    s, pa = h["summary"], h["params"]
    out = ["## 6. HTTP/2 over TLS", "",
           "`bench/h2-bench.py`: `h2load -t%d -c%d -m%d -D %d --warm-up-time 1` over TLS 1.3 "
           "with ALPN h2 (the same P-256 certificate for all), %s, the servers interleaved "
           "(reversed every other round), medians; p99 from h2load's per-request log. Then "
           "%s idle HTTP/2 connections per server (TLS handshake, SETTINGS exchanged, one "
           "`GET /` answered, then idle) and the servers' Pss and Private before and after, "
           "per connection. hello: `hello --http2 --threads N`; nginx 1.22: `http2` on the "
           "listener, `worker_processes N`; h2o 2.2: `num-threads: N`. Ratios: hello / peer "
           "(requests/s: > 1 means hello is faster; p99 and memory: < 1 means hello is "
           "better)." % (pa["threads"], pa["conns"], pa["streams"], pa["seconds"],
                          rounds(pa["rounds"]), "{:,}".format(pa["idle"])), "",
           "| workers | server | requests/s | p99 | failed | idle Pss B/conn | idle Private "
           "B/conn | hello/nginx: req/s | p99 | idle Pss |",
           "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for w in (1, 2):
        for k in ("hello", "nginx", "h2o"):
            r = s.get("%s-%d" % (k, w))
            if not r:
                continue
            rt = s.get("hello/nginx-%d" % w, {}) if k == "hello" else {}
            out.append("| %d | %s | %s | %s ms | %d | %s | %s | %s | %s | %s |" % (
                w, MEM_LABEL.get(k, k), f0(r["rps"]), f2(r["p99_ms"]), r["failed"],
                f0(r["idle_pss"]), f0(r["idle_private"]),
                "**%s**" % rx(rt["rps"]) if rt.get("rps") else "",
                rx(rt["p99_ms"]) if rt.get("p99_ms") else "",
                "**%s**" % rx(rt["idle_pss"]) if rt.get("idle_pss") else ""))
    out.append("")
    return out


def md_handover(hv):
    out = ["## 7. Handing 10,000 idle connections to the next generation", "",
           "The `idle-10k` cases of `tests/it-migrate.py` (examples/echo) and "
           "`tests/it-http-migrate.py` (examples/hello, plain HTTP/1.1), run as scripts on "
           "Release builds: 10,000 idle connections, then 3 restarts in a row; each time, the "
           "time from the successor's readiness to its last adoption (from the successor's "
           "own log), the successor's CPU time meanwhile, and every connection checked to "
           "answer afterwards. %d run%s of 3 hand-overs each." % (
               len({r["round"] for r in hv["runs"]}) or 0,
               "s" if len({r["round"] for r in hv["runs"]}) > 1 else ""), "",
           "| server | connections | ready → last adoption, median | min | max | successor "
           "CPU, median | RSS per generation | load per CPU |",
           "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for srv in ("echo", "hello"):
        rs = [r for r in hv["runs"] if r["server"] == srv]
        if not rs:
            continue
        t = [x for r in rs for x in r["ready_to_last_adoption_ms"]]
        c = [x for r in rs for x in r["successor_cpu_ms"]]
        rss = [x for r in rs for x in r["rss_kb"]]
        out.append("| %s | %s | **%s ms** | %s ms | %s ms | %s ms | %s–%s KiB | %s |" % (
            srv, "{:,}".format(rs[0]["connections"]), f0(statistics.median(t)), f0(min(t)),
            f0(max(t)), f0(statistics.median(c)), f0(min(rss)), f0(max(rss)),
            f2(statistics.median(r["load_per_cpu"] for r in rs))))
    out.append("")
    return out


def busy_note(nb):
    b = nb.get("busy_pct")
    if not b:
        return ""
    return (" A round also waited for the CPUs to be less than 25%% busy over those 5 s "
            "(other engineers' builds load them too); the CPU use measured just before the "
            "rounds was %d%% median, %d%% at most." % (statistics.median(b), max(b)))


def summary_lines(res):
    sec = res["sections"]
    out = []
    if "throughput" in sec:
        s = sec["throughput"]["summary"]
        parts = []
        for w in (1, 2):
            r = s["ratio-%d" % w]
            parts.append("**%s** with %d worker%s (median of the per-round ratios %s, handoff "
                         "faster in %d of %d rounds)" % (
                             rx(r["rps"]), w, "s" if w > 1 else "",
                             rx(statistics.median(r["rps_per_round"])), r["hello_faster_rounds"],
                             len(r["rps_per_round"])))
        out.append("- Steady state, requests/s handoff/nginx: %s. Latency handoff/nginx: p50 "
                   "%s and %s, p99 %s and %s (> 1: handoff slower)." % (
                       ", ".join(parts), rx(s["ratio-1"]["p50"]), rx(s["ratio-2"]["p50"]),
                       rx(s["ratio-1"]["p99"]), rx(s["ratio-2"]["p99"])))
    if "harness" in sec:
        tot = {}
        for j in sec["harness"]["runs"]:
            tot[j["key"]] = tot.get(j["key"], 0) + j["wrk_failed"] + j["probe_failures"] + \
                j["slow_failed_n"]
        n = sec["harness"]["restarts"] * sec["harness"]["rounds"]
        out.append("- Failed requests over %d restarts under load (shared harness): " % n +
                   ", ".join("%s %s" % (SYS_SHORT[k], f0(tot[k])) for k in ORDER if k in tot)
                   + ".")
    if "series" in sec:
        tot = {}
        for r in sec["series"]["runs"]:
            tot[r["key"]] = tot.get(r["key"], 0) + r["failed"]
        n = len(sec["series"]["restart_at_s"]) * sec["series"]["rounds"]
        out.append("- Failed requests over %d restarts in the time series (tsload): " % n +
                   ", ".join("%s %s" % (SYS_SHORT[k], f0(tot[k])) for k in ORDER if k in tot)
                   + ".")
    if "latency" in sec:
        s = sec["latency"]["summary"]
        out.append("- Restart trigger → ready, medians: handoff %s ms, nginx upgrade %s ms "
                   "(new workers up; %s ms to its pid file)." % (
                       f2(s["hello_pid_file_ms"]["median"]), f2(s["nginx_workers_ms"]["median"]),
                       f2(s["nginx_pid_file_ms"]["median"])))
    if "memory" in sec:
        m = sec["memory"]
        s = m["summary"]
        parts = []
        for mode, label in (("plain", "plain"), ("tls", "HTTPS")):
            parts.append("%s: handoff %s B, %s" % (label, f0(s["hello-%s" % mode]["pss"]), ", ".join(
                "%s %s B" % (MEM_LABEL[k], f0(s["%s-%s" % (k, mode)]["pss"]))
                for k in m.get("servers", ["hello", "nginx"])[1:])))
        out.append("- Memory per idle keep-alive connection (Pss, 1 worker): %s." % "; ".join(parts))
    if "pool" in sec:
        parts = []
        for r in sec["pool"]["rows"]:
            pr = r["per_restart"]
            parts.append("%s%s %s closed while idle, %s reopened, %s lost" % (
                r["system"], " (TLS)" if r["tls"] else "", pr["closed_idle"], pr["reopened"],
                pr["lost"]))
        out.append("- Idle keep-alive clients, per restart (%d connections): %s." % (
            sec["pool"]["conns"], "; ".join(parts)))
    if "h2" in sec:
        s = sec["h2"]["summary"]
        out.append("- HTTP/2 over TLS, hello / nginx: requests/s %s; idle connection Pss %s." % (
            ", ".join("**%s** with %d worker%s" % (rx(s["hello/nginx-%d" % w]["rps"]), w,
                                                 "s" if w > 1 else "")
                      for w in (1, 2) if s.get("hello/nginx-%d" % w, {}).get("rps")),
            rx(s["hello/nginx-1"]["idle_pss"]) if s.get("hello/nginx-1", {}).get("idle_pss")
            else "n/a"))
    if "handover" in sec:
        parts = []
        for srv in ("echo", "hello"):
            t = [x for r in sec["handover"]["runs"] if r["server"] == srv
                 for x in r["ready_to_last_adoption_ms"]]
            if t:
                parts.append("%s %s ms" % (srv, f0(statistics.median(t))))
        out.append("- Hand-over of 10,000 idle connections, ready → last adoption (median): "
                   "%s." % ", ".join(parts))
    return out


def write(res, outdir, splice=False):
    """Writes benchmarks.md and the plots; splice: put this run's sections
    into the existing page instead of replacing it (a partial run)."""
    img = os.path.join(outdir, "img")
    os.makedirs(img, exist_ok=True)
    img = os.path.abspath(img)
    sec = res["sections"]
    mi = res["machine"]
    nb = res.get("neighbours", {})
    with tempfile.TemporaryDirectory(prefix="handoff-plot-") as tmp:
        if "throughput" in sec:
            plot_throughput(sec["throughput"], img, tmp)
        if "series" in sec:
            plot_series(sec["series"], img, tmp)
        if "latency" in sec:
            plot_latency(sec["latency"], img, tmp)
        if "memory" in sec:
            plot_memory(sec["memory"], img, tmp)
    L = ["# Benchmarks: handoff's HTTP example vs nginx, HAProxy and h2o", "",
         "<!-- generated by bench/run-all (make bench); do not edit by hand -->", "",
         "Generated by `make bench` (`bench/run-all%s`) on %s, at commit %s, in %.0f s." % (
             " --quick" if res.get("quick") else "", mi["date"], mi["commit"],
             res.get("elapsed_s", 0)), "",
         "| machine | |", "|---|---|",
         "| CPUs (nproc) | %s (usable by this run: %s) |" % (mi["nproc"], mi["affinity"]),
         "| CPU model | %s |" % mi["cpu"], "| memory | %s |" % mi["mem"],
         "| kernel | Linux %s |" % mi["kernel"], "| nginx | %s (Debian package) |" % mi["nginx"],
         "| HAProxy | %s (Debian package) |" % mi["haproxy"].replace("HAProxy version ", ""),
         "| h2o | %s (Debian package) |" % mi.get("h2o", "?"),
         "| load generators | %s; bench/tsload.c |" % mi["wrk"],
         "| compiler | %s, hello built with CMAKE_BUILD_TYPE=Release |" % mi["cc"], "",
         "**Read the ratios, not the absolute numbers.** The servers, the load generators and "
         "the probes share the same %s CPUs, and on the machine this page was produced on "
         "those cores are shared with other engineers' test runs: absolute requests/s and "
         "milliseconds are noisy and would differ on dedicated hardware. Every comparison here "
         "is between systems measured in the same run, interleaved round by round (A B A B "
         "...), and reported as medians. Before each round the run waited until no other `wrk`, "
         "`h2load` or `it-*.py` test had been running for 5 s (waits bounded at 5 min; %d "
         "waits, %.0f s in total; %d of them timed out and the round ran with other load "
         "present) and held "
         "`flock /tmp/handoff-bench.lock` throughout each section.%s" % (
             mi["nproc"], nb.get("rounds", 0), nb.get("waited_s", 0), nb.get("noisy_rounds", 0),
             busy_note(nb)),
         "", "## Summary", ""]
    L += summary_lines(res)
    L.append("")
    if "throughput" in sec:
        L += md_throughput(sec["throughput"])
    if "series" in sec:
        L += md_series(sec["series"])
    if "harness" in sec:
        L += md_harness(sec["harness"])
    if "latency" in sec:
        L += md_latency(sec["latency"])
    if "memory" in sec:
        L += md_memory(sec["memory"])
    if "pool" in sec:
        L += md_pool(sec["pool"])
    if "h2" in sec:
        L += md_h2(sec["h2"])
    if "handover" in sec:
        L += md_handover(sec["handover"])
    L += ["## Reproducing", "",
          "On Debian 12, as root, from the repository (the shared harness is expected at "
          "`../shared/bench`, or pass `--harness DIR`):", "", "```sh",
          "make bench                        # scripts/deps.sh, then bench/run-all (~45 min)",
          "make bench BENCH_ARGS=--quick     # fewer, shorter rounds (~15 min)",
          "bench/run-all --only memory,pool  # some sections, redrawn in place in this page",
          "```", "",
          "The times exclude the waits for other load (at most 5 min each, 15 min in all). "
          "Raw results (every run, JSON and CSV) are left in `build-bench/results/`; "
          "`bench/run-all --from-results build-bench/results/results.json` redraws this page "
          "and the plots from them.", ""]
    text = "\n".join(L)
    path = os.path.join(outdir, "benchmarks.md")
    if splice and os.path.exists(path):
        with open(path) as f:
            text = splice_into(f.read(), text, res)
    else:
        text += "\n" + HAND_MARK + "\n"
    with open(path, "w") as f:
        f.write(text)


# Everything after this line in benchmarks.md is written by hand (results of
# benchmarks that run-all does not run) and kept when the page is redrawn.
HAND_MARK = "<!-- sections below are not generated: bench/run-all keeps them -->"


def _blocks(md):
    """The '## N. ...' sections of a page, each as a list of lines."""
    blocks, cur = [], None
    for line in md.split("\n"):
        if line.startswith("## ") and line[3:4].isdigit():
            cur = [line]
            blocks.append(cur)
        elif line.startswith("## ") or line == HAND_MARK:
            cur = None
        elif cur is not None:
            cur.append(line)
    return blocks


def splice_into(old, new, res):
    """The old page with the sections of this partial run put in place of
    theirs (or appended), their summary lines replaced, and a line saying
    which sections come from which run; hand-written sections kept."""
    hand = old[old.index(HAND_MARK):] if HAND_MARK in old else HAND_MARK + "\n"
    body = old[:old.index(HAND_MARK)] if HAND_MARK in old else old
    title = lambda b: b[0].split(". ", 1)[-1]  # noqa: E731
    newsec = {title(b): b for b in _blocks(new)}
    out, seen, in_summary, summary_new = [], set(), False, summary_lines(res)
    keys = tuple(ln.split(":")[0].split("(")[0].strip() for ln in summary_new)
    lines = body.rstrip("\n").split("\n")
    lines[0] = new.split("\n", 1)[0]  # the title names every peer of this version
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln == "## Summary":
            in_summary = True
        elif ln.startswith("## "):
            if in_summary:
                out += summary_new + [""]
                in_summary = False
            t = ln.split(". ", 1)[-1]
            if t in newsec:
                out += newsec[t]
                seen.add(t)
                i += 1
                while i < len(lines) and not lines[i].startswith("## "):
                    i += 1
                continue
            if ln == "## Reproducing":
                for t, b in newsec.items():
                    if t not in seen:
                        out += b
                        seen.add(t)
                repro = new[new.index("## Reproducing"):].rstrip("\n").split("\n")
                if HAND_MARK in repro:
                    repro = repro[:repro.index(HAND_MARK)]
                out += repro
                break
        elif ln.startswith("Sections “") and "redrawn by" in ln:
            # An earlier partial run's line: kept while some of its sections
            # are still from it (this run's own line follows the header).
            earlier = set(re.findall(r"“([^”]+)”", ln.split(":", 1)[0]))
            if earlier - set(newsec):
                out += [ln, ""]
            i += 2
            continue
        elif in_summary and ln.startswith("- ") and ln.split(":")[0].split("(")[0].strip() in keys:
            i += 1
            continue
        elif in_summary and not ln.strip() and out and out[-1].startswith("- "):
            i += 1
            continue
        out.append(ln)
        if ln.startswith("Generated by `make bench`"):
            mi = res["machine"]
            nb = res.get("neighbours", {})
            noise = ""
            if nb.get("rounds"):
                noise = (" %d of its %d rounds started with other load on the machine (CPUs %d%% "
                         "busy at the median before a round): its figures are memory and "
                         "counts, which load does not change, not times." % (
                             nb.get("noisy_rounds", 0), nb["rounds"],
                             statistics.median(nb.get("busy_pct") or [0])))
            out += ["", "Sections %s: redrawn by `bench/run-all --only %s` on %s, at commit %s; "
                    "the others come from the run above.%s" % (
                        ", ".join("“%s”" % t for t in newsec), ",".join(res["sections"]),
                        mi["date"], mi["commit"], noise)]
        i += 1
    return "\n".join(out) + "\n\n" + hand

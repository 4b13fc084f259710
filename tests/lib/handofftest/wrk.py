"""wrk, the HTTP load generator: start it bounded, read its summary (the
integration tests, scripts/soak.py, bench/)."""
import re
import subprocess


def parse(text):
    """wrk's summary as {requests, socket_errors (connect + read + write +
    timeout, each also by itself: a connect error is a refused connection,
    a read error a keep-alive connection closed under a request), non2xx,
    rps, failed (socket_errors + non2xx)}; zeros for what the text does not
    show."""
    m = re.search(r"(\d+) requests in", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r = {
        "requests": int(m.group(1)) if m else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "rps": float(rps.group(1)) if rps else 0.0,
    }
    for k, v in zip(("connect", "read", "write", "timeout"), errors.groups() if errors else (0, 0, 0, 0)):
        r[k] = int(v)
    r["failed"] = r["socket_errors"] + r["non2xx"]
    return r


def argv(url, seconds, connections=32, threads=2, extra=()):
    """wrk's command line, bounded by -d; extra: e.g. ("--timeout", "5s")."""
    return ["wrk", "-t%d" % threads, "-c%d" % connections, "-d%ds" % seconds, *extra, url]


def start(url, seconds, connections=32, threads=2, extra=()):
    """Starts wrk in the background; .communicate() gives its text."""
    return subprocess.Popen(argv(url, seconds, connections, threads, extra),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run(url, seconds, connections=32, threads=2, extra=()):
    """Runs wrk to the end; returns (parse(text), text)."""
    out = subprocess.run(argv(url, seconds, connections, threads, extra), capture_output=True,
                         text=True, timeout=seconds + 30).stdout
    return parse(out), out

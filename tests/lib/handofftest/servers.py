"""Unmodified servers from Debian, configured for a test or a benchmark
run in a directory of its own: how to start them, what they listen on,
how to ask them something (tests/it-preload-servers.py,
bench/preload-servers.py). Each returns a Server: the command, the
addresses it binds (the `--listen` specs `handoff run --preload` needs
to hold), its graceful stop signal, and a probe request on a new
connection.
"""
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from .load import http_once

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
TESTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Server:
    def __init__(self, name, command, listen, stop_signal, probe, url=None, slow=None):
        self.name = name
        self.command = command          # argv
        self.listen = listen            # --listen specs, the addresses it binds
        self.stop_signal = stop_signal  # its graceful stop
        self.probe = probe              # one request on a new connection; raises on failure
        self.url = url                  # for wrk (HTTP servers)
        self.slow = slow                # a request that takes about 2 s, or None


def redis_once(port, cmd=b"PING", timeout=5, host="127.0.0.1"):
    """One Redis command on a new connection; the raw reply."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.sendall(cmd + b"\r\n")
        data = s.recv(1024)
    finally:
        s.close()
    if not data:
        raise ConnectionAbortedError("closed before a response")
    return data


def _expect(cond, what):
    if not cond:
        raise ConnectionAbortedError(what)


def python_app(port, workdir=None):
    """tests/preload-httpd.py: a ThreadingHTTPServer app, graceful on TERM."""
    del workdir
    return Server("python-app", [PYTHON, os.path.join(TESTS, "preload-httpd.py"), "127.0.0.1", str(port)],
                  ["127.0.0.1:%d" % port], signal.SIGTERM,
                  lambda: _expect(http_once(port)[0] == 200, "status"), "http://127.0.0.1:%d/" % port,
                  lambda: _expect(http_once(port, "/slow", timeout=10)[0] == 200, "slow"))


def redis(port, workdir):
    """redis-server on 127.0.0.1:port and a unix socket (which it unlinks
    first), no persistence; TERM stops it (it closes its clients)."""
    sock = os.path.join(workdir, "redis.sock")
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--unixsocket", sock, "--save", "",
           "--appendonly", "no", "--daemonize", "no", "--logfile", "", "--dir", workdir]
    s = Server("redis", cmd, ["127.0.0.1:%d" % port, "unix:" + sock], signal.SIGTERM,
               lambda: _expect(redis_once(port) == b"+PONG\r\n", "PONG"), None,
               lambda: _expect(redis_once(port, b"BLPOP nothing 2", timeout=10) == b"*-1\r\n", "BLPOP"))
    s.unix = sock
    return s


def redis_benchmark(port, k=0):
    """redis-benchmark (PING, SET, GET, 4 clients) looped until the
    returned function is called, which returns {runs, failed_runs,
    errors, rps}. k=0: a new connection per request (Redis closes its
    clients when it stops, so a keep-alive benchmark ends at the first
    restart: Redis's own drain)."""
    stop = threading.Event()
    res = {"runs": 0, "failed_runs": 0, "errors": [], "rps": []}

    def run():
        while not stop.is_set():
            try:
                p = subprocess.run(["redis-benchmark", "-p", str(port), "-c", "4", "-n", "3000", "-k", str(k),
                                    "-t", "ping,set,get", "-q"], capture_output=True, text=True, timeout=30)
                code, out = p.returncode, (p.stdout + p.stderr).replace("\r", "\n")
            except subprocess.TimeoutExpired as e:
                # It waits for a server that is not there (a plain restart).
                code, out = -1, "timed out after 30 s: %s" % str(e.stdout or "")[-200:]
            res["runs"] += 1
            if code != 0 or "Error" in out:
                res["failed_runs"] += 1
                res["errors"].append(out.strip().splitlines()[-1:])
            for line in out.splitlines():
                if "requests per second" in line:
                    try:
                        res["rps"].append(float(line.split(":")[1].split()[0]))
                    except (IndexError, ValueError):
                        pass
    t = threading.Thread(target=run, daemon=True)
    t.start()

    def done():
        stop.set()
        t.join(40)
        return res
    return done


def lighttpd(port, port2, workdir):
    """lighttpd -D on two sockets, graceful on INT, a 2 s CGI (/slow.sh)."""
    conf = os.path.join(workdir, "lighttpd.conf")
    docroot = os.path.join(workdir, "www")
    os.makedirs(docroot, exist_ok=True)
    with open(os.path.join(docroot, "index.html"), "w") as f:
        f.write("Hello, World!\n")
    with open(os.path.join(docroot, "slow.sh"), "w") as f:
        f.write("#!/bin/sh\nsleep 2\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow\\n'\n")
    os.chmod(os.path.join(docroot, "slow.sh"), 0o755)
    with open(conf, "w") as f:
        f.write('''server.document-root = "%s"
server.bind = "127.0.0.1"
server.port = %d
$SERVER["socket"] == "127.0.0.1:%d" { }
server.modules = ("mod_cgi")
cgi.assign = (".sh" => "/bin/sh")
index-file.names = ("index.html")
server.errorlog = "%s/lighttpd.err"
server.max-keep-alive-idle = 2
server.feature-flags = ("server.graceful-restart-bg" => "disable", "server.graceful-shutdown-timeout" => 10)
''' % (docroot, port, port2, workdir))
    return Server("lighttpd", ["lighttpd", "-D", "-f", conf], ["127.0.0.1:%d" % port, "127.0.0.1:%d" % port2],
                  signal.SIGINT, lambda: _expect(http_once(port)[0] == 200, "status"),
                  "http://127.0.0.1:%d/" % port,
                  lambda: _expect(http_once(port, "/slow.sh", timeout=10)[0] == 200, "slow"))


class SlowBackend:
    """An upstream whose every answer takes 2 s (nginx's /slow). Call
    close() when done."""

    def __init__(self):
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                time.sleep(2)
                self.send_response(200)
                self.send_header("Content-Length", "5")
                self.end_headers()
                self.wfile.write(b"slow\n")

            def log_message(self, *a):
                pass

        class S(http.server.ThreadingHTTPServer):
            daemon_threads = True
        self.srv = S(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def nginx(ports, workdir, slow_port, v6=True):
    """nginx (daemon off; a master and 2 workers), graceful on QUIT, on
    ports[0..2] of 127.0.0.1, [::1]:ports[4] (if v6), a unix socket (which
    it unlinks when it stops), and a second server block on ports[3];
    /slow is proxied to slow_port."""
    conf = os.path.join(workdir, "nginx.conf")
    sock = os.path.join(workdir, "nginx.sock")
    for d in ("logs", "cb", "pt", "ft", "ut", "st"):
        os.makedirs(os.path.join(workdir, d), exist_ok=True)
    listen = "".join("        listen 127.0.0.1:%d;\n" % p for p in ports[:3])
    if v6:
        listen += "        listen [::1]:%d;\n" % ports[4]
    listen += "        listen unix:%s;\n" % sock
    with open(conf, "w") as f:
        f.write('''daemon off;
master_process on;
worker_processes 2;
pid %(dir)s/nginx.pid;
error_log stderr notice;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %(dir)s/cb; proxy_temp_path %(dir)s/pt; fastcgi_temp_path %(dir)s/ft;
    uwsgi_temp_path %(dir)s/ut; scgi_temp_path %(dir)s/st;
    keepalive_timeout 5;
    server {
%(listen)s        location / { return 200 "Hello, World!"; }
        location /slow { proxy_pass http://127.0.0.1:%(slow)d; }
    }
    server {
        listen 127.0.0.1:%(p4)d;
        location / { return 200 "second"; }
    }
}
''' % {"dir": workdir, "listen": listen, "slow": slow_port, "p4": ports[3]})
    held = ["127.0.0.1:%d" % p for p in ports[:4]] + (["[::1]:%d" % ports[4]] if v6 else []) + ["unix:" + sock]
    s = Server("nginx", ["nginx", "-p", workdir, "-e", "stderr", "-c", conf], held, signal.SIGQUIT,
               lambda: _expect(http_once(ports[0])[0] == 200, "status"), "http://127.0.0.1:%d/" % ports[0],
               lambda: _expect(http_once(ports[0], "/slow", timeout=10)[0] == 200, "slow"))
    s.unix = sock
    return s

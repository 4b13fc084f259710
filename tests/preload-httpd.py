#!/usr/bin/env python3
"""A ThreadingHTTPServer app that binds its own socket and knows nothing of
handoff, for tests/it-preload-servers.py.

    preload-httpd.py HOST PORT

GET / answers "pid N"; GET /slow answers after 2 s. On SIGTERM it stops
accepting, answers what it has (Connection: close from then on; an idle
keep-alive connection ends within a second), and exits 0.
"""
import http.server
import os
import signal
import sys
import threading
import time

stopping = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 1  # idle keep-alive connections end, so that a drain ends

    def do_GET(self):
        if self.path == "/slow":
            time.sleep(2)
        body = ("pid %d\n" % os.getpid()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if stopping.is_set():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for requests in flight
    block_on_close = True
    request_queue_size = 128


def main():
    srv = Server((sys.argv[1], int(sys.argv[2])), Handler)

    def on_term(*_):
        stopping.set()
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    srv.serve_forever(poll_interval=0.1)
    srv.server_close()


if __name__ == "__main__":
    main()

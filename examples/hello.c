/*
 * hello - the smallest useful libhandoff-http server.
 *
 *   GET /        "Hello, World!" (text/plain)
 *   GET /slow    the same after 2 seconds, without blocking a worker:
 *                the response is completed by a timer on the worker
 *   GET /healthz 200, or 503 during the lame-duck delay and the drain
 *
 * SIGHUP re-executes the binary with zero downtime (the new process
 * inherits the listening sockets; this one drains), SIGTERM/SIGINT drain
 * and exit; SIGUSR1/SIGUSR2 are logged and ignored. Exit status: 0 after a graceful drain, 1 on failure or when
 * the drain timeout cut connections off, 100 on bad usage.
 */
#include <errno.h>
#include <handoff/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LISTEN 16

static const char usage[] =
    "usage: hello [options]\n"
    "  --listen ADDR       address to serve (repeatable; default 127.0.0.1:8080),\n"
    "                      e.g. 127.0.0.1:8080, [::1]:8443, unix:/run/hello.sock\n"
    "  --threads N         worker threads (default: number of CPUs)\n"
    "  --tls-cert FILE     PEM certificate chain: serve HTTPS on every listener\n"
    "  --tls-key FILE      PEM private key (with --tls-cert)\n"
    "  --http2             also HTTP/2: by ALPN over TLS, with prior knowledge\n"
    "                      (h2c) next to HTTP/1.1 on cleartext listeners\n"
    "  --pid-file PATH     keep PATH naming the serving process\n"
    "  --drain-timeout S   seconds to wait for requests in flight (default 30)\n"
    "  --lame-duck MS      on SIGTERM, answer /healthz with 503 for MS ms first\n"
    "  --max-requests N    requests (HTTP/2: streams) per connection (default 10000)\n"
    "  --no-migrate        on a restart, keep connections and drain them here\n"
    "                      instead of handing them to the new process\n"
    "  --verbose           log every event (restarts, connections adopted)\n"
    "  --help              this text\n";

static int eq(handoff_http_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.p, lit, n) == 0;
}

static void slow_done(handoff_http_response *res, void *arg)
{
    (void)arg;
    static const char body[] = "Hello, World!";
    (void)handoff_http_response_send(res, 200, "text/plain", body, sizeof body - 1);
}

static void handle(const handoff_http_request *req, handoff_http_response *res,
                   void *userdata)
{
    (void)userdata;
    static const char hello[] = "Hello, World!";
    if (eq(req->path, "/")) {
        (void)handoff_http_response_send(res, 200, "text/plain", hello, sizeof hello - 1);
    } else if (eq(req->path, "/slow")) {
        if (handoff_http_response_defer(res, 2 * HANDOFF_USEC_PER_SEC, slow_done, NULL) < 0)
            (void)handoff_http_response_send(res, 503, "text/plain", "busy\n", 5);
    } else {
        (void)handoff_http_response_send(res, 404, "text/plain", "Not Found\n", 10);
    }
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static int parse_seconds(const char *s, uint64_t *usec)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v > 0) || v > 1e9)
        return -1;
    *usec = (uint64_t)(v * 1e6);
    return 0;
}

int main(int argc, char **argv)
{
    handoff_http_listen_spec listen[MAX_LISTEN];
    size_t nlisten = 0;
    const char *cert = NULL, *key = NULL;
    handoff_options core = HANDOFF_OPTIONS_INIT;
    handoff_http_serve_options so = HANDOFF_HTTP_SERVE_OPTIONS_INIT;
    handoff_http_options o = HANDOFF_HTTP_OPTIONS_INIT;
    so.core = &core;
    o.handler = handle;
    o.health_path = "/healthz";

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (strcmp(a, "--http2") == 0) {
            o.http2 = 1;
            continue;
        }
        if (strcmp(a, "--no-migrate") == 0) {
            o.no_migrate = 1;
            continue;
        }
        if (strcmp(a, "--verbose") == 0) {
            core.log_level = HANDOFF_LOG_INFO;
            continue;
        }
        if (!v) {
            fprintf(stderr, "hello: unknown option or missing value: %s\n%s", a, usage);
            return 100;
        }
        i++;
        if (strcmp(a, "--listen") == 0) {
            if (nlisten == MAX_LISTEN) {
                fprintf(stderr, "hello: at most %d --listen\n", MAX_LISTEN);
                return 100;
            }
            listen[nlisten++] = (handoff_http_listen_spec){.addr = v};
        } else if (strcmp(a, "--threads") == 0 && parse_u64(v, &n) == 0 && n > 0 &&
                   n <= 1024) {
            o.threads = (unsigned)n;
        } else if (strcmp(a, "--tls-cert") == 0) {
            cert = v;
        } else if (strcmp(a, "--tls-key") == 0) {
            key = v;
        } else if (strcmp(a, "--pid-file") == 0) {
            core.pid_file = v;
        } else if (strcmp(a, "--drain-timeout") == 0 && parse_seconds(v, &n) == 0) {
            so.hammer_timeout_usec = n;
        } else if (strcmp(a, "--max-requests") == 0 && parse_u64(v, &n) == 0 && n > 0 &&
                   n <= UINT32_MAX) {
            o.max_keepalive_requests = (unsigned)n;
        } else if (strcmp(a, "--lame-duck") == 0 && parse_u64(v, &n) == 0 &&
                   n <= UINT64_MAX / HANDOFF_USEC_PER_MSEC) {
            so.lame_duck_usec = n * HANDOFF_USEC_PER_MSEC;
        } else {
            fprintf(stderr, "hello: bad option: %s %s\n%s", a, v, usage);
            return 100;
        }
    }
    if (!cert != !key) {
        fprintf(stderr, "hello: --tls-cert and --tls-key go together\n");
        return 100;
    }
    if (nlisten == 0)
        listen[nlisten++] = (handoff_http_listen_spec){.addr = "127.0.0.1:8080"};
    for (size_t i = 0; i < nlisten; i++) {
        listen[i].tls_cert_file = cert;
        listen[i].tls_key_file = key;
        listen[i].h2c = o.http2 && !cert;
    }
    handoff_http_site site = {.options = &o, .listen = listen, .num_listen = nlisten};

    /* Start-up failures are logged by handoff_http_serve() itself. */
    int r = handoff_http_serve(&so, &site, 1);
    return r == 0 ? 0 : 1;
}

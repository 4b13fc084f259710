/*
 * fuzz-h2-session - HTTP/2 frames through a real server: libnghttp2's
 * session and the module's glue (src/http/h2.c: header collection and
 * limits, request building, cookie joining, dispatch, streamed and
 * buffered responses, flow control, the flood budgets, GOAWAY, close).
 *
 * One server runs for the whole process: one worker thread, an h2c
 * listener on an abstract unix socket, short timeouts, a handler with a
 * few behaviours chosen by path. Each input is one connection: the client
 * preface, then the input as sent by the client (frames, or anything),
 * then the end of the client's output; the harness reads what the server
 * answers until it closes (bounded in time: a server that neither answers
 * nor closes within 5 s is a finding).
 *
 * Checks besides the sanitizers: the server closes every connection once
 * the client is done, and answers with well-formed frame headers (length
 * within the maximum frame size, the first frame SETTINGS).
 */
#include <errno.h>
#include <handoff/http.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct sockaddr_un addr;
static socklen_t addr_len;

static int eq(handoff_http_str s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.p, lit, n) == 0;
}

static void deferred(handoff_http_response *res, void *arg)
{
    (void)arg;
    (void)handoff_http_response_send(res, 200, "text/plain", "later", 5);
}

static void writable(handoff_http_response *res, void *arg)
{
    long left = (long)(intptr_t)arg;
    static char buf[20000];
    while (left > 0) {
        int r = handoff_http_response_write(res, buf, sizeof buf);
        if (r == -EAGAIN && handoff_http_response_on_writable(res, writable,
                                                              (void *)(intptr_t)left) == 0)
            return;
        if (r < 0)
            break;
        left -= (long)sizeof buf;
    }
    (void)handoff_http_response_end(res);
}

static void handler(const handoff_http_request *req, handoff_http_response *res, void *ud)
{
    (void)ud;
    handoff_http_str p = req->path;
    if (eq(p, "/headers")) {
        /* Every header, through both lookups. */
        handoff_http_str n, v;
        for (size_t i = 0; handoff_http_request_header_at(req, i, &n, &v); i++) {
            char name[64];
            snprintf(name, sizeof name, "%.*s", (int)(n.len < 63 ? n.len : 63), n.p);
            size_t len = 0;
            (void)handoff_http_request_header(req, name, &len);
            (void)handoff_http_response_body(res, v.p, v.len);
        }
        (void)handoff_http_response_header(res, "X-Count", "1");
        (void)handoff_http_response_header(res, "Connection", "keep-alive");
        (void)handoff_http_response_end(res);
    } else if (eq(p, "/echo")) {
        (void)handoff_http_response_send(res, 200, "application/octet-stream", req->body,
                                         req->body_len);
    } else if (eq(p, "/stream")) {
        for (int i = 0; i < 3; i++)
            (void)handoff_http_response_write(res, "chunk\n", 6);
        (void)handoff_http_response_end(res);
    } else if (eq(p, "/big")) {
        writable(res, (void *)(intptr_t)200000);
    } else if (eq(p, "/defer")) {
        if (handoff_http_response_defer(res, 1000, deferred, NULL) < 0)
            (void)handoff_http_response_send(res, 503, NULL, NULL, 0);
    } else if (eq(p, "/close")) {
        (void)handoff_http_response_header(res, "Connection", "close");
        (void)handoff_http_response_send(res, 204, NULL, NULL, 0);
    } else {
        (void)handoff_http_response_send(res, 200, "text/plain", "Hello", 5);
    }
}

static void setup(void)
{
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    addr.sun_family = AF_UNIX;
    int n = snprintf(addr.sun_path + 1, sizeof addr.sun_path - 1, "handoff-fuzz-h2-%ld",
                     (long)getpid());
    addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, addr_len) < 0 || listen(lfd, 64) < 0) {
        perror("fuzz-h2-session: listener");
        abort();
    }
    handoff_http_options o = HANDOFF_HTTP_OPTIONS_INIT;
    o.handler = handler;
    o.threads = 1;
    o.http2 = 1;
    o.read_timeout_usec = 100000;
    o.write_timeout_usec = 100000;
    o.idle_timeout_usec = 100000;
    o.max_body_bytes = 100000;
    o.stream_buffer_bytes = 65536;
    o.http2_max_concurrent_streams = 16;
    handoff_http_server *srv = NULL;
    if (handoff_http_server_new(NULL, &o, &srv) < 0 ||
        handoff_http_server_add_listener(srv, lfd, NULL, NULL) < 0 ||
        handoff_http_server_listener_flags(srv, lfd, HANDOFF_HTTP_H2C) < 0 ||
        handoff_http_server_start(srv) < 0) {
        fprintf(stderr, "fuzz-h2-session: server setup failed\n");
        abort();
    }
    /* The server runs until the process exits. */
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, addr_len) < 0) {
        perror("fuzz-h2-session: connect");
        abort();
    }
    /* The client's side, in a buffer of exactly its size (ASan sees any
     * read past it): the preface, then the input. */
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    size_t len = sizeof preface - 1 + size;
    uint8_t *out = malloc(len);
    if (!out)
        abort();
    memcpy(out, preface, sizeof preface - 1);
    if (size)
        memcpy(out + sizeof preface - 1, data, size);
    size_t off = 0;
    uint8_t in[16384], hdr[9];
    size_t got = 0, hlen = 0, skip = 0;
    int frames = 0, shut = 0;
    uint64_t deadline = now_ms() + 5000;
    for (;;) {
        if (!shut && off == len) {
            (void)shutdown(fd, SHUT_WR);
            shut = 1;
        }
        struct pollfd pf = {.fd = fd, .events = (short)(POLLIN | (shut ? 0 : POLLOUT))};
        uint64_t t = now_ms();
        if (t >= deadline) {
            fprintf(stderr, "fuzz-h2-session: the server neither closed nor answered in 5 s\n");
            abort();
        }
        if (poll(&pf, 1, (int)(deadline - t)) < 0 && errno != EINTR)
            abort();
        if (!shut && (pf.revents & POLLOUT)) {
            ssize_t n = send(fd, out + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0)
                off += (size_t)n;
            else if (n < 0 && errno != EAGAIN)
                off = len; /* the server closed: stop sending */
        }
        if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(fd, in, sizeof in, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN))
                break; /* closed (FIN or reset): done */
            /* Walk the frame headers: well-formed, SETTINGS first. */
            for (ssize_t i = 0; i < n; i++) {
                if (skip) {
                    skip--;
                    continue;
                }
                hdr[hlen++] = in[i];
                if (hlen < 9)
                    continue;
                size_t flen = (size_t)hdr[0] << 16 | (size_t)hdr[1] << 8 | hdr[2];
                if (flen > 16384 || (frames == 0 && hdr[3] != 4)) {
                    fprintf(stderr, "fuzz-h2-session: bad frame header from the server\n");
                    abort();
                }
                frames++;
                skip = flen;
                hlen = 0;
            }
            got += (size_t)(n > 0 ? n : 0);
        }
    }
    (void)got;
    free(out);
    close(fd);
    return 0;
}

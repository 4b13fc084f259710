/*
 * h2-load - an HTTP/2 load generator that behaves like a browser across a
 * server's graceful GOAWAY, for the restart tests (tests/it-h2.py).
 *
 * h2load (nghttp2-client 1.52) neither reconnects after a GOAWAY nor
 * retries the streams the server did not process, and counts both as
 * failures; it cannot tell a correct drain from a broken one. This one:
 *  - keeps -c connections open, each with up to -m streams in flight;
 *  - after any GOAWAY (the 2^31-1 notice included) opens no new stream on
 *    that connection and opens a replacement;
 *  - retries, on another connection, the streams the server said it did
 *    not process (above the GOAWAY's last stream id, or REFUSED_STREAM:
 *    RFC 9113 sections 6.8 and 8.7 make them safe to retry);
 *  - counts as failed every other stream that did not end with a 2xx:
 *    reset by the server, a non-2xx status, or left unanswered when a
 *    connection ended (lost).
 *
 *   h2-load URL [-c CONNS] [-m STREAMS] [-d SECONDS]
 *
 * URL is https://127.0.0.1:PORT/PATH (TLS, ALPN h2) or http://... (h2c,
 * prior knowledge); loopback only. Prints one JSON line; exit status 0 if
 * no stream failed, 1 otherwise, 2 on bad usage or setup failure.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 256

struct stream {
    int32_t id;
    int status;
    struct stream *prev, *next;
};

struct conn {
    int fd;
    SSL *ssl;
    nghttp2_session *ng;
    bool connected, handshaken, goaway, dead;
    int32_t goaway_last;
    unsigned inflight;
    unsigned char *out; /* unsent tail */
    size_t outlen, outoff;
    struct stream *streams; /* in flight */
};

static struct {
    bool tls;
    struct sockaddr_in addr;
    char authority[64];
    char path[256];
    unsigned conns, streams;
    double seconds;
    SSL_CTX *ctx;
    int ep;
    unsigned long ok, failed, reset, non2xx, lost, retried, goaways, opened, connect_errors;
    unsigned long pending_retries; /* requests to re-issue */
    bool stopping;
} g;

static struct conn *cs[MAX_CONNS];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void unlink_stream(struct conn *c, struct stream *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        c->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    c->inflight--;
    free(s);
}

static void conn_free(struct conn *c)
{
    while (c->streams)
        unlink_stream(c, c->streams);
    if (c->fd >= 0) {
        (void)epoll_ctl(g.ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    if (c->ssl)
        SSL_free(c->ssl);
    if (c->ng)
        nghttp2_session_del(c->ng); /* calls no callbacks */
    free(c->out);
    free(c);
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud)
{
    (void)flags;
    (void)ud;
    if (f->hd.type != NGHTTP2_HEADERS || namelen != 7 || memcmp(name, ":status", 7) != 0)
        return 0;
    struct stream *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (s && valuelen == 3 && s->status < 200) /* the final one, not a 1xx */
        s->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
    return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    (void)ng;
    struct conn *c = ud;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        if (!c->goaway)
            g.goaways++;
        c->goaway = true;
        c->goaway_last = f->goaway.last_stream_id;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
    struct conn *c = ud;
    struct stream *s = nghttp2_session_get_stream_user_data(ng, id);
    if (!s)
        return 0;
    if (code == NGHTTP2_REFUSED_STREAM || (c->goaway && id > c->goaway_last)) {
        g.retried++; /* not processed by the server: safe to retry */
        g.pending_retries++;
    } else if (code != NGHTTP2_NO_ERROR) {
        g.failed++;
        g.reset++;
    } else if (s->status < 200 || s->status > 299) {
        g.failed++;
        g.non2xx++;
    } else {
        g.ok++;
    }
    unlink_stream(c, s);
    (void)nghttp2_session_set_stream_user_data(ng, id, NULL);
    return 0;
}

static int submit(struct conn *c)
{
    struct stream *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    const nghttp2_nv nv[] = {
        {(uint8_t *)":method", (uint8_t *)"GET", 7, 3, 0},
        {(uint8_t *)":scheme", (uint8_t *)(g.tls ? "https" : "http"), 7, g.tls ? 5 : 4, 0},
        {(uint8_t *)":authority", (uint8_t *)g.authority, 10, strlen(g.authority), 0},
        {(uint8_t *)":path", (uint8_t *)g.path, 5, strlen(g.path), 0},
    };
    int32_t id = nghttp2_submit_request(c->ng, NULL, nv, 4, NULL, s);
    if (id < 0) {
        free(s);
        return -1;
    }
    s->id = id;
    s->next = c->streams;
    if (c->streams)
        c->streams->prev = s;
    c->streams = s;
    c->inflight++;
    return 0;
}

static void top_up(struct conn *c)
{
    if (!c->handshaken || c->goaway || c->dead)
        return;
    while (c->inflight < g.streams && (!g.stopping || g.pending_retries)) {
        if (submit(c) < 0)
            break;
        if (g.pending_retries)
            g.pending_retries--;
    }
}

/* Returns -1 when the connection is over. */
static int conn_write(struct conn *c)
{
    for (;;) {
        if (c->outoff < c->outlen) {
            ssize_t n;
            if (c->ssl) {
                ERR_clear_error();
                int r = SSL_write(c->ssl, c->out + c->outoff, (int)(c->outlen - c->outoff));
                if (r <= 0) {
                    int e = SSL_get_error(c->ssl, r);
                    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
                        return 0;
                    return -1;
                }
                n = r;
            } else {
                n = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
                if (n < 0) {
                    if (errno == EAGAIN || errno == EINTR)
                        return 0;
                    return -1;
                }
            }
            c->outoff += (size_t)n;
            continue;
        }
        c->outlen = c->outoff = 0;
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(c->ng, &p);
        if (n < 0)
            return -1;
        if (n == 0)
            return 0;
        unsigned char *o = realloc(c->out, (size_t)n);
        if (!o)
            return -1;
        c->out = o;
        memcpy(c->out, p, (size_t)n);
        c->outlen = (size_t)n;
    }
}

static int conn_read(struct conn *c)
{
    unsigned char buf[16384];
    for (;;) {
        ssize_t n;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_read(c->ssl, buf, sizeof buf);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                    return 0;
                return -1;
            }
            n = r;
        } else {
            n = read(c->fd, buf, sizeof buf);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    return 0;
                return -1;
            }
            if (n == 0)
                return -1;
        }
        if (nghttp2_session_mem_recv(c->ng, buf, (size_t)n) < 0)
            return -1;
    }
}

static struct conn *conn_open(void)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        free(c);
        return NULL;
    }
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&g.addr, sizeof g.addr) < 0 && errno != EINPROGRESS) {
        g.connect_errors++;
        conn_free(c);
        return NULL;
    }
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    int r = nghttp2_session_client_new(&c->ng, cb, c);
    nghttp2_session_callbacks_del(cb);
    if (r != 0) {
        conn_free(c);
        return NULL;
    }
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    (void)nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, 2);
    if (g.tls) {
        c->ssl = SSL_new(g.ctx);
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_connect_state(c->ssl);
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    (void)epoll_ctl(g.ep, EPOLL_CTL_ADD, c->fd, &ev);
    g.opened++;
    return c;
}

/* Streams still open when a connection ends: not processed (above the
 * GOAWAY's last stream id) means retry, anything else was lost. */
static void conn_end(struct conn *c)
{
    while (c->streams) {
        struct stream *s = c->streams;
        if (c->goaway && s->id > c->goaway_last) {
            g.retried++;
            g.pending_retries++;
        } else {
            g.failed++;
            g.lost++;
        }
        (void)nghttp2_session_set_stream_user_data(c->ng, s->id, NULL);
        unlink_stream(c, s);
    }
    c->dead = true;
}

static void handle(struct conn *c, uint32_t events)
{
    if (!c->connected) {
        int err = 0;
        socklen_t len = sizeof err;
        (void)getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            g.connect_errors++;
            c->dead = true;
            return;
        }
        if (!(events & EPOLLOUT))
            return;
        c->connected = true;
    }
    if (!c->handshaken) {
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_do_handshake(c->ssl);
            if (r != 1) {
                int e = SSL_get_error(c->ssl, r);
                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                    g.connect_errors++;
                    c->dead = true;
                }
                return;
            }
            const unsigned char *p;
            unsigned n;
            SSL_get0_alpn_selected(c->ssl, &p, &n);
            if (n != 2 || memcmp(p, "h2", 2) != 0) {
                fprintf(stderr, "h2-load: the server did not choose h2\n");
                exit(2);
            }
        }
        c->handshaken = true;
        top_up(c);
    }
    if (conn_read(c) < 0 || conn_write(c) < 0) {
        conn_end(c);
        return;
    }
    top_up(c);
    if (conn_write(c) < 0) {
        conn_end(c);
        return;
    }
    if (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng) &&
        c->outoff == c->outlen)
        conn_end(c);
    struct epoll_event ev = {.events = EPOLLIN | (c->outoff < c->outlen ? EPOLLOUT : 0u),
                             .data.ptr = c};
    (void)epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static int parse_url(const char *url)
{
    const char *p;
    if (strncmp(url, "https://", 8) == 0) {
        g.tls = true;
        p = url + 8;
    } else if (strncmp(url, "http://", 7) == 0) {
        p = url + 7;
    } else {
        return -1;
    }
    const char *slash = strchr(p, '/');
    size_t alen = slash ? (size_t)(slash - p) : strlen(p);
    if (alen >= sizeof g.authority)
        return -1;
    memcpy(g.authority, p, alen);
    g.authority[alen] = 0;
    snprintf(g.path, sizeof g.path, "%s", slash ? slash : "/");
    char host[64];
    const char *colon = strrchr(g.authority, ':');
    if (!colon)
        return -1;
    snprintf(host, sizeof host, "%.*s", (int)(colon - g.authority), g.authority);
    g.addr.sin_family = AF_INET;
    g.addr.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &g.addr.sin_addr) != 1)
        return -1;
    /* Loopback only: this is a load generator. */
    return (ntohl(g.addr.sin_addr.s_addr) >> 24) == 127 ? 0 : -1;
}

int main(int argc, char **argv)
{
    g.conns = 8;
    g.streams = 10;
    g.seconds = 10;
    const char *url = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-c") && i + 1 < argc)
            g.conns = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "-m") && i + 1 < argc)
            g.streams = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "-d") && i + 1 < argc)
            g.seconds = atof(argv[++i]);
        else
            url = argv[i];
    }
    if (!url || parse_url(url) < 0 || !g.conns || g.conns > MAX_CONNS / 2 || !g.streams ||
        g.seconds <= 0) {
        fprintf(stderr, "usage: h2-load http[s]://127.0.0.1:PORT/PATH [-c N] [-m N] [-d S]\n");
        return 2;
    }
    if (g.tls) {
        g.ctx = SSL_CTX_new(TLS_client_method());
        static const unsigned char alpn[] = "\x02h2";
        SSL_CTX_set_alpn_protos(g.ctx, alpn, sizeof alpn - 1);
        SSL_CTX_set_verify(g.ctx, SSL_VERIFY_NONE, NULL);
    }
    g.ep = epoll_create1(EPOLL_CLOEXEC);
    double end = now_s() + g.seconds, hard_end = end + 30;
    while (true) {
        double t = now_s();
        if (t >= end)
            g.stopping = true;
        /* Keep g.conns usable connections (not going away). */
        unsigned usable = 0, live = 0;
        for (int i = 0; i < MAX_CONNS; i++) {
            if (!cs[i])
                continue;
            live++;
            if (!cs[i]->goaway && !cs[i]->dead)
                usable++;
        }
        unsigned want = g.stopping ? (g.pending_retries ? 1 : 0) : g.conns;
        for (int i = 0; usable < want && i < MAX_CONNS; i++) {
            if (cs[i])
                continue;
            cs[i] = conn_open();
            if (cs[i]) {
                usable++;
                live++;
            } else {
                break;
            }
        }
        if (g.stopping) {
            unsigned busy = 0;
            for (int i = 0; i < MAX_CONNS; i++)
                if (cs[i] && cs[i]->inflight && !cs[i]->dead)
                    busy++;
            if ((!busy && !g.pending_retries) || t >= hard_end)
                break;
        }
        struct epoll_event evs[64];
        int n = epoll_wait(g.ep, evs, 64, 10);
        for (int i = 0; i < n; i++)
            handle(evs[i].data.ptr, evs[i].events);
        for (int i = 0; i < MAX_CONNS; i++) {
            if (cs[i] && cs[i]->dead) {
                conn_free(cs[i]);
                cs[i] = NULL;
            }
        }
        /* Retries go to the usable connections. */
        for (int i = 0; i < MAX_CONNS; i++)
            if (cs[i] && !cs[i]->dead)
                handle(cs[i], 0);
        if (n == 0 && g.connect_errors)
            usleep(1000);
    }
    unsigned long unfinished = 0;
    for (int i = 0; i < MAX_CONNS; i++) {
        if (cs[i]) {
            unfinished += cs[i]->inflight;
            conn_free(cs[i]);
        }
    }
    unfinished += g.pending_retries; /* refused, and no time left to retry */
    g.failed += unfinished;
    printf("{\"ok\": %lu, \"failed\": %lu, \"reset\": %lu, \"non2xx\": %lu, \"lost\": %lu, "
           "\"unfinished\": %lu, \"retried\": %lu, \"goaways\": %lu, \"connections\": %lu, "
           "\"connect_errors\": %lu}\n",
           g.ok, g.failed, g.reset, g.non2xx, g.lost, unfinished, g.retried, g.goaways,
           g.opened, g.connect_errors);
    if (g.ctx)
        SSL_CTX_free(g.ctx);
    return g.failed ? 1 : 0;
}

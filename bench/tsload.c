/*
 * tsload - closed-loop HTTP/1.1 keep-alive load with a time series.
 *
 * Why not wrk: wrk reports totals only (its Lua has no wall clock), and
 * running it in consecutive 1 s slices would open fresh connections at
 * every slice, which is not what a server sees during a restart under
 * steady keep-alive load. tsload keeps C connections busy (one request in
 * flight on each, like wrk) for D seconds and counts every completed and
 * every failed request into buckets of B ms of CLOCK_MONOTONIC, the clock
 * of Python's time.monotonic(), so the caller can place its restarts on
 * the same axis.
 *
 *   tsload -p PORT [-c 64] [-t 2] [-d 20] [-b 100] [-u /] [-o out.csv]
 *
 * Output (stdout or -o): "# start_mono=<s> bucket_ms=<B>" then one CSV row
 * per bucket: t_s,ok,failed,connect,read,timeout,non2xx. A summary goes to
 * stderr. Failures, as wrk counts them: connect (refused/reset during
 * connect), read (the connection closed or was reset with a request
 * outstanding or mid-response), timeout (no response within 2 s), non2xx
 * (a complete response with status >= 300). A failed connection is
 * re-opened (after 10 ms if the connect itself failed).
 *
 * Only 127.0.0.0/8 is accepted as a target; the run stops at D seconds.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { K_OK, K_FAILED, K_CONNECT, K_READ, K_TIMEOUT, K_NON2XX, K_N };
enum { S_IDLE, S_CONNECTING, S_WAITING };

#define RBUF 4096
#define TIMEOUT_NS 2000000000LL
#define RETRY_NS 10000000LL

typedef struct conn {
    int fd;
    int state;
    long long since;    /* when the request was written / connect began */
    long long retry_at; /* S_IDLE: when to reconnect */
    size_t have;        /* bytes in rbuf */
    char rbuf[RBUF];
} conn;

typedef struct worker {
    pthread_t th;
    int nconn;
    conn *c;
    uint64_t (*buckets)[K_N];
} worker;

static struct sockaddr_in g_addr;
static char g_req[512];
static size_t g_reqlen;
static long long g_start, g_end, g_bucket_ns;
static int g_nbuckets;

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void count(worker *w, int kind)
{
    long long b = (now_ns() - g_start) / g_bucket_ns;
    if (b < 0)
        b = 0;
    if (b >= g_nbuckets)
        b = g_nbuckets - 1;
    w->buckets[b][kind]++;
    if (kind != K_OK)
        w->buckets[b][K_FAILED]++;
}

static void conn_close(int ep, conn *c, long long retry_delay)
{
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->state = S_IDLE;
    c->have = 0;
    c->retry_at = now_ns() + retry_delay;
}

static int send_req(conn *c)
{
    ssize_t n = send(c->fd, g_req, g_reqlen, MSG_NOSIGNAL);
    if (n != (ssize_t)g_reqlen)
        return -1; /* a 60-byte request into an empty socket buffer */
    c->state = S_WAITING;
    c->since = now_ns();
    c->have = 0;
    return 0;
}

static void conn_open(worker *w, int ep, conn *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        count(w, K_CONNECT);
        c->retry_at = now_ns() + RETRY_NS;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->since = now_ns();
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    if (connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr) == 0) {
        c->state = S_CONNECTING; /* EPOLLOUT follows */
    } else if (errno == EINPROGRESS) {
        c->state = S_CONNECTING;
    } else {
        count(w, K_CONNECT);
        conn_close(ep, c, RETRY_NS);
    }
}

/* Returns 1 when rbuf holds a complete response, 0 when more is needed,
 * -1 on a malformed one. Sets *status and *close_after. */
static int parse(conn *c, int *status, int *close_after, size_t *total)
{
    char *end = memmem(c->rbuf, c->have, "\r\n\r\n", 4);
    if (!end)
        return c->have == RBUF ? -1 : 0;
    size_t head = (size_t)(end - c->rbuf) + 4;
    if (c->have < 12 || memcmp(c->rbuf, "HTTP/1.", 7) != 0)
        return -1;
    *status = atoi(c->rbuf + 9);
    long long clen = -1;
    *close_after = 0;
    for (char *p = memchr(c->rbuf, '\n', head); p && p < end; p = memchr(p, '\n', (size_t)(end - p))) {
        p++;
        if (strncasecmp(p, "content-length:", 15) == 0)
            clen = atoll(p + 15);
        else if (strncasecmp(p, "connection:", 11) == 0) {
            const char *v = p + 11;
            while (*v == ' ')
                v++;
            if (strncasecmp(v, "close", 5) == 0)
                *close_after = 1;
        }
    }
    if (clen < 0 || clen > RBUF)
        return -1; /* this client only speaks to servers of small, sized bodies */
    *total = head + (size_t)clen;
    if (*total > RBUF)
        return -1;
    return c->have >= *total ? 1 : 0;
}

static void on_event(worker *w, int ep, conn *c, uint32_t evs)
{
    if (c->state == S_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (evs & (EPOLLERR | EPOLLHUP))) {
            count(w, K_CONNECT);
            conn_close(ep, c, RETRY_NS);
            return;
        }
        if (!(evs & EPOLLOUT))
            return;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        if (send_req(c) < 0) {
            count(w, K_READ);
            conn_close(ep, c, 0);
        }
        return;
    }
    if (c->state != S_WAITING)
        return;
    for (;;) {
        ssize_t n = recv(c->fd, c->rbuf + c->have, RBUF - c->have, 0);
        if (n > 0) {
            c->have += (size_t)n;
            int status = 0, close_after = 0;
            size_t total = 0;
            int r = parse(c, &status, &close_after, &total);
            if (r < 0) {
                count(w, K_READ);
                conn_close(ep, c, 0);
                return;
            }
            if (r == 0)
                continue;
            count(w, status >= 200 && status < 300 ? K_OK : K_NON2XX);
            if (close_after || c->have != total || now_ns() >= g_end) {
                conn_close(ep, c, 0);
                return;
            }
            if (send_req(c) < 0) {
                count(w, K_READ);
                conn_close(ep, c, 0);
            }
            return;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0 && errno == EINTR)
            continue;
        /* EOF or reset with a request outstanding */
        count(w, K_READ);
        conn_close(ep, c, 0);
        return;
    }
}

static void *run(void *arg)
{
    worker *w = arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        perror("epoll_create1");
        return NULL;
    }
    for (int i = 0; i < w->nconn; i++) {
        w->c[i].fd = -1;
        w->c[i].state = S_IDLE;
        w->c[i].retry_at = 0;
    }
    struct epoll_event evs[256];
    for (;;) {
        long long t = now_ns();
        if (t >= g_end)
            break;
        for (int i = 0; i < w->nconn; i++) {
            conn *c = &w->c[i];
            if (c->state == S_IDLE && c->retry_at <= t)
                conn_open(w, ep, c);
            else if (c->state != S_IDLE && t - c->since > TIMEOUT_NS) {
                count(w, c->state == S_CONNECTING ? K_CONNECT : K_TIMEOUT);
                conn_close(ep, c, 0);
            }
        }
        int n = epoll_wait(ep, evs, 256, 5);
        for (int i = 0; i < n; i++)
            on_event(w, ep, evs[i].data.ptr, evs[i].events);
    }
    for (int i = 0; i < w->nconn; i++)
        if (w->c[i].fd >= 0)
            close(w->c[i].fd);
    close(ep);
    return NULL;
}

static void usage(void)
{
    fputs("usage: tsload -p PORT [-h 127.0.0.1] [-c CONNS] [-t THREADS] [-d SECONDS]\n"
          "              [-b BUCKET_MS] [-u PATH] [-o FILE]\n",
          stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *path = "/", *out = NULL;
    int port = 0, conns = 64, threads = 2, opt;
    double dur = 20, bucket_ms = 100;
    while ((opt = getopt(argc, argv, "h:p:c:t:d:b:u:o:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': conns = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'd': dur = atof(optarg); break;
        case 'b': bucket_ms = atof(optarg); break;
        case 'u': path = optarg; break;
        case 'o': out = optarg; break;
        default: usage();
        }
    }
    if (port <= 0 || port > 65535 || conns < 1 || conns > 10000 || threads < 1 ||
        threads > 64 || !(dur > 0 && dur <= 600) || !(bucket_ms >= 1 && bucket_ms <= 10000) ||
        strlen(path) > 200 || path[0] != '/')
        usage();
    if (threads > conns)
        threads = conns;
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &g_addr.sin_addr) != 1 ||
        (ntohl(g_addr.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr, "tsload: only 127.0.0.0/8 targets are allowed\n");
        return 2;
    }
    g_reqlen = (size_t)snprintf(g_req, sizeof g_req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n",
                                path, host, port);
    g_bucket_ns = (long long)(bucket_ms * 1e6);
    g_nbuckets = (int)((dur * 1e9 + (double)g_bucket_ns - 1) / (double)g_bucket_ns);
    if (g_nbuckets < 1)
        g_nbuckets = 1;
    FILE *f = out ? fopen(out, "w") : stdout;
    if (!f) {
        perror(out);
        return 2;
    }
    worker *ws = calloc((size_t)threads, sizeof *ws);
    if (!ws)
        return 2;
    for (int i = 0; i < threads; i++) {
        ws[i].nconn = conns / threads + (i < conns % threads);
        ws[i].c = calloc((size_t)ws[i].nconn, sizeof(conn));
        ws[i].buckets = calloc((size_t)g_nbuckets, sizeof *ws[i].buckets);
        if (!ws[i].c || !ws[i].buckets)
            return 2;
    }
    g_start = now_ns();
    g_end = g_start + (long long)(dur * 1e9);
    for (int i = 0; i < threads; i++)
        pthread_create(&ws[i].th, NULL, run, &ws[i]);
    for (int i = 0; i < threads; i++)
        pthread_join(ws[i].th, NULL);

    uint64_t tot[K_N] = {0};
    fprintf(f, "# start_mono=%.9f bucket_ms=%g\n", (double)g_start / 1e9, bucket_ms);
    fprintf(f, "t_s,ok,failed,connect,read,timeout,non2xx\n");
    for (int b = 0; b < g_nbuckets; b++) {
        uint64_t s[K_N] = {0};
        for (int i = 0; i < threads; i++)
            for (int k = 0; k < K_N; k++)
                s[k] += ws[i].buckets[b][k];
        for (int k = 0; k < K_N; k++)
            tot[k] += s[k];
        fprintf(f, "%.3f,%llu,%llu,%llu,%llu,%llu,%llu\n", (double)b * bucket_ms / 1000.0,
                (unsigned long long)s[K_OK], (unsigned long long)s[K_FAILED],
                (unsigned long long)s[K_CONNECT], (unsigned long long)s[K_READ],
                (unsigned long long)s[K_TIMEOUT], (unsigned long long)s[K_NON2XX]);
    }
    if (f != stdout)
        fclose(f);
    fprintf(stderr,
            "tsload: %llu ok (%.0f/s), %llu failed (connect %llu, read %llu, timeout %llu, "
            "non2xx %llu)\n",
            (unsigned long long)tot[K_OK], (double)tot[K_OK] / dur,
            (unsigned long long)tot[K_FAILED], (unsigned long long)tot[K_CONNECT],
            (unsigned long long)tot[K_READ], (unsigned long long)tot[K_TIMEOUT],
            (unsigned long long)tot[K_NON2XX]);
    return 0;
}

/*
 * uv-echo - the echo server of examples/echo.c on a libuv loop.
 *
 * How libhandoff fits into libuv:
 *  - handoff_event_fd() is watched with a uv_poll_t; its callback calls
 *    handoff_next_event() until it returns 0.
 *  - Listeners from handoff_listen() are watched with uv_poll_t too, and
 *    accepted with handoff_accept(). They are NOT given to uv_tcp_open() or
 *    uv_pipe_open(): libuv would own them and close them at uv_close(),
 *    while they belong to the handle and must stay open for the next
 *    generation.
 *  - Accepted connections are ordinary libuv streams (uv_tcp_open() or
 *    uv_pipe_open()); their close callback calls handoff_conn_end().
 *  - HANDOFF_EVENT_DRAIN: stop polling the listeners. HANDOFF_EVENT_STOP:
 *    close everything, let uv_run() return, then handoff_free().
 *
 *   uv-echo --listen 127.0.0.1:9000 --pid-file /tmp/uv-echo.pid
 *   kill -HUP $(cat /tmp/uv-echo.pid)     # zero-downtime restart
 *   kill -TERM $(cat /tmp/uv-echo.pid)    # graceful stop
 */
#include <handoff.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_LISTEN 16
#define MAX_QUEUED (1u << 20) /* stop reading while this much is unsent */

enum kind { K_TCP, K_UNIX, K_UDP };

struct listener {
    uv_poll_t poll; /* first: the handle's address is the struct's */
    int fd;         /* owned by the handoff handle, never closed here */
    enum kind kind;
};

struct conn {
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
        uv_stream_t stream;
        uv_handle_t handle;
    } u;
    int reading;
};

struct wreq {
    uv_write_t req; /* first: the request's address is the struct's */
    struct conn *c;
    char data[];
};

static struct {
    handoff_t *h;
    uv_loop_t *loop;
    uv_poll_t events;
    struct listener ls[MAX_LISTEN];
    int nl;
    int verbose;
} S;

static void usage(FILE *f)
{
    fprintf(f, "usage: uv-echo [options]\n"
               "  --listen ADDR          address to serve (repeatable; default 127.0.0.1:9000):\n"
               "                         HOST:PORT, [V6]:PORT, udp://HOST:PORT, unix:/path, unix:@name\n"
               "  --pid-file PATH        file that always names the serving pid\n"
               "  --drain-timeout SEC    close connections still open after SEC (default 30)\n"
               "  --verbose              log every event\n"
               "  --help                 this text\n"
               "SIGHUP: zero-downtime restart. SIGTERM/SIGINT: graceful stop (twice: now).\n");
}

static void conn_closed(uv_handle_t *hd)
{
    free(hd->data);
    handoff_conn_end(S.h);
}

static void conn_close(struct conn *c)
{
    if (!uv_is_closing(&c->u.handle))
        uv_close(&c->u.handle, conn_closed);
}

static void alloc_cb(uv_handle_t *hd, size_t suggested, uv_buf_t *buf)
{
    (void)hd;
    buf->base = malloc(suggested);
    buf->len = buf->base ? suggested : 0;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void write_cb(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct conn *c = w->c;

    free(w);
    if (status < 0) {
        conn_close(c);
        return;
    }
    /* Resume reading once the peer has taken most of what we owe it. */
    if (!c->reading && !uv_is_closing(&c->u.handle) &&
        uv_stream_get_write_queue_size(&c->u.stream) < MAX_QUEUED / 2 &&
        uv_read_start(&c->u.stream, alloc_cb, read_cb) == 0)
        c->reading = 1;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = s->data;

    if (n > 0) {
        struct wreq *w = malloc(sizeof *w + (size_t)n);
        if (!w) {
            free(buf->base);
            conn_close(c);
            return;
        }
        w->c = c;
        memcpy(w->data, buf->base, (size_t)n);
        uv_buf_t out = uv_buf_init(w->data, (unsigned)n);
        if (uv_write(&w->req, s, &out, 1, write_cb) < 0) {
            free(w);
            conn_close(c);
        } else if (uv_stream_get_write_queue_size(s) > MAX_QUEUED) {
            (void)uv_read_stop(s);
            c->reading = 0;
        }
    } else if (n < 0) {
        conn_close(c); /* UV_EOF or an error */
    }
    free(buf->base);
}

/* Wraps an accepted fd in a libuv stream, which owns it from then on. */
static void conn_start(int fd, enum kind kind)
{
    struct conn *c = calloc(1, sizeof *c);
    int r;

    if (!c) {
        (void)close(fd);
        handoff_conn_end(S.h);
        return;
    }
    r = kind == K_TCP ? uv_tcp_init(S.loop, &c->u.tcp) : uv_pipe_init(S.loop, &c->u.pipe, 0);
    if (r < 0) {
        (void)close(fd);
        free(c);
        handoff_conn_end(S.h);
        return;
    }
    c->u.handle.data = c;
    if (kind == K_TCP) {
        r = uv_tcp_open(&c->u.tcp, fd);
        if (r == 0)
            (void)uv_tcp_nodelay(&c->u.tcp, 1);
    } else {
        r = uv_pipe_open(&c->u.pipe, fd);
    }
    if (r < 0) {
        /* libuv does not own fd: the open failed. */
        (void)close(fd);
        uv_close(&c->u.handle, conn_closed);
        return;
    }
    if (uv_read_start(&c->u.stream, alloc_cb, read_cb) < 0) {
        conn_close(c); /* closes fd */
        return;
    }
    c->reading = 1;
}

static void udp_echo(int fd)
{
    char buf[65536];
    struct sockaddr_storage peer;

    for (int i = 0; i < 64; i++) {
        socklen_t plen = sizeof peer;
        ssize_t n = recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&peer, &plen);
        if (n < 0)
            return;
        (void)sendto(fd, buf, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&peer, plen);
    }
}

static void listener_cb(uv_poll_t *p, int status, int events)
{
    struct listener *l = (struct listener *)p;

    (void)events;
    if (status < 0)
        return;
    if (l->kind == K_UDP) {
        udp_echo(l->fd);
        return;
    }
    for (int i = 0; i < 64; i++) {
        int fd = handoff_accept(S.h, l->fd, 1); /* counted: conn_begin */
        if (fd < 0) {
            if (fd != -EAGAIN && fd != -ECONNABORTED)
                fprintf(stderr, "uv-echo[%d]: accept: %s\n", getpid(), strerror(-fd));
            return;
        }
        conn_start(fd, l->kind);
    }
}

static void stop_accepting(void)
{
    /* The listener fds stay open (the handle owns them and the successor
     * shares them); only our interest in them ends. */
    for (int i = 0; i < S.nl; i++)
        if (!uv_is_closing((uv_handle_t *)&S.ls[i].poll))
            uv_close((uv_handle_t *)&S.ls[i].poll, NULL);
}

static void close_all(uv_handle_t *hd, void *arg)
{
    (void)arg;
    if (uv_is_closing(hd))
        return;
    if (hd->type == UV_TCP || hd->type == UV_NAMED_PIPE)
        conn_close(hd->data);
    else
        uv_close(hd, NULL);
}

static void events_cb(uv_poll_t *p, int status, int events)
{
    handoff_event ev;
    int r;

    (void)p;
    (void)status;
    (void)events;
    while ((r = handoff_next_event(S.h, &ev)) > 0) {
        if (S.verbose || ev.type == HANDOFF_EVENT_UPGRADE_FAILED)
            fprintf(stderr, "uv-echo[%d]: %s: %s\n", getpid(), handoff_event_name(ev.type),
                    ev.message);
        if (ev.type == HANDOFF_EVENT_DRAIN) {
            stop_accepting();
        } else if (ev.type == HANDOFF_EVENT_STOP) {
            /* Drained, or the hammer: close whatever is left, including
             * this poll handle, so that uv_run() returns. */
            uv_walk(S.loop, close_all, NULL);
            return;
        }
    }
    if (r < 0)
        fprintf(stderr, "uv-echo[%d]: handoff_next_event: %s\n", getpid(), strerror(-r));
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"pid-file", required_argument, NULL, 'p'},
        {"drain-timeout", required_argument, NULL, 'd'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    handoff_options o = HANDOFF_OPTIONS_INIT;
    const char *specs[MAX_LISTEN];
    int nspecs = 0, c, r;

    while ((c = getopt_long(argc, argv, "l:p:d:vh", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (nspecs == MAX_LISTEN) {
                fprintf(stderr, "uv-echo: at most %d --listen\n", MAX_LISTEN);
                return 2;
            }
            specs[nspecs++] = optarg;
            break;
        case 'p':
            o.pid_file = optarg;
            break;
        case 'd': {
            char *end;
            double s = strtod(optarg, &end);
            if (*end || s <= 0) {
                fprintf(stderr, "uv-echo: --drain-timeout wants seconds > 0\n");
                return 2;
            }
            o.drain_timeout_usec = (uint64_t)(s * 1e6);
            break;
        }
        case 'v':
            S.verbose = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "uv-echo: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (nspecs == 0)
        specs[nspecs++] = "127.0.0.1:9000";

    /* First, before libuv or anything else starts a thread. */
    o.argv = argv;
    o.log = handoff_log_stderr;
    o.log_level = S.verbose ? HANDOFF_LOG_INFO : HANDOFF_LOG_WARNING;
    r = handoff_new(&o, &S.h);
    if (r < 0) {
        fprintf(stderr, "uv-echo: handoff_new: %s\n", strerror(-r));
        return 1;
    }
    /* libuv writes with write(2): a peer that went away must not kill us.
     * Set after handoff_new(), so successors start with the default. */
    (void)signal(SIGPIPE, SIG_IGN);
    S.loop = uv_default_loop();

    for (int i = 0; i < nspecs; i++) {
        handoff_addr a;
        int fd = handoff_listen(S.h, NULL, specs[i], NULL);
        if (fd < 0) {
            fprintf(stderr, "uv-echo: %s\n", handoff_errmsg(S.h));
            handoff_free(S.h);
            return 1;
        }
        (void)handoff_addr_parse(specs[i], &a, NULL, 0);
        /* An inherited socket keeps its mode (systemd's are blocking). */
        (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        S.ls[S.nl].fd = fd;
        S.ls[S.nl].kind = a.kind == HANDOFF_ADDR_UDP    ? K_UDP
                          : a.kind == HANDOFF_ADDR_UNIX ? K_UNIX
                                                        : K_TCP;
        if (uv_poll_init(S.loop, &S.ls[S.nl].poll, fd) < 0 ||
            uv_poll_start(&S.ls[S.nl].poll, UV_READABLE, listener_cb) < 0) {
            fprintf(stderr, "uv-echo: cannot watch %s\n", specs[i]);
            handoff_free(S.h);
            return 1;
        }
        S.nl++;
    }
    if (uv_poll_init(S.loop, &S.events, handoff_event_fd(S.h)) < 0 ||
        uv_poll_start(&S.events, UV_READABLE, events_cb) < 0) {
        fprintf(stderr, "uv-echo: cannot watch the handoff event fd\n");
        handoff_free(S.h);
        return 1;
    }
    handoff_ready(S.h);
    if (S.verbose)
        fprintf(stderr, "uv-echo[%d]: generation %u serving\n", getpid(),
                handoff_generation(S.h));

    (void)uv_run(S.loop, UV_RUN_DEFAULT);

    /* Every handle is closed (conn_closed() ran handoff_conn_end() for
     * each connection) and the event fd is no longer watched, so the
     * handle may go now. */
    (void)uv_loop_close(S.loop);
    handoff_free(S.h);
    return 0;
}

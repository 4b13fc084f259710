/*
 * event-echo - the echo server of examples/echo.c on a libevent loop.
 *
 * How libhandoff fits into libevent:
 *  - handoff_event_fd() is watched with event_new(EV_READ | EV_PERSIST);
 *    its callback calls handoff_next_event() until it returns 0.
 *  - Each stream listener from handoff_listen() is wrapped in an
 *    evconnlistener WITHOUT LEV_OPT_CLOSE_ON_FREE (the fd belongs to the
 *    handoff handle and must stay open for the next generation) and with
 *    backlog 0 (it is already listening). Its callback counts the
 *    connection with handoff_conn_begin(); bufferevent_free() of the
 *    connection is followed by handoff_conn_end().
 *  - HANDOFF_EVENT_DRAIN: free the listeners (the fds stay open).
 *    HANDOFF_EVENT_STOP: free every connection, leave the loop, then
 *    handoff_free().
 *
 *   event-echo --listen 127.0.0.1:9000 --pid-file /tmp/event-echo.pid
 *   kill -HUP $(cat /tmp/event-echo.pid)     # zero-downtime restart
 *   kill -TERM $(cat /tmp/event-echo.pid)    # graceful stop
 */
#include <handoff.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

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
#define HIGH_WATER (1u << 20) /* stop reading while this much is unsent */

struct conn {
    struct bufferevent *bev;
    struct conn *prev, *next;
};

static struct {
    handoff_t *h;
    struct event_base *base;
    struct event *events;
    struct evconnlistener *ls[MAX_LISTEN]; /* stream listeners */
    struct event *udp[MAX_LISTEN];         /* datagram sockets */
    int nl;
    struct conn *conns;
    int verbose;
} S;

static void usage(FILE *f)
{
    fprintf(f, "usage: event-echo [options]\n"
               "  --listen ADDR          address to serve (repeatable; default 127.0.0.1:9000):\n"
               "                         HOST:PORT, [V6]:PORT, udp://HOST:PORT, unix:/path, unix:@name\n"
               "  --pid-file PATH        file that always names the serving pid\n"
               "  --drain-timeout SEC    close connections still open after SEC (default 30)\n"
               "  --verbose              log every event\n"
               "  --help                 this text\n"
               "SIGHUP: zero-downtime restart. SIGTERM/SIGINT: graceful stop (twice: now).\n");
}

static void conn_free(struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        S.conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    bufferevent_free(c->bev); /* BEV_OPT_CLOSE_ON_FREE: closes the fd */
    free(c);
    handoff_conn_end(S.h);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    (void)arg;
    /* Echo: move everything read to the output buffer. */
    (void)evbuffer_add_buffer(bufferevent_get_output(bev), bufferevent_get_input(bev));
    if (evbuffer_get_length(bufferevent_get_output(bev)) > HIGH_WATER)
        (void)bufferevent_disable(bev, EV_READ);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    (void)arg;
    /* Called when the output drained to the low watermark (0). */
    (void)bufferevent_enable(bev, EV_READ);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        conn_free(arg);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct conn *c = calloc(1, sizeof *c);

    (void)l;
    (void)sa;
    (void)salen;
    (void)arg;
    handoff_conn_begin(S.h); /* from now on the drain waits for it */
    if (c)
        c->bev = bufferevent_socket_new(S.base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c || !c->bev) {
        (void)close(fd);
        free(c);
        handoff_conn_end(S.h);
        return;
    }
    c->next = S.conns;
    if (S.conns)
        S.conns->prev = c;
    S.conns = c;
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    (void)bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    (void)l;
    (void)arg;
    /* EMFILE and the like: libevent retries on the next readiness. */
    fprintf(stderr, "event-echo[%d]: accept: %s\n", getpid(),
            evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static void udp_cb(evutil_socket_t fd, short what, void *arg)
{
    char buf[65536];
    struct sockaddr_storage peer;

    (void)what;
    (void)arg;
    for (int i = 0; i < 64; i++) {
        socklen_t plen = sizeof peer;
        ssize_t n = recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&peer, &plen);
        if (n < 0)
            return;
        (void)sendto(fd, buf, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&peer, plen);
    }
}

static void stop_accepting(void)
{
    /* Without LEV_OPT_CLOSE_ON_FREE, freeing a listener leaves its fd
     * open: the handle owns it and the successor shares it. */
    for (int i = 0; i < S.nl; i++) {
        if (S.ls[i])
            evconnlistener_free(S.ls[i]);
        if (S.udp[i])
            event_free(S.udp[i]);
        S.ls[i] = NULL;
        S.udp[i] = NULL;
    }
}

static void events_cb(evutil_socket_t fd, short what, void *arg)
{
    handoff_event ev;
    int r;

    (void)fd;
    (void)what;
    (void)arg;
    while ((r = handoff_next_event(S.h, &ev)) > 0) {
        if (S.verbose || ev.type == HANDOFF_EVENT_UPGRADE_FAILED)
            fprintf(stderr, "event-echo[%d]: %s: %s\n", getpid(), handoff_event_name(ev.type),
                    ev.message);
        if (ev.type == HANDOFF_EVENT_DRAIN) {
            stop_accepting();
        } else if (ev.type == HANDOFF_EVENT_STOP) {
            /* Drained, or the hammer: close what is left and leave. */
            stop_accepting();
            while (S.conns)
                conn_free(S.conns);
            (void)event_base_loopbreak(S.base);
            return;
        }
    }
    if (r < 0)
        fprintf(stderr, "event-echo[%d]: handoff_next_event: %s\n", getpid(), strerror(-r));
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
                fprintf(stderr, "event-echo: at most %d --listen\n", MAX_LISTEN);
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
                fprintf(stderr, "event-echo: --drain-timeout wants seconds > 0\n");
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
        fprintf(stderr, "event-echo: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (nspecs == 0)
        specs[nspecs++] = "127.0.0.1:9000";

    /* First, before anything else starts a thread. */
    o.argv = argv;
    o.log = handoff_log_stderr;
    o.log_level = S.verbose ? HANDOFF_LOG_INFO : HANDOFF_LOG_WARNING;
    r = handoff_new(&o, &S.h);
    if (r < 0) {
        fprintf(stderr, "event-echo: handoff_new: %s\n", strerror(-r));
        return 1;
    }
    /* bufferevents write with writev(2): a peer that went away must not
     * kill us. Set after handoff_new(), so successors start with the
     * default. */
    (void)signal(SIGPIPE, SIG_IGN);
    S.base = event_base_new();
    if (!S.base) {
        fprintf(stderr, "event-echo: event_base_new failed\n");
        handoff_free(S.h);
        return 1;
    }

    for (int i = 0; i < nspecs; i++) {
        handoff_addr a;
        int fd = handoff_listen(S.h, NULL, specs[i], NULL);
        if (fd < 0) {
            fprintf(stderr, "event-echo: %s\n", handoff_errmsg(S.h));
            return 1;
        }
        (void)handoff_addr_parse(specs[i], &a, NULL, 0);
        /* An inherited socket keeps its mode (systemd's are blocking);
         * evconnlistener needs a non-blocking one. */
        (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        if (a.kind == HANDOFF_ADDR_UDP) {
            S.udp[S.nl] = event_new(S.base, fd, EV_READ | EV_PERSIST, udp_cb, NULL);
            r = S.udp[S.nl] ? event_add(S.udp[S.nl], NULL) : -1;
        } else {
            S.ls[S.nl] = evconnlistener_new(S.base, accept_cb, NULL, LEV_OPT_CLOSE_ON_EXEC, 0, fd);
            r = S.ls[S.nl] ? 0 : -1;
            if (S.ls[S.nl])
                evconnlistener_set_error_cb(S.ls[S.nl], accept_error_cb);
        }
        if (r < 0) {
            fprintf(stderr, "event-echo: cannot watch %s\n", specs[i]);
            return 1;
        }
        S.nl++;
    }
    S.events = event_new(S.base, handoff_event_fd(S.h), EV_READ | EV_PERSIST, events_cb, NULL);
    if (!S.events || event_add(S.events, NULL) < 0) {
        fprintf(stderr, "event-echo: cannot watch the handoff event fd\n");
        return 1;
    }
    handoff_ready(S.h);
    if (S.verbose)
        fprintf(stderr, "event-echo[%d]: generation %u serving\n", getpid(),
                handoff_generation(S.h));

    (void)event_base_dispatch(S.base);

    /* Stop watching the event fd before handoff_free() closes it. */
    event_free(S.events);
    event_base_free(S.base);
    handoff_free(S.h);
    return 0;
}

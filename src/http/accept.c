/*
 * accept.c - listeners in the workers (see accept.h).
 */
#include "accept.h"

#include "conn.h"
#include "h1.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

/* Connections accepted per listener event (fairness between workers),
 * and at most by a worker taking what is queued when it starts draining. */
#define ACCEPT_BATCH 16
#define DRAIN_SWEEP_MAX 4096
/* How long a worker stops watching the listeners when accept() fails for
 * lack of descriptors or memory (level-triggered: it would spin). */
#define EMFILE_PAUSE_USEC (100 * HANDOFF_USEC_PER_MSEC)

void hs_accept_start(struct hs_worker *w, struct hs_listener *l, int fd,
                     const struct sockaddr *peer, socklen_t peer_len)
{
    struct hs_conn *c = hs_conn_new(w, fd, peer, peer_len, l->ctx, &hs_h1_proto);
    if (!c) {
        (void)close(fd);
        hs_count_end(w->counter);
        atomic_fetch_sub(&w->load, 1);
        return;
    }
    c->h2c = l->h2c; /* HTTP/1.1 hands it to HTTP/2 on the preface */
}

/* The worker with the fewest connections, charged with one more. With
 * EPOLLEXCLUSIVE the kernel wakes one idle worker per new connection, but
 * the one that wakes first drains the whole accept queue, so a burst of
 * connections (a load balancer, wrk) would all land on one thread. The
 * accepting worker therefore hands each connection to the least loaded
 * worker; connections are long-lived, so this is rare once balanced. */
static struct hs_worker *pick_worker(struct hs_worker *w)
{
    handoff_http_server *srv = hs_server_of(w);
    struct hs_worker *best = w;
    unsigned least = atomic_load_explicit(&w->load, memory_order_relaxed);
    for (unsigned i = 0; i < srv->nws && least > 0; i++) {
        unsigned n = atomic_load_explicit(&srv->ws[i].load, memory_order_relaxed);
        if (n < least) {
            least = n;
            best = &srv->ws[i];
        }
    }
    atomic_fetch_add_explicit(&best->load, 1, memory_order_relaxed);
    return best;
}

/* A connection accepted by one worker for another. */
struct incoming {
    struct hs_task t;
    int fd;
    struct hs_listener *l;
    socklen_t peer_len;
    struct sockaddr_storage peer;
};

static void incoming_run(struct hs_worker *w, struct hs_task *t, bool cancel)
{
    struct incoming *in = (struct incoming *)(void *)t;
    if (cancel) {
        /* Never adopted: the worker stopped first. */
        (void)close(in->fd);
        hs_count_end(w->counter);
        atomic_fetch_sub(&w->load, 1);
    } else {
        hs_accept_start(w, in->l, in->fd, (const struct sockaddr *)&in->peer, in->peer_len);
    }
    free(in);
}

static void hand_over(struct hs_worker *to, struct hs_listener *l, int fd,
                      const struct sockaddr_storage *peer, socklen_t peer_len)
{
    struct incoming *in = malloc(sizeof *in);
    if (!in) {
        (void)close(fd);
        hs_count_end(to->counter);
        atomic_fetch_sub(&to->load, 1);
        return;
    }
    in->t.run = incoming_run;
    in->fd = fd;
    in->l = l;
    in->peer = *peer;
    in->peer_len = peer_len;
    hs_post(to, &in->t);
}

static void resume_accept(void *obj, void (*fn)(void), void *arg)
{
    (void)fn;
    (void)arg;
    struct hs_worker *w = obj;
    w->accept_paused = false;
    if (!w->draining && !w->finishing)
        hs_listeners_watch(w, true);
}

/* Accepts up to max connections from l (fewer when its queue is empty)
 * and starts serving them, on this worker or a less loaded one. */
static void accept_some(struct hs_worker *w, struct hs_listener *l, int max)
{
    for (int i = 0; i < max; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        ss.ss_family = AF_UNSPEC; /* should accept4() not fill it in */
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if ((errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) &&
                !w->accept_paused &&
                hs_timer_add(w, w->now + EMFILE_PAUSE_USEC, resume_accept, w, NULL, NULL) == 0) {
                /* Level-triggered: the listener would wake us at once.
                 * Stop watching it for a moment instead of spinning. */
                hs_listeners_watch(w, false);
                w->accept_paused = true;
            }
            return;
        }
        if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
            int one = 1;
            (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        /* Counted from here on, so that a drain cannot complete while the
         * connection is on its way to another worker. */
        hs_count_begin(w->counter);
        struct hs_worker *to = pick_worker(w);
        if (to == w)
            hs_accept_start(w, l, fd, (struct sockaddr *)&ss, len);
        else
            hand_over(to, l, fd, &ss, len);
    }
}

static void listener_io(struct hs_handle *h, uint32_t events)
{
    (void)events;
    struct hs_lwatch *lw = (struct hs_lwatch *)(void *)h;
    struct hs_worker *w = lw->w;
    /* Draining: the connections this wake-up was for are taken by
     * hs_accept_sweep(), which the worker runs next (the flag is set
     * before the workers are woken). */
    if (w->draining || atomic_load_explicit(&hs_server_of(w)->draining, memory_order_relaxed))
        return;
    accept_some(w, lw->l, ACCEPT_BATCH);
}

static const struct hs_handle_ops listener_ops = {.io = listener_io};

int hs_accept_init(struct hs_worker *w)
{
    handoff_http_server *srv = hs_server_of(w);
    w->lw = calloc(srv->nls ? srv->nls : 1, sizeof *w->lw);
    if (!w->lw)
        return -ENOMEM;
    for (size_t i = 0; i < srv->nls; i++)
        w->lw[i] = (struct hs_lwatch){.h.ops = &listener_ops, .w = w, .l = &srv->ls[i]};
    return 0;
}

void hs_accept_free(struct hs_worker *w)
{
    free(w->lw);
    w->lw = NULL;
}

void hs_listeners_watch(struct hs_worker *w, bool on)
{
    handoff_http_server *srv = hs_server_of(w);
    for (size_t i = 0; i < srv->nls; i++) {
        if (on)
            (void)hs_watch(w, srv->ls[i].fd, EPOLLIN | EPOLLEXCLUSIVE, &w->lw[i].h);
        else
            hs_unwatch(w, srv->ls[i].fd);
    }
    /* handoff_http_server_drain() sets the flag, then removes the
     * listeners from every epoll instance. Checking the flag after adding
     * them means that either the drain's removal comes after this
     * addition, or this check sees the flag. */
    if (on && atomic_load(&srv->draining))
        hs_listeners_watch(w, false);
}

void hs_accept_sweep(struct hs_worker *w)
{
    handoff_http_server *srv = hs_server_of(w);
    for (size_t i = 0; i < srv->nls; i++)
        accept_some(w, &srv->ls[i], DRAIN_SWEEP_MAX);
}

/*
 * server.c - the server object and its worker threads.
 *
 * Each worker has one epoll instance watching every listener
 * (EPOLLEXCLUSIVE, level-triggered, so one idle worker is woken per new
 * connection), its eventfd, and its own connections (edge-triggered).
 * Everything a worker owns is touched by its thread only, except the
 * cross-thread queue (w->mu) through which other threads hand back
 * responses, and the drain/stop flags, which are atomics announced
 * through the eventfd.
 *
 * One loop iteration: wait (until the next timeout), handle the events,
 * run due deferred callbacks and timeouts, work through the ready list,
 * then free the connections closed during the iteration (the graveyard):
 * an event for a closed connection may still sit in the batch.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

_Thread_local struct hs_worker *hs_current;

#define DEFAULT_READ_TIMEOUT (30 * HANDOFF_USEC_PER_SEC)
#define DEFAULT_WRITE_TIMEOUT (30 * HANDOFF_USEC_PER_SEC)
#define DEFAULT_IDLE_TIMEOUT (60 * HANDOFF_USEC_PER_SEC)
#define DEFAULT_TLS_TIMEOUT (10 * HANDOFF_USEC_PER_SEC)
#define DEFAULT_MAX_HEADER 8192
#define DEFAULT_MAX_BODY ((uint64_t)1 << 20)
#define DEFAULT_MAX_KEEPALIVE 10000
#define EMFILE_PAUSE_USEC (100 * HANDOFF_USEC_PER_MSEC)

/* ------------------------------------------------------------------------ */
/* Small helpers used by the other files                                    */

void hs_wake(struct hs_worker *w)
{
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(w->evfd, &one, sizeof one);
    } while (n < 0 && errno == EINTR);
    /* EAGAIN means the counter is saturated: a wake-up is pending anyway. */
}

void hs_ready_push(struct hs_conn *c)
{
    struct hs_worker *w = c->w;
    if (c->in_ready)
        return;
    c->in_ready = true;
    w->nready++;
    c->rnext = NULL;
    c->rprev = w->ready_tail;
    if (w->ready_tail)
        w->ready_tail->rnext = c;
    else
        w->ready_head = c;
    w->ready_tail = c;
}

static struct hs_conn *ready_pop(struct hs_worker *w)
{
    struct hs_conn *c = w->ready_head;
    if (!c)
        return NULL;
    w->ready_head = c->rnext;
    if (w->ready_head)
        w->ready_head->rprev = NULL;
    else
        w->ready_tail = NULL;
    c->in_ready = false;
    w->nready--;
    c->rnext = c->rprev = NULL;
    return c;
}

void hs_count_begin(handoff_http_server *srv)
{
    atomic_fetch_add(&srv->nconn, 1);
    if (srv->h)
        handoff_conn_begin(srv->h);
}

void hs_count_end(handoff_http_server *srv)
{
    atomic_fetch_sub(&srv->nconn, 1);
    if (srv->h)
        handoff_conn_end(srv->h);
}

void hs_date_update(struct hs_worker *w, bool force)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (force || ts.tv_sec != w->date_sec) {
        w->date_sec = ts.tv_sec;
        hh_format_date(ts.tv_sec, w->date);
    }
}

/* ------------------------------------------------------------------------ */
/* Timeouts: one list per class, sorted because each has one duration      */

/* a + b, or UINT64_MAX (HANDOFF_NO_TIMEOUT: never) if that overflows. */
static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* When a connection that entered list cls at since times out, or
 * UINT64_MAX for never (a HANDOFF_NO_TIMEOUT option). */
static uint64_t expiry(const struct hs_worker *w, int cls, uint64_t since);

static uint64_t tdur(const struct hs_worker *w, int cls)
{
    uint64_t d = w->srv->tdur[cls];
    /* Draining shortens the waits for a request that may never come; the
     * timeout then reads once before closing (see hs_conn_timeout()). */
    if (w->draining) {
        if (cls == HS_T_IDLE && d > HS_DRAIN_GRACE_USEC)
            d = HS_DRAIN_GRACE_USEC;
        if (cls == HS_T_NEW && d > HS_DRAIN_GRACE_NEW_USEC)
            d = HS_DRAIN_GRACE_NEW_USEC;
    }
    return d;
}

static uint64_t expiry(const struct hs_worker *w, int cls, uint64_t since)
{
    uint64_t d = tdur(w, cls);
    return d == HANDOFF_NO_TIMEOUT ? UINT64_MAX : sat_add(since, d);
}

void hs_tset(struct hs_conn *c, int cls, bool refresh)
{
    struct hs_worker *w = c->w;
    if (c->tclass == cls && !refresh)
        return;
    if (cls != HS_T_NONE && (c->state == HS_C_DEAD || c->state == HS_C_GONE))
        return; /* closed: no timeouts (and tnext may be the graveyard's) */
    if (c->tclass != HS_T_NONE) {
        struct hs_tlist *l = &w->tl[c->tclass];
        if (c->tprev)
            c->tprev->tnext = c->tnext;
        else
            l->head = c->tnext;
        if (c->tnext)
            c->tnext->tprev = c->tprev;
        else
            l->tail = c->tprev;
        c->tprev = c->tnext = NULL;
    }
    c->tclass = (uint8_t)cls;
    if (cls == HS_T_NONE)
        return;
    struct hs_tlist *l = &w->tl[cls];
    c->tsince = w->now;
    c->tprev = l->tail;
    if (l->tail)
        l->tail->tnext = c;
    else
        l->head = c;
    l->tail = c;
}

/* ------------------------------------------------------------------------ */
/* Deferred callbacks: a binary min-heap on (at, seq)                       */

static bool tless(const struct hs_timer *a, const struct hs_timer *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

int hs_timer_add(struct hs_worker *w, handoff_http_response *res, uint64_t at,
                 handoff_http_defer_fn fn, void *arg)
{
    if (w->finishing)
        return -ECANCELED; /* the stop runs every callback once, no more */
    if (w->ntimers == w->captimers) {
        size_t cap = w->captimers ? w->captimers * 2 : 16;
        struct hs_timer *t = realloc(w->timers, cap * sizeof *t);
        if (!t)
            return -ENOMEM;
        w->timers = t;
        w->captimers = cap;
    }
    struct hs_timer nt = {.at = at, .seq = w->timer_seq++, .res = res, .fn = fn, .arg = arg};
    size_t i = w->ntimers++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!tless(&nt, &w->timers[parent]))
            break;
        w->timers[i] = w->timers[parent];
        i = parent;
    }
    w->timers[i] = nt;
    return 0;
}

static struct hs_timer timer_pop(struct hs_worker *w)
{
    struct hs_timer top = w->timers[0];
    struct hs_timer last = w->timers[--w->ntimers];
    size_t i = 0, n = w->ntimers;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        const struct hs_timer *best = &last;
        if (l < n && tless(&w->timers[l], best)) {
            m = l;
            best = &w->timers[l];
        }
        if (l + 1 < n && tless(&w->timers[l + 1], best))
            m = l + 1;
        if (m == i)
            break;
        w->timers[i] = w->timers[m];
        i = m;
    }
    if (n)
        w->timers[i] = last;
    return top;
}

static void run_timer(struct hs_timer t)
{
    t.fn(t.res, t.arg);
}

/* ------------------------------------------------------------------------ */
/* The worker                                                               */

static void set_listeners(struct hs_worker *w, bool on)
{
    handoff_http_server *srv = w->srv;
    for (size_t i = 0; i < srv->nls; i++) {
        if (on) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE,
                                     .data.ptr = &w->lw[i]};
            (void)epoll_ctl(w->epfd, EPOLL_CTL_ADD, srv->ls[i].fd, &ev);
        } else {
            (void)epoll_ctl(w->epfd, EPOLL_CTL_DEL, srv->ls[i].fd, NULL);
        }
    }
    /* handoff_http_server_drain() sets the flag, then removes the
     * listeners from every epoll instance. Checking the flag after adding
     * them means that either the drain's removal comes after this
     * addition, or this check sees the flag: a listener is never left
     * watched by a draining server (whose caller may close it). */
    if (on && atomic_load(&srv->draining))
        set_listeners(w, false);
}

/* Starts serving an accepted socket on w. */
static void adopt(struct hs_worker *w, struct hs_listener *l, int fd,
                  const struct sockaddr *peer, socklen_t peer_len)
{
    if (!hs_conn_new(w, l, fd, peer, peer_len)) {
        (void)close(fd);
        hs_count_end(w->srv);
        atomic_fetch_sub(&w->load, 1);
    }
}

/* The worker with the fewest connections, charged with one more. With
 * EPOLLEXCLUSIVE the kernel wakes one idle worker per new connection, but
 * the one that wakes first drains the whole accept queue, so a burst of
 * connections (a load balancer, wrk) would all land on one thread. The
 * accepting worker therefore hands each connection to the least loaded
 * worker; connections are long-lived, so this is rare once balanced. */
static struct hs_worker *pick_worker(struct hs_worker *w)
{
    handoff_http_server *srv = w->srv;
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

static void hand_over(struct hs_worker *to, struct hs_listener *l, int fd,
                      const struct sockaddr_storage *peer, socklen_t peer_len)
{
    struct hs_incoming *in = malloc(sizeof *in);
    if (!in) {
        (void)close(fd);
        hs_count_end(to->srv);
        atomic_fetch_sub(&to->load, 1);
        return;
    }
    in->fd = fd;
    in->l = l;
    in->peer = *peer;
    in->peer_len = peer_len;
    pthread_mutex_lock(&to->mu);
    in->next = to->in_head;
    to->in_head = in;
    pthread_mutex_unlock(&to->mu);
    hs_wake(to);
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
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                errno == ENOMEM) {
                /* Level-triggered: the listener would wake us at once.
                 * Stop watching it for a moment instead of spinning. */
                set_listeners(w, false);
                w->accept_paused_until = w->now + EMFILE_PAUSE_USEC;
            }
            return;
        }
        if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
            int one = 1;
            (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        /* Counted from here on, so that a drain cannot complete while the
         * connection is on its way to another worker. */
        hs_count_begin(w->srv);
        struct hs_worker *to = pick_worker(w);
        if (to == w)
            adopt(w, l, fd, (struct sockaddr *)&ss, len);
        else
            hand_over(to, l, fd, &ss, len);
    }
}

static void worker_accept(struct hs_worker *w, struct hs_listener *l)
{
    /* Draining: the connections this wake-up was for are taken by
     * apply_drain(), which this worker runs next (the flag is set before
     * the workers are woken). */
    if (w->draining || atomic_load_explicit(&w->srv->draining, memory_order_relaxed))
        return;
    accept_some(w, l, HS_ACCEPT_BATCH);
}

static struct hs_incoming *take_incoming(struct hs_worker *w)
{
    pthread_mutex_lock(&w->mu);
    struct hs_incoming *in = w->in_head;
    w->in_head = NULL;
    pthread_mutex_unlock(&w->mu);
    return in;
}

/* Closes connections handed over but never adopted (at the stop). */
static void drop_incoming(struct hs_worker *w)
{
    struct hs_incoming *in = take_incoming(w);
    while (in) {
        struct hs_incoming *next = in->next;
        (void)close(in->fd);
        hs_count_end(w->srv);
        atomic_fetch_sub(&w->load, 1);
        free(in);
        in = next;
    }
}

static void apply_drain(struct hs_worker *w)
{
    if (!w->draining) {
        /* Idle and new connections are then closed by run_due() as their
         * shortened timeouts expire; the others get "Connection: close". */
        w->draining = true;
        set_listeners(w, false);
        /* With EPOLLEXCLUSIVE the kernel wakes one epoll instance per new
         * connection. One that woke this worker while the drain was being
         * set up (and was not accepted, see worker_accept()) would wait in
         * the backlog until another connection woke the successor, for
         * ever on a quiet server: take what is queued now. The listeners
         * are out of this worker's epoll already, so whatever arrives from
         * now on wakes the successor (or, on a shutdown, is refused when
         * the listeners close). The fds are still open: the drain has not
         * been acknowledged yet. */
        for (size_t i = 0; i < w->srv->nls; i++)
            accept_some(w, &w->srv->ls[i], HS_DRAIN_SWEEP_MAX);
        w->accept_paused_until = 0;
    }
    /* The sequence number was raised before the flag was set, so this is
     * the number of the drain that set it (or a later one). */
    atomic_store(&w->drain_ack, atomic_load(&w->srv->drain_seq));
}

/* handoff_http_server_resume(): serve as before the drain. Keyed on the
 * resume's number rather than on w->draining: the drain may have removed
 * the listeners from this worker's epoll (from the loop thread) before
 * the worker itself ever saw the flag. */
static void apply_resume(struct hs_worker *w, unsigned seq)
{
    w->resume_seen = seq;
    w->draining = false;
    set_listeners(w, true); /* which re-checks the flag: a new drain wins */
}

/* The eventfd fired: control flags and responses from other threads. */
static void worker_wake(struct hs_worker *w)
{
    uint64_t v;
    while (read(w->evfd, &v, sizeof v) < 0 && errno == EINTR)
        ;
    unsigned resumed = atomic_load(&w->srv->resume_seq);
    if (atomic_load(&w->srv->draining))
        apply_drain(w);
    else if (resumed != w->resume_seen)
        apply_resume(w, resumed);

    struct hs_incoming *in = take_incoming(w);
    while (in) {
        struct hs_incoming *next = in->next;
        adopt(w, in->l, in->fd, (const struct sockaddr *)&in->peer, in->peer_len);
        free(in);
        in = next;
    }

    /* One entry at a time: another thread may queue a connection again
     * (rewriting its qnext) as soon as it has left the queue. */
    for (;;) {
        pthread_mutex_lock(&w->mu);
        struct hs_conn *c = w->q_head;
        if (c) {
            w->q_head = c->qnext;
            if (!w->q_head)
                w->q_tail = NULL;
            c->queued = false;
        }
        pthread_mutex_unlock(&w->mu);
        if (!c)
            break;
        if (c->state == HS_C_APP || c->state == HS_C_DEAD) {
            (void)hs_res_pump(c);
            hs_conn_run(c);
        }
    }
}

static uint64_t next_deadline(struct hs_worker *w)
{
    uint64_t next = UINT64_MAX;
    for (int k = 1; k < HS_T_COUNT; k++) {
        struct hs_conn *c = w->tl[k].head;
        if (c) {
            uint64_t at = expiry(w, k, c->tsince);
            if (at < next)
                next = at;
        }
    }
    if (w->ntimers && w->timers[0].at < next)
        next = w->timers[0].at;
    if (w->accept_paused_until && w->accept_paused_until < next)
        next = w->accept_paused_until;
    return next;
}

static void run_due(struct hs_worker *w)
{
    while (w->ntimers && w->timers[0].at <= w->now)
        run_timer(timer_pop(w));
    for (int k = 1; k < HS_T_COUNT; k++) {
        struct hs_conn *c;
        while ((c = w->tl[k].head) && expiry(w, k, c->tsince) <= w->now) {
            hs_tset(c, HS_T_NONE, false);
            hs_conn_timeout(c, k);
        }
    }
    if (w->accept_paused_until && w->accept_paused_until <= w->now) {
        w->accept_paused_until = 0;
        if (!w->draining)
            set_listeners(w, true);
    }
}

/* Works through the connections that were ready when it started; those
 * that ask for another turn (a long pipeline) wait for the next
 * iteration, after the other connections' events. */
static void run_ready(struct hs_worker *w)
{
    struct hs_conn *c;
    for (size_t n = w->nready; n && (c = ready_pop(w)); n--) {
        if (c->state == HS_C_APP || c->state == HS_C_DEAD)
            (void)hs_res_pump(c);
        hs_conn_run(c);
    }
}

void hs_graveyard_add(struct hs_conn *c)
{
    /* Closed: out of its timeout list, whose link now serves here. */
    hs_tset(c, HS_T_NONE, false);
    c->tnext = c->w->graveyard;
    c->w->graveyard = c;
}

static void bury(struct hs_worker *w)
{
    while (w->graveyard) {
        struct hs_conn *c = w->graveyard;
        w->graveyard = c->tnext;
        c->tnext = NULL;
        hs_conn_free(c);
    }
}

/* The stop: close everything, give deferred callbacks their turn. */
static void worker_finish(struct hs_worker *w)
{
    w->now = handoff_now_usec();
    w->finishing = true;
    drop_incoming(w);
    for (struct hs_conn *c = w->conns; c; c = c->next)
        hs_conn_close(c);
    while (w->ntimers)
        run_timer(timer_pop(w));
    while (w->ready_head)
        run_ready(w);
    bury(w);
}

/* A burst of TLS handshakes leaves the heap full of holes: each
 * handshake needs some 40 KB for a moment (record buffers, the handshake
 * messages) but keeps only about 14 KB, and the freed memory stays
 * resident. Once the worker has been quiet for a while after such a
 * burst, the free pages go back to the system. */
static void trim_heap(struct hs_worker *w)
{
    w->handshakes = 0;
#ifdef __GLIBC__
    (void)malloc_trim(0);
#endif
}

static void *worker_main(void *arg)
{
    struct hs_worker *w = arg;
    handoff_http_server *srv = w->srv;
    struct epoll_event evs[128];

    hs_current = w;
    w->now = handoff_now_usec();
    hs_date_update(w, true);
    while (!atomic_load_explicit(&srv->stopping, memory_order_relaxed)) {
        int timeout = -1;
        if (w->ready_head) {
            timeout = 0;
        } else {
            uint64_t next = next_deadline(w);
            if (w->handshakes >= HS_TRIM_HANDSHAKES && w->busy_at + HS_TRIM_QUIET_USEC < next)
                next = w->busy_at + HS_TRIM_QUIET_USEC;
            if (next != UINT64_MAX) {
                uint64_t ms = next <= w->now ? 0 : (next - w->now + 999) / 1000;
                timeout = ms > INT_MAX ? INT_MAX : (int)ms;
            }
        }
        int n = epoll_wait(w->epfd, evs, (int)(sizeof evs / sizeof evs[0]), timeout);
        w->now = handoff_now_usec();
        hs_date_update(w, false);
        if (n > 0) {
            w->busy_at = w->now;
        } else if (w->handshakes >= HS_TRIM_HANDSHAKES &&
                   w->now >= w->busy_at + HS_TRIM_QUIET_USEC) {
            trim_heap(w);
        }
        for (int i = 0; i < n; i++) {
            int kind = *(int *)evs[i].data.ptr;
            if (kind == HS_K_CONN)
                hs_conn_io(evs[i].data.ptr, evs[i].events);
            else if (kind == HS_K_LISTENER)
                worker_accept(w, ((struct hs_lwatch *)evs[i].data.ptr)->l);
            else
                worker_wake(w);
        }
        run_due(w);
        run_ready(w);
        bury(w);
    }
    worker_finish(w);
    hs_current = NULL;
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Public API                                                               */

static unsigned cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return (unsigned)n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

int handoff_http_server_new(handoff_t *h, const handoff_http_options *opts,
                            handoff_http_server **out)
{
    if (!opts || !opts->handler || !out)
        return -EINVAL;
    if (opts->health_path && opts->health_path[0] != '/')
        return -EINVAL;
    handoff_http_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return -ENOMEM;
    srv->h = h;
    srv->o = *opts;
    srv->o.listen = NULL;
    srv->o.num_listen = 0;
    handoff_http_options *o = &srv->o;
    if (!o->threads)
        o->threads = cpu_count();
    if (!o->read_timeout_usec)
        o->read_timeout_usec = DEFAULT_READ_TIMEOUT;
    if (!o->write_timeout_usec)
        o->write_timeout_usec = DEFAULT_WRITE_TIMEOUT;
    if (!o->idle_timeout_usec)
        o->idle_timeout_usec = DEFAULT_IDLE_TIMEOUT;
    if (!o->tls_handshake_timeout_usec)
        o->tls_handshake_timeout_usec = DEFAULT_TLS_TIMEOUT;
    if (!o->max_header_bytes)
        o->max_header_bytes = DEFAULT_MAX_HEADER;
    if (o->max_header_bytes > ((size_t)1 << 30))
        o->max_header_bytes = (size_t)1 << 30;
    if (!o->max_body_bytes)
        o->max_body_bytes = DEFAULT_MAX_BODY;
    if (o->max_body_bytes > ((uint64_t)1 << 40))
        o->max_body_bytes = (uint64_t)1 << 40;
    if (!o->max_keepalive_requests)
        o->max_keepalive_requests = DEFAULT_MAX_KEEPALIVE;
    srv->limits.max_header_bytes = o->max_header_bytes;
    srv->limits.max_target = o->max_header_bytes;
    srv->tdur[HS_T_HANDSHAKE] = o->tls_handshake_timeout_usec;
    srv->tdur[HS_T_NEW] = o->read_timeout_usec;
    srv->tdur[HS_T_READ] = o->read_timeout_usec;
    srv->tdur[HS_T_IDLE] = o->idle_timeout_usec;
    srv->tdur[HS_T_WRITE] = o->write_timeout_usec;
    srv->tdur[HS_T_LINGER] = HS_LINGER_USEC;
    if (opts->health_path) {
        srv->health_path = strdup(opts->health_path);
        if (!srv->health_path) {
            free(srv);
            return -ENOMEM;
        }
        srv->health_len = strlen(srv->health_path);
    }
    o->health_path = srv->health_path;
    *out = srv;
    return 0;
}

int handoff_http_server_add_listener(handoff_http_server *srv, int fd,
                                     const char *cert_file, const char *key_file,
                                     char *errbuf, size_t errlen)
{
    if (!srv || fd < 0 || (!cert_file) != (!key_file))
        return -EINVAL;
    if (srv->started)
        return -EBUSY;
    int acc = 0;
    socklen_t al = sizeof acc;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) < 0)
        return -errno;
    if (!acc)
        return -EINVAL;
    SSL_CTX *ctx = NULL;
    if (cert_file) {
        int r = hs_tls_ctx_new(cert_file, key_file, &ctx, errbuf, errlen);
        if (r < 0)
            return r;
    }
    struct hs_listener *ls = realloc(srv->ls, (srv->nls + 1) * sizeof *ls);
    if (!ls) {
        SSL_CTX_free(ctx);
        return -ENOMEM;
    }
    srv->ls = ls;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK))
        (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    ls[srv->nls++] = (struct hs_listener){.fd = fd, .ctx = ctx};
    return 0;
}

/* The name handoff_listen() gives spec by default: the characters that
 * LISTEN_FDNAMES cannot carry (':' is its separator, blanks, controls,
 * non-ASCII) become '_', at most 255 bytes. The name is passed explicitly
 * so that a failure can remove exactly this registration, and kept equal
 * to the core's default so that generations agree on it. */
static void default_name(const char *spec, char out[256])
{
    size_t i = 0;
    for (; i < 255 && spec[i]; i++) {
        unsigned char ch = (unsigned char)spec[i];
        out[i] = (ch == ':' || ch <= 0x20 || ch >= 0x7f) ? '_' : (char)ch;
    }
    out[i] = '\0';
}

int handoff_http_server_listen(handoff_http_server *srv, const char *spec,
                               const char *cert_file, const char *key_file,
                               char *errbuf, size_t errlen)
{
    if (!srv || !srv->h || !spec)
        return -EINVAL;
    if (srv->started)
        return -EBUSY;
    char name[256];
    default_name(spec, name);
    char *copy = strdup(name);
    if (!copy)
        return -ENOMEM;
    int fd = handoff_listen(srv->h, name, spec, NULL);
    if (fd < 0) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "%s", handoff_errmsg(srv->h));
        free(copy);
        return fd;
    }
    int r = handoff_http_server_add_listener(srv, fd, cert_file, key_file, errbuf, errlen);
    if (r < 0) {
        /* Closes the socket, and it is not passed to a successor. */
        (void)handoff_remove(srv->h, name);
        free(copy);
        return r;
    }
    srv->ls[srv->nls - 1].name = copy;
    return fd;
}

static void worker_done(struct hs_worker *w)
{
    if (w->epfd >= 0)
        (void)close(w->epfd);
    if (w->evfd >= 0)
        (void)close(w->evfd);
    w->epfd = w->evfd = -1;
    free(w->lw);
    w->lw = NULL;
    free(w->timers);
    w->timers = NULL;
    hs_blk_pool_free(w);
    if (w->inited)
        pthread_mutex_destroy(&w->mu);
    w->inited = false;
}

static int worker_init(handoff_http_server *srv, struct hs_worker *w)
{
    w->kind = HS_K_WAKE;
    w->srv = srv;
    pthread_mutex_init(&w->mu, NULL);
    w->inited = true;
    w->lw = calloc(srv->nls ? srv->nls : 1, sizeof *w->lw);
    if (!w->lw)
        return -ENOMEM;
    for (size_t i = 0; i < srv->nls; i++)
        w->lw[i] = (struct hs_lwatch){.kind = HS_K_LISTENER, .l = &srv->ls[i]};
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0)
        return -errno;
    w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->evfd < 0)
        return -errno;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = w};
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->evfd, &ev) < 0)
        return -errno;
    if (!atomic_load(&srv->draining))
        set_listeners(w, true);
    return 0;
}

int handoff_http_server_start(handoff_http_server *srv)
{
    if (!srv)
        return -EINVAL;
    if (srv->started)
        return -EALREADY;
    unsigned n = srv->o.threads;
    srv->ws = calloc(n, sizeof *srv->ws);
    if (!srv->ws)
        return -ENOMEM;
    srv->nws = n;
    for (unsigned i = 0; i < n; i++)
        srv->ws[i].epfd = srv->ws[i].evfd = -1;
    int r = 0;
    for (unsigned i = 0; i < n && r == 0; i++)
        r = worker_init(srv, &srv->ws[i]);

    /* Workers block every signal: signals are the handoff loop's job, and
     * a SIGPIPE from a write to a closed peer then only fails the write. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (unsigned i = 0; i < n && r == 0; i++) {
        r = -pthread_create(&srv->ws[i].thread, NULL, worker_main, &srv->ws[i]);
        if (r == 0)
            srv->ws[i].started = true;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    srv->started = true;
    if (r < 0) {
        (void)handoff_http_server_stop(srv);
        for (unsigned i = 0; i < n; i++)
            worker_done(&srv->ws[i]);
        free(srv->ws);
        srv->ws = NULL;
        srv->nws = 0;
        srv->started = false;
        srv->stopped = false;
        atomic_store(&srv->stopping, 0);
    }
    return r;
}

int handoff_http_server_lame_duck(handoff_http_server *srv)
{
    if (!srv)
        return -EINVAL;
    atomic_store(&srv->lame, 1);
    return 0;
}

int handoff_http_server_drain(handoff_http_server *srv)
{
    if (!srv)
        return -EINVAL;
    if (atomic_load(&srv->draining))
        return 0;
    unsigned seq = atomic_fetch_add(&srv->drain_seq, 1) + 1;
    atomic_store(&srv->draining, 1);
    /* Stop accepting before returning: the successor owns new
     * connections from now on. The workers also do this themselves when
     * they wake (so that a paused listener is not re-added). */
    for (unsigned i = 0; i < srv->nws; i++) {
        if (srv->ws[i].epfd < 0)
            continue;
        for (size_t k = 0; k < srv->nls; k++)
            (void)epoll_ctl(srv->ws[i].epfd, EPOLL_CTL_DEL, srv->ls[k].fd, NULL);
        hs_wake(&srv->ws[i]);
    }
    /* Wait (briefly: workers never block, unless a handler does) until
     * no worker is inside its accept loop any more, so that the caller
     * may close the listeners once this returns. */
    uint64_t until = handoff_now_usec() + HANDOFF_USEC_PER_SEC;
    for (unsigned i = 0; i < srv->nws; i++) {
        while (srv->ws[i].started && atomic_load(&srv->ws[i].drain_ack) != seq &&
               handoff_now_usec() < until) {
            struct timespec ts = {.tv_nsec = 200000};
            (void)nanosleep(&ts, NULL);
        }
    }
    if (srv->o.on_drain)
        srv->o.on_drain(srv, srv->o.userdata);
    return 0;
}

int handoff_http_server_resume(handoff_http_server *srv)
{
    if (!srv)
        return -EINVAL;
    if (srv->stopped)
        return -ESHUTDOWN;
    atomic_store(&srv->lame, 0);
    if (!atomic_load(&srv->draining))
        return 0;
    atomic_fetch_add(&srv->resume_seq, 1);
    atomic_store(&srv->draining, 0);
    /* Each worker watches the listeners again when it wakes. */
    for (unsigned i = 0; i < srv->nws; i++)
        if (srv->ws[i].started)
            hs_wake(&srv->ws[i]);
    return 0;
}

int handoff_http_server_stop(handoff_http_server *srv)
{
    if (!srv)
        return -EINVAL;
    if (!srv->started || srv->stopped)
        return 0;
    srv->stopped = true;
    atomic_store(&srv->stopping, 1);
    for (unsigned i = 0; i < srv->nws; i++)
        if (srv->ws[i].started)
            hs_wake(&srv->ws[i]);
    for (unsigned i = 0; i < srv->nws; i++)
        if (srv->ws[i].started) {
            pthread_join(srv->ws[i].thread, NULL);
            srv->ws[i].started = false;
        }
    return 0;
}

handoff_http_server *handoff_http_server_free(handoff_http_server *srv)
{
    if (!srv)
        return NULL;
    (void)handoff_http_server_stop(srv);
    for (unsigned i = 0; i < srv->nws; i++) {
        struct hs_worker *w = &srv->ws[i];
        /* Whatever is left was held by the application until now. */
        while (w->conns) {
            struct hs_conn *c = w->conns;
            if (c->state != HS_C_DEAD && c->state != HS_C_GONE && c->fd >= 0) {
                (void)close(c->fd);
                c->fd = -1;
            }
            if (c->counted) {
                c->counted = false;
                hs_count_end(srv);
            }
            hs_conn_free(c);
        }
        drop_incoming(w);
        worker_done(w);
    }
    free(srv->ws);
    for (size_t i = 0; i < srv->nls; i++) {
        SSL_CTX_free(srv->ls[i].ctx);
        free(srv->ls[i].name);
    }
    free(srv->ls);
    free(srv->health_path);
    free(srv);
    return NULL;
}

unsigned long handoff_http_server_connections(const handoff_http_server *srv)
{
    return srv ? atomic_load(&srv->nconn) : 0;
}

void handoff_http_hijack_end(handoff_http_server *srv)
{
    if (srv)
        hs_count_end(srv);
}

/*
 * worker.c - a worker thread's event loop (see worker.h).
 *
 * One iteration: wait (until the next deadline), dispatch the events to
 * their handles, run due deferred callbacks and timeouts, give the ready
 * handles their turn, then free the handles closed meanwhile (the
 * graveyard): an event for a closed handle may still sit in the batch.
 */
#include "worker.h"

#include "list.h"
#include "parse.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

_Thread_local struct hs_worker *hs_current;

uint64_t hs_sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* ------------------------------------------------------------------------ */
/* Set-up                                                                   */

static void wake_io(struct hs_handle *h, uint32_t events);
static const struct hs_handle_ops wake_ops = {.io = wake_io};

int hs_worker_init(struct hs_worker *w, void *owner, const uint64_t *tdur,
                   const atomic_int *stopping, void (*on_wake)(struct hs_worker *w),
                   unsigned pool_max)
{
    w->wake.ops = &wake_ops;
    w->owner = owner;
    w->tdur = tdur;
    w->stopping = stopping;
    w->on_wake = on_wake;
    w->blocks.max = pool_max;
    w->epfd = w->evfd = -1;
    pthread_mutex_init(&w->mu, NULL);
    w->inited = true;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0)
        return -errno;
    w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->evfd < 0)
        return -errno;
    return hs_watch(w, w->evfd, EPOLLIN, &w->wake);
}

void hs_worker_done(struct hs_worker *w, void (*destroy_block)(struct hs_pooled *o))
{
    if (w->epfd >= 0)
        (void)close(w->epfd);
    if (w->evfd >= 0)
        (void)close(w->evfd);
    w->epfd = w->evfd = -1;
    free(w->timers);
    w->timers = NULL;
    w->ntimers = w->captimers = 0;
    hs_pool_clear(&w->blocks, destroy_block);
    if (w->inited)
        pthread_mutex_destroy(&w->mu);
    w->inited = false;
}

int hs_watch(struct hs_worker *w, int fd, uint32_t events, struct hs_handle *h)
{
    struct epoll_event ev = {.events = events, .data.ptr = h};
    return epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

void hs_unwatch(struct hs_worker *w, int fd)
{
    (void)epoll_ctl(w->epfd, EPOLL_CTL_DEL, fd, NULL);
}

void hs_wake(struct hs_worker *w)
{
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(w->evfd, &one, sizeof one);
    } while (n < 0 && errno == EINTR);
    /* EAGAIN means the counter is saturated: a wake-up is pending anyway. */
}

/* ------------------------------------------------------------------------ */
/* Handles: lists                                                           */

void hs_attach(struct hs_worker *w, struct hs_handle *h)
{
    h->prev = NULL;
    h->next = w->handles;
    if (w->handles)
        w->handles->prev = h;
    w->handles = h;
}

static void ready_unlink(struct hs_worker *w, struct hs_handle *h)
{
    HS_LIST_UNLINK(w->ready_head, w->ready_tail, h, rprev, rnext);
    h->in_ready = false;
    w->nready--;
}

void hs_detach(struct hs_worker *w, struct hs_handle *h)
{
    if (!h->dead)
        hs_tset(w, h, HS_T_NONE, false);
    if (h->in_ready)
        ready_unlink(w, h);
    /* Only a handle ever queued can be in the queue; the flag is read
     * under the lock like everything the queue holds. */
    pthread_mutex_lock(&w->mu);
    if (h->queued) {
        struct hs_handle **pp = &w->q_head, *prev = NULL;
        while (*pp != h) {
            prev = *pp;
            pp = &(*pp)->qnext;
        }
        *pp = h->qnext;
        if (w->q_tail == h)
            w->q_tail = prev;
        h->queued = false;
    }
    pthread_mutex_unlock(&w->mu);
    if (h->prev)
        h->prev->next = h->next;
    else if (w->handles == h)
        w->handles = h->next;
    if (h->next)
        h->next->prev = h->prev;
    h->prev = h->next = NULL;
}

void hs_bury(struct hs_worker *w, struct hs_handle *h)
{
    hs_tset(w, h, HS_T_NONE, false);
    h->dead = true; /* the timeout link is the graveyard's now */
    h->tnext = w->graveyard;
    w->graveyard = h;
}

static void bury_all(struct hs_worker *w)
{
    while (w->graveyard) {
        struct hs_handle *h = w->graveyard;
        w->graveyard = h->tnext;
        h->tnext = NULL;
        h->ops->destroy(h);
    }
}

void hs_ready_push(struct hs_worker *w, struct hs_handle *h)
{
    if (h->in_ready)
        return;
    h->in_ready = true;
    w->nready++;
    HS_LIST_APPEND(w->ready_head, w->ready_tail, h, rprev, rnext);
}

bool hs_enqueue_locked(struct hs_worker *w, struct hs_handle *h)
{
    if (h->queued)
        return false;
    h->queued = true;
    h->qnext = NULL;
    bool was_empty = w->q_head == NULL;
    if (w->q_tail)
        w->q_tail->qnext = h;
    else
        w->q_head = h;
    w->q_tail = h;
    return was_empty;
}

void hs_post(struct hs_worker *w, struct hs_task *t)
{
    pthread_mutex_lock(&w->mu);
    t->next = w->tasks;
    w->tasks = t;
    pthread_mutex_unlock(&w->mu);
    hs_wake(w);
}

static struct hs_task *take_tasks(struct hs_worker *w)
{
    pthread_mutex_lock(&w->mu);
    struct hs_task *t = w->tasks;
    w->tasks = NULL;
    pthread_mutex_unlock(&w->mu);
    return t;
}

static void run_tasks(struct hs_worker *w, bool cancel)
{
    struct hs_task *t = take_tasks(w);
    while (t) {
        struct hs_task *next = t->next;
        t->run(w, t, cancel);
        t = next;
    }
}

/* ------------------------------------------------------------------------ */
/* Timeouts: one list per class, sorted because each has one duration      */

static uint64_t tdur(const struct hs_worker *w, int cls)
{
    uint64_t d = w->tdur[cls];
    /* A shutdown drain shortens the waits for a request that may never
     * come (an upgrade drain does not: the successor serves meanwhile,
     * and closing an idle connection races with the client's next
     * request on it; "Connection: close" ends it without a race). */
    if (w->drain_grace && (cls == HS_T_IDLE || cls == HS_T_NEW) && d > HS_DRAIN_GRACE_USEC)
        d = HS_DRAIN_GRACE_USEC;
    return d;
}

/* When a handle that entered list cls at since times out; UINT64_MAX
 * (never) for a HANDOFF_NO_TIMEOUT duration, whatever since is. */
static uint64_t expiry(const struct hs_worker *w, int cls, uint64_t since)
{
    uint64_t d = tdur(w, cls);
    return d == HANDOFF_NO_TIMEOUT ? UINT64_MAX : hs_sat_add(since, d);
}

void hs_tset(struct hs_worker *w, struct hs_handle *h, int cls, bool refresh)
{
    if (h->tclass == cls && !refresh)
        return;
    if (cls != HS_T_NONE && h->dead)
        return; /* in the graveyard, whose link tnext is */
    if (h->tclass != HS_T_NONE) {
        struct hs_tlist *l = &w->tl[h->tclass];
        HS_LIST_UNLINK(l->head, l->tail, h, tprev, tnext);
    }
    h->tclass = (uint8_t)cls;
    if (cls == HS_T_NONE)
        return;
    struct hs_tlist *l = &w->tl[cls];
    h->tsince = w->now;
    HS_LIST_APPEND(l->head, l->tail, h, tprev, tnext);
}

void hs_tset_at(struct hs_worker *w, struct hs_handle *h, int cls, uint64_t since,
                struct hs_handle **from)
{
    hs_tset(w, h, HS_T_NONE, false);
    if (cls == HS_T_NONE || h->dead)
        return;
    if (since > w->now)
        since = w->now;
    struct hs_tlist *l = &w->tl[cls];
    struct hs_handle *after = from && *from && *from != h && (*from)->tclass == cls && !(*from)->dead
                                  ? *from
                                  : l->tail;
    if (from)
        *from = h;
    while (after && after->tsince > since)
        after = after->tprev;
    h->tclass = (uint8_t)cls;
    h->tsince = since;
    h->tprev = after;
    h->tnext = after ? after->tnext : l->head;
    if (h->tnext)
        h->tnext->tprev = h;
    else
        l->tail = h;
    if (after)
        after->tnext = h;
    else
        l->head = h;
}

/* ------------------------------------------------------------------------ */
/* Deferred callbacks: a binary min-heap on (at, seq)                       */

static bool tless(const struct hs_timer *a, const struct hs_timer *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

int hs_timer_add(struct hs_worker *w, uint64_t at,
                 void (*run)(void *obj, void (*fn)(void), void *arg), void *obj,
                 void (*fn)(void), void *arg)
{
    if (w->finishing)
        return -ECANCELED;
    if (w->ntimers == w->captimers) {
        size_t cap = w->captimers ? w->captimers * 2 : 16;
        struct hs_timer *t = realloc(w->timers, cap * sizeof *t);
        if (!t)
            return -ENOMEM;
        w->timers = t;
        w->captimers = cap;
    }
    struct hs_timer nt = {
        .at = at, .seq = w->timer_seq++, .run = run, .obj = obj, .fn = fn, .arg = arg};
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

static void timer_run(struct hs_timer t)
{
    t.run(t.obj, t.fn, t.arg);
}

/* ------------------------------------------------------------------------ */
/* The loop                                                                 */

/* The eventfd fired: control flags, then work from other threads. */
static void wake_io(struct hs_handle *h, uint32_t events)
{
    (void)events;
    struct hs_worker *w = (struct hs_worker *)(void *)h; /* wake is first */
    uint64_t v;
    while (read(w->evfd, &v, sizeof v) < 0 && errno == EINTR)
        ;
    w->on_wake(w);
    run_tasks(w, false);
    /* One entry at a time: another thread may queue a handle again
     * (rewriting its qnext) as soon as it has left the queue. */
    for (;;) {
        pthread_mutex_lock(&w->mu);
        struct hs_handle *q = w->q_head;
        if (q) {
            w->q_head = q->qnext;
            if (!w->q_head)
                w->q_tail = NULL;
            q->queued = false;
        }
        pthread_mutex_unlock(&w->mu);
        if (!q)
            break;
        q->ops->queued(q);
    }
}

static uint64_t next_deadline(struct hs_worker *w)
{
    uint64_t next = UINT64_MAX;
    for (int k = 1; k < HS_T_COUNT; k++) {
        struct hs_handle *h = w->tl[k].head;
        if (h) {
            uint64_t at = expiry(w, k, h->tsince);
            if (at < next)
                next = at;
        }
    }
    if (w->ntimers && w->timers[0].at < next)
        next = w->timers[0].at;
    if (w->handshakes >= HS_TRIM_HANDSHAKES && w->busy_at + HS_TRIM_QUIET_USEC < next)
        next = w->busy_at + HS_TRIM_QUIET_USEC;
    return next;
}

static void run_due(struct hs_worker *w)
{
    while (w->ntimers && w->timers[0].at <= w->now)
        timer_run(timer_pop(w));
    for (int k = 1; k < HS_T_COUNT; k++) {
        struct hs_handle *h;
        while ((h = w->tl[k].head) && expiry(w, k, h->tsince) <= w->now) {
            hs_tset(w, h, HS_T_NONE, false);
            h->ops->timeout(h, k);
        }
    }
}

/* Gives a turn to the handles that were ready when it started; those
 * that ask for another (a long pipeline) wait for the next iteration,
 * after the other handles' events. */
static void run_ready(struct hs_worker *w)
{
    struct hs_handle *h;
    for (size_t n = w->nready; n && (h = w->ready_head); n--) {
        ready_unlink(w, h);
        h->ops->run(h);
    }
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

static void date_update(struct hs_worker *w, bool force)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (force || ts.tv_sec != w->date_sec) {
        w->date_sec = ts.tv_sec;
        hh_format_date(ts.tv_sec, w->date);
    }
}

/* The stop: close everything, give deferred callbacks their turn. */
static void finish(struct hs_worker *w)
{
    w->now = handoff_now_usec();
    w->finishing = true;
    run_tasks(w, true);
    for (struct hs_handle *h = w->handles; h; h = h->next)
        h->ops->stop(h);
    while (w->ntimers)
        timer_run(timer_pop(w));
    while (w->ready_head)
        run_ready(w);
    bury_all(w);
}

void *hs_worker_main(void *arg)
{
    struct hs_worker *w = arg;
    struct epoll_event evs[128];

    hs_current = w;
    w->now = handoff_now_usec();
    date_update(w, true);
    while (!atomic_load_explicit(w->stopping, memory_order_relaxed)) {
        int timeout = -1;
        if (w->ready_head) {
            timeout = 0;
        } else {
            uint64_t next = next_deadline(w);
            if (next != UINT64_MAX) {
                uint64_t ms = next <= w->now ? 0 : (next - w->now + 999) / 1000;
                timeout = ms > INT_MAX ? INT_MAX : (int)ms;
            }
        }
        int n = epoll_wait(w->epfd, evs, (int)(sizeof evs / sizeof evs[0]), timeout);
        w->now = handoff_now_usec();
        date_update(w, false);
        if (n > 0)
            w->busy_at = w->now;
        else if (w->handshakes >= HS_TRIM_HANDSHAKES &&
                 w->now >= w->busy_at + HS_TRIM_QUIET_USEC)
            trim_heap(w);
        for (int i = 0; i < n; i++) {
            struct hs_handle *h = evs[i].data.ptr;
            h->ops->io(h, evs[i].events);
        }
        run_due(w);
        run_ready(w);
        bury_all(w);
    }
    finish(w);
    hs_current = NULL;
    return NULL;
}

void hs_worker_destroy_all(struct hs_worker *w)
{
    if (!w->inited)
        return; /* its set-up never ran */
    bury_all(w);
    while (w->handles) {
        struct hs_handle *h = w->handles;
        hs_detach(w, h);
        h->ops->destroy(h);
    }
    run_tasks(w, true);
}

/*
 * migrate.c - keep-alive connections survive a restart (see migrate.h):
 * the start of an upgrade drain (hs_mig_drain()) and the adoption on the
 * loop thread (handoff_http_adopt()), whose connections each worker
 * starts in a task. The hand-over itself is migrate_out.c's (below
 * HTTP/1.1, which calls it), the blob migrate_blob.c's.
 */
#include "migrate.h"

#include "conn.h"
#include "h1.h"
#include "server.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

void hs_mig_drain(struct hs_worker *w)
{
    for (struct hs_handle *h = w->handles; h; h = h->next) {
        if (h->ops != &hs_h1_proto.h || h->dead)
            continue;
        struct hs_conn *c = hs_conn_of(h);
        if (c->state != HS_C_OPEN || c->pstate != HS_H1_HEAD || !hs_mig_wanted(c))
            continue;
        /* At once, not in its ready turn: the drain shortens the idle
         * timeouts, and this iteration's expired ones run first. A
         * handle buried here stays in the list until the iteration ends. */
        if (!hs_mig_out(c))
            hs_ready_push(w, h); /* output to flush first (h1.c's drive()) */
    }
}

/* ------------------------------------------------------------------------ */
/* The successor (and returned connections): adopting                      */

/* One adopted connection on its way to a worker. */
struct mig_ent {
    int fd;
    bool returned;
    int cls;            /* its timeout class (enum hs_tclass) */
    uint32_t nreq;
    uint64_t since;     /* when its wait began (handoff_now_usec()) */
    size_t len;
    char in[];          /* unparsed input */
};

/* The connections adopted for one worker in one handoff_http_adopt(). */
struct mig_batch {
    struct hs_task t;
    size_t n, cap;
    struct mig_ent **e;
};

static void ent_drop(struct hs_worker *w, struct mig_ent *e)
{
    (void)close(e->fd);
    hs_count_end(w->counter);
    atomic_fetch_sub(&w->load, 1);
}

/* Starts one adopted connection on w, as an accepted one with its state;
 * cur: a cursor per timeout class (hs_tset_at()). */
static void ent_start(struct hs_worker *w, struct mig_ent *e, struct hs_handle **cur)
{
    /* The peer's address is read when a request needs it (hs_conn_peer()):
     * one system call less per connection handed over. */
    static const struct sockaddr unknown = {.sa_family = AF_UNSPEC};
    struct hs_conn *c = hs_conn_new(w, e->fd, &unknown, 0, NULL, &hs_h1_proto);
    if (!c) {
        ent_drop(w, e);
        return;
    }
    c->nreq = c->tnreq = e->nreq;
    c->no_migrate = e->returned;
    if (e->len) {
        if (hs_h1_blk_acquire(c) < 0) {
            hs_conn_close(c);
            return;
        }
        struct hs_h1_blk *b = c->p;
        if (e->len > b->rcap) {
            char *p = realloc(b->rbuf, e->len);
            if (!p) {
                hs_conn_close(c);
                return;
            }
            b->rbuf = p;
            b->rcap = e->len;
        }
        memcpy(b->rbuf, e->in, e->len);
        b->rlen = e->len;
    }
    /* The wait goes on from where it was (the list stays sorted). */
    hs_tset_at(w, &c->h, e->cls, e->since, &cur[e->cls]);
    /* Input from the blob is parsed at once, and a draining worker (a
     * back-to-back restart) passes the connection straight on. An idle
     * one needs no turn (nor a read that would say EAGAIN): its
     * registration (EPOLL_CTL_ADD, edge-triggered) reports what the
     * socket holds already, so a request that came during the hand-over
     * is an event like any other. */
    if (e->len || w->draining) {
        c->read_more = true;
        hs_ready_push(w, &c->h);
    }
}

static void batch_run(struct hs_worker *w, struct hs_task *t, bool cancel)
{
    struct mig_batch *bt = (struct mig_batch *)(void *)t;
    struct hs_handle *cur[HS_T_COUNT] = {NULL};
    w->now = handoff_now_usec();
    /* Latest wait first (the batch is sorted by since): each timeout
     * list is merged with the batch in one walk back from its tail. */
    for (size_t i = bt->n; i-- > 0;) {
        if (cancel)
            ent_drop(w, bt->e[i]);
        else
            ent_start(w, bt->e[i], cur);
        free(bt->e[i]);
    }
    free(bt->e);
    free(bt);
}

static int by_since(const void *a, const void *b)
{
    const struct mig_ent *x = *(struct mig_ent *const *)a, *y = *(struct mig_ent *const *)b;
    return x->since < y->since ? -1 : x->since > y->since;
}

static bool addr_match(const struct sockaddr_storage *l, socklen_t ll,
                       const struct sockaddr_storage *c, socklen_t cl)
{
    if (l->ss_family != c->ss_family)
        return false;
    if (l->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)l, *b = (const void *)c;
        return a->sin_port == b->sin_port &&
               (a->sin_addr.s_addr == htonl(INADDR_ANY) || a->sin_addr.s_addr == b->sin_addr.s_addr);
    }
    if (l->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)l, *b = (const void *)c;
        return a->sin6_port == b->sin6_port &&
               (IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr) ||
                memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr) == 0);
    }
    if (l->ss_family == AF_UNIX)
        return ll == cl && memcmp(l, c, ll) == 0;
    return false;
}

/* The plain listener (and its server) fd was accepted from, or NULL. */
static handoff_http_server *find_server(handoff_http_server *const *servers, size_t n, int fd)
{
    handoff_http_server *only = NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (servers[i] && servers[i]->started && !servers[i]->stopped && servers[i]->nws) {
            total += servers[i]->nls;
            if (servers[i]->nls == 1)
                only = servers[i];
        }
    }
    if (total == 1 && only)
        return only->ls[0].ctx ? NULL : only;
    struct sockaddr_storage me, la;
    memset(&me, 0, sizeof me);
    socklen_t ml = sizeof me;
    if (getsockname(fd, (struct sockaddr *)&me, &ml) < 0)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        handoff_http_server *s = servers[i];
        if (!s || !s->started || s->stopped || !s->nws)
            continue;
        for (size_t k = 0; k < s->nls; k++) {
            socklen_t ll = sizeof la;
            memset(&la, 0, sizeof la);
            if (getsockname(s->ls[k].fd, (struct sockaddr *)&la, &ll) == 0 &&
                addr_match(&la, ll, &me, ml))
                return s->ls[k].ctx ? NULL : s;
        }
    }
    return NULL;
}

/* The least loaded worker of srv, charged with one more connection. */
static unsigned pick(handoff_http_server *srv)
{
    unsigned best = 0, least = UINT32_MAX;
    for (unsigned i = 0; i < srv->nws; i++) {
        unsigned l = atomic_load_explicit(&srv->ws[i].load, memory_order_relaxed);
        if (srv->ws[i].started && l < least) {
            least = l;
            best = i;
        }
    }
    atomic_fetch_add_explicit(&srv->ws[best].load, 1, memory_order_relaxed);
    return best;
}

/* The timeout class of a connection in this state (as h1.c would set
 * it), whatever wait the blob names. */
static int wait_class(size_t len, uint32_t nreq)
{
    return len ? HS_T_READ : nreq ? HS_T_IDLE : HS_T_NEW;
}

/* Makes the entry for one adopted connection; NULL if it is refused. */
static struct mig_ent *ent_new(const handoff_adopted *ad, const struct hs_mig_state *st,
                               uint64_t now)
{
    struct mig_ent *e = malloc(sizeof *e + st->len);
    if (!e)
        return NULL;
    e->fd = ad->fd;
    e->returned = ad->returned != 0;
    e->nreq = st->nreq;
    e->cls = wait_class(st->len, st->nreq);
    e->since = now - (st->elapsed < now ? st->elapsed : now);
    e->len = st->len;
    if (st->len)
        memcpy(e->in, st->in, st->len);
    return e;
}

static int batch_add(struct mig_batch **slot, struct mig_ent *e)
{
    struct mig_batch *bt = *slot;
    if (!bt) {
        bt = calloc(1, sizeof *bt);
        if (!bt)
            return -ENOMEM;
        bt->t.run = batch_run;
        *slot = bt;
    }
    if (bt->n == bt->cap) {
        size_t cap = bt->cap ? bt->cap * 2 : 16;
        struct mig_ent **p = realloc(bt->e, cap * sizeof(struct mig_ent *));
        if (!p)
            return -ENOMEM;
        bt->e = p;
        bt->cap = cap;
    }
    bt->e[bt->n++] = e;
    return 0;
}

/* The servers' batches, one per worker. */
struct pending {
    handoff_http_server *srv;
    struct mig_batch **b; /* srv->nws slots */
};

static void post_all(struct pending *pd, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!pd[i].b)
            continue;
        for (unsigned k = 0; k < pd[i].srv->nws; k++) {
            struct mig_batch *bt = pd[i].b[k];
            if (!bt)
                continue;
            /* Sorted by the start of their waits, so that each insertion
             * into a timeout list stops near its tail. */
            if (bt->n > 1)
                qsort(bt->e, bt->n, sizeof(struct mig_ent *), by_since);
            hs_post(&pd[i].srv->ws[k], &bt->t);
        }
        free(pd[i].b);
    }
}

int handoff_http_adopt(handoff_t *h, handoff_http_server *const *servers, size_t n,
                       handoff_http_adopt_counts *counts)
{
    if (!h || (!servers && n))
        return -EINVAL;
    struct pending *pd = calloc(n ? n : 1, sizeof *pd);
    if (!pd)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        pd[i].srv = servers[i];
    handoff_http_adopt_counts k = {0, 0, 0};
    uint64_t now = handoff_now_usec();
    handoff_adopted ad;
    int r;
    while ((r = handoff_adopt(h, &ad)) > 0) {
        struct hs_mig_state st;
        handoff_http_server *srv = NULL;
        struct mig_ent *e = NULL;
        size_t si = 0;
        if (hs_mig_parse(ad.state, ad.len, &st) == 0 &&
            (srv = find_server(servers, n, ad.fd)) != NULL)
            e = ent_new(&ad, &st, now);
        if (e) {
            while (servers[si] != srv)
                si++;
            if (!pd[si].b)
                pd[si].b = calloc(srv->nws, sizeof(struct mig_batch *));
            unsigned wi = pick(srv);
            if (!pd[si].b || batch_add(&pd[si].b[wi], e) < 0) {
                atomic_fetch_sub(&srv->ws[wi].load, 1);
                free(e);
                e = NULL;
            }
        }
        if (!e) {
            /* Unreadable state, no listener for it any more (or one that
             * now speaks TLS), reset meanwhile, or out of memory. The
             * core has acknowledged it: it cannot go back. */
            (void)close(ad.fd);
            handoff_conn_end(h);
            k.refused++;
            continue;
        }
        /* Counted by the core already (handoff_adopt()); the server's own
         * count only. */
        atomic_fetch_add(&srv->count.n, 1);
        if (ad.returned)
            k.returned++;
        else
            k.adopted++;
    }
    post_all(pd, n);
    free(pd);
    if (counts)
        *counts = k;
    return r < 0 ? r : 0;
}

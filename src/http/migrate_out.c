/*
 * migrate_out.c - the old generation hands an HTTP/1.1 connection to the
 * successor (see migrate.h), on the connection's worker. Below h1.c,
 * which calls it at message boundaries; it reads the request block's
 * input (h1.h) but calls nothing of HTTP/1.1.
 *
 * The order of a hand-over matters: the connection leaves the worker's
 * epoll set before handoff_migrate() (the successor shares the open file
 * description, and a registration would outlive our copy of the fd); on
 * success the fd is the core's, so the connection forgets it without
 * closing, shutting down or lingering, and goes to the graveyard so that
 * an event for it still in the current batch is ignored.
 */
#include "migrate.h"

#include "conn.h"
#include "h1.h"
#include "server.h"

#include <stdlib.h>
#include <sys/epoll.h>


bool hs_mig_wanted(const struct hs_conn *c)
{
    const handoff_http_server *srv = hs_server_of(c->w);
    /* An h2c listener's connection may still turn into HTTP/2 (its
     * preface is sniffed): it drains here. */
    return !c->no_migrate && !c->ssl && !c->h2c && !srv->o.no_migrate && srv->h &&
           handoff_successor_adopts(srv->h) == 1;
}

static size_t pending_out(const struct hs_conn *c)
{
    const struct hs_h1_blk *b = c->p;
    return b ? b->out.len - b->woff : 0;
}

bool hs_mig_out(struct hs_conn *c)
{
    struct hs_worker *w = c->w;
    handoff_http_server *srv = hs_server_of(w);
    if (c->state != HS_C_OPEN || c->pstate != HS_H1_HEAD || c->close_after || c->eof ||
        c->fd < 0 || pending_out(c))
        return false;
    const struct hs_h1_blk *b = c->p;
    struct hs_mig_state st = {.nreq = c->nreq};
    if (b && b->rlen > b->rstart) {
        st.in = b->rbuf + b->rstart;
        st.len = b->rlen - b->rstart;
    }
    if (st.len > HANDOFF_MIGRATE_STATE_MAX - HS_MIG_HDR) {
        c->no_migrate = true;
        return false;
    }
    st.wait = st.len ? HS_MIG_WAIT_HEAD : c->nreq ? HS_MIG_WAIT_IDLE : HS_MIG_WAIT_NEW;
    int cls = c->h.tclass;
    if (cls == HS_T_NEW || cls == HS_T_IDLE || cls == HS_T_READ)
        st.elapsed = w->now > c->h.tsince ? w->now - c->h.tsince : 0;

    unsigned char small[HS_MIG_HDR + 512];
    unsigned char *blob = small;
    if (st.len > sizeof small - HS_MIG_HDR) {
        blob = malloc(HS_MIG_HDR + st.len);
        if (!blob)
            return false; /* tried again at its next turn */
    }
    hs_mig_build(&st, blob);
    /* Out of the epoll set first: see the top of this file. */
    hs_unwatch(w, c->fd);
    int r = handoff_migrate(srv->h, c->fd, blob, HS_MIG_HDR + st.len);
    if (blob != small)
        free(blob);
    if (r < 0) {
        /* It stays here and drains; edge-triggered, the registration
         * reports at once what arrived meanwhile. */
        c->no_migrate = true;
        atomic_fetch_add_explicit(&srv->mig_failed, 1, memory_order_relaxed);
        if (hs_watch(w, c->fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, &c->h) < 0) {
            hs_conn_close(c);
            return true;
        }
        c->read_more = true;
        return false;
    }
    /* The fd is the core's, which counts the connection until the
     * successor acknowledges it. */
    c->fd = -1;
    if (c->counted) {
        c->counted = false;
        hs_count_end(w->counter);
    }
    atomic_store(&c->gone, true);
    atomic_fetch_add_explicit(&srv->mig_out, 1, memory_order_relaxed);
    hs_conn_gone(c);
    return true;
}

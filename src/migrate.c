/*
 * migrate.c - connection migration: the hooks the core calls, the
 * migration state's life, handoff_adopt() and HANDOFF_EVENT_ADOPT.
 *
 * A draining generation hands established connections (fd + opaque state)
 * to its successor over the handshake socket, which stays open after READY
 * when both sides opted in (HANDOFF_MIGRATE) and the parent advertised it
 * (HANDOFF_CAPS). The old side is migrate_out.c, the successor's
 * migrate_in.c, what both use migrate_base.c, the wire format
 * migrate_wire.c (docs/protocol.md, section 9).
 *
 * Threads: everything runs under m->mu. handoff_migrate(), handoff_adopt()
 * and handoff_successor_adopts() may be called from any thread; events are
 * pushed only from the thread calling handoff_next_event().
 */
#include "migrate_impl.h"
#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void push_adopt_event(handoff_t *h, struct hf_mig *m)
{
    handoff_event ev = {.type = HANDOFF_EVENT_ADOPT};

    if (m->qlen == 0 || m->event_pending)
        return;
    /* A full queue (the application does not read events) retries at the
     * next call. */
    if (handoff__event_push(&h->loop, &ev, "%zu connections to adopt", m->qlen) == 0)
        m->event_pending = true;
}

void handoff__mig_on_event(handoff_t *h, uint32_t tag)
{
    struct hf_mig *m = h->mig;

    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    if (tag == HF_TAG_MIG_OUT)
        handoff__mig_out_event(h, m);
    else if (tag == HF_TAG_MIG_TIMER && m->timerfd >= 0)
        handoff__mig_out_timer(h, m);
    else if (tag == HF_TAG_MIG_IN && m->in_fd >= 0)
        handoff__mig_in_process(h, m);
    if (m->out == CH_BROKEN)
        handoff__mig_out_teardown(h, m);
    push_adopt_event(h, m);
    pthread_mutex_unlock(&m->mu);
}

void handoff__mig_poll(handoff_t *h)
{
    struct hf_mig *m = h->mig;

    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    handoff__mig_out_flush(h, m);
    if (m->out == CH_BROKEN)
        handoff__mig_out_teardown(h, m);
    push_adopt_event(h, m);
    pthread_mutex_unlock(&m->mu);
}

int handoff_adopt(handoff_t *h, handoff_adopted *out)
{
    struct hf_mig *m;
    struct mig_entry e;

    if (!h || !out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    out->fd = -1;
    m = h->mig;
    if (!m)
        return 0;
    pthread_mutex_lock(&m->mu);
    free(m->cur);
    m->cur = NULL;
    if (m->qlen == 0) {
        m->event_pending = false;
        pthread_mutex_unlock(&m->mu);
        return 0;
    }
    e = m->q[m->qhead];
    m->qhead = (m->qhead + 1) % m->qcap;
    m->qlen--;
    m->qbytes -= e.len;
    m->cur = e.state;
    pthread_mutex_unlock(&m->mu);
    /* The library's count for the connection becomes the caller's. */
    out->fd = e.fd;
    out->returned = e.returned;
    out->state = e.state;
    out->len = e.len;
    return 1;
}

int handoff__mig_new(handoff_t *h)
{
    struct hf_mig *m;

    if (!(h->flags & HANDOFF_MIGRATE))
        return 0;
    m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return -ENOMEM;
    }
    m->out_fd = m->in_fd = m->timerfd = -1;
    m->next_seq = 1;
    m->unsent_tail = &m->unsent;
    m->inflight_tail = &m->inflight;
    h->mig = m;
    return 0;
}

void handoff__mig_free(handoff_t *h)
{
    struct hf_mig *m = h->mig;

    if (!m)
        return;
    h->mig = NULL;
    handoff__mig_out_free(h, m);
    handoff__mig_in_free(m);
    for (size_t i = 0; i < m->qlen; i++) {
        struct mig_entry *e = &m->q[(m->qhead + i) % m->qcap];
        (void)close(e->fd);
        free(e->state);
    }
    if (m->qlen)
        handoff__log(h, HANDOFF_LOG_WARNING,
                     "migration: closing %zu connections nobody took with handoff_adopt()",
                     m->qlen);
    free(m->q);
    free(m->cur);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

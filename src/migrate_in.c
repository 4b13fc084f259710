/*
 * migrate_in.c - connection migration, the successor's side: the channel
 * from the predecessor (docs/protocol.md, section 9.4).
 *
 * Each batch is received with MSG_CMSG_CLOEXEC and the sender's
 * kernel-verified pid; every fd is checked; the accepted ones are adopted
 * only once the acknowledgement naming them has been sent (if the
 * predecessor has shut the channel meanwhile, it took them back, and they
 * are closed here). An acknowledgement that would block stops the reading
 * of batches until it can be sent.
 */
#include "migrate_impl.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

const char *handoff__mig_ready_msg(handoff_t *h)
{
    struct hf_mig *m = h->mig;
    int one = 1;

    if (!m || !(h->parent_caps & HF_CAP_MIGRATE1) || h->ready_fd < 0)
        return "READY=1";
    /* Batches carry the sender's verified pid only if we ask for it before
     * the parent can send any (it sends after our READY). */
    if (setsockopt(h->ready_fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) {
        handoff__log(h, HANDOFF_LOG_WARNING, "migration: SO_PASSCRED: %s; not adopting",
                     strerror(errno));
        return "READY=1";
    }
    m->rbuf = malloc(HF_MIG_MSG_MAX);
    if (!m->rbuf)
        return "READY=1";
    handoff__mig_raise_nofile(h);
    m->in_want = true;
    return "READY=1\nADOPT=1";
}

int handoff__mig_attach_in(handoff_t *h, int fd, pid_t peer)
{
    struct hf_mig *m = h->mig;
    int one = 1, r;

    if (!m) {
        (void)close(fd);
        return -EINVAL;
    }
    pthread_mutex_lock(&m->mu);
    if (!m->rbuf)
        m->rbuf = malloc(HF_MIG_MSG_MAX);
    (void)setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
    r = !m->rbuf ? -ENOMEM : m->in_fd >= 0 ? -EBUSY : handoff__mig_epoll_set(h, fd, HF_TAG_MIG_IN, EPOLLIN);
    if (r == 0) {
        m->in_fd = fd;
        m->in_pid = peer;
    } else {
        (void)close(fd);
    }
    pthread_mutex_unlock(&m->mu);
    return r;
}

bool handoff__mig_take_ready_fd(handoff_t *h)
{
    int fd = h->ready_fd;

    if (!h->mig || !h->mig->in_want || fd < 0)
        return false;
    h->ready_fd = -1;
    if (handoff__mig_attach_in(h, fd, h->parent_pid) < 0)
        handoff__log(h, HANDOFF_LOG_WARNING, "migration: cannot watch the channel to the parent");
    return true;
}

__attribute__((format(printf, 4, 5))) static void in_close(handoff_t *h, struct hf_mig *m,
                                                           int level, const char *fmt, ...)
{
    char why[160];
    va_list ap;

    va_start(ap, fmt);
    handoff__vformat(why, sizeof why, fmt, ap);
    va_end(ap);
    for (uint32_t i = 0; i < m->nheld; i++) {
        (void)close(m->held[i].fd);
        free(m->held[i].state);
    }
    if (m->nheld)
        handoff__log(h, HANDOFF_LOG_WARNING,
                     "migration: %u connections not adopted: the predecessor keeps them",
                     m->nheld);
    m->nheld = 0;
    m->in_ack_pending = m->in_wait_write = false;
    handoff__loop_del(&h->loop, m->in_fd);
    (void)close(m->in_fd);
    m->in_fd = -1;
    handoff__log(h, level, "migration from pid %ld ended (%s): %lu connections adopted, %lu refused",
                 (long)m->in_pid, why, m->in_adopted, m->in_refused);
}

/* Sends the pending acknowledgement; on success the connections it names
 * become ours. Returns 0, -EAGAIN (wait for EPOLLOUT), or -errno (the
 * predecessor is gone or took them back: close them). */
static int in_send_ack(handoff_t *h, struct hf_mig *m)
{
    ssize_t n;

    do {
        n = send(m->in_fd, m->ack, m->acklen, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN) {
        if (!m->in_wait_write) {
            /* Stop reading batches until this one is acknowledged. */
            m->in_wait_write = true;
            (void)handoff__mig_epoll_set(h, m->in_fd, HF_TAG_MIG_IN, EPOLLOUT);
        }
        return -EAGAIN;
    }
    if (n < 0)
        return -errno;
    if (m->in_wait_write) {
        m->in_wait_write = false;
        (void)handoff__mig_epoll_set(h, m->in_fd, HF_TAG_MIG_IN, EPOLLIN);
    }
    /* Room was reserved before the acknowledgement was built. */
    for (uint32_t i = 0; i < m->nheld; i++) {
        handoff__mig_q_push(m, &m->held[i]);
        hf_mig_conn_begin(h);
    }
    m->in_adopted += m->nheld;
    m->nheld = 0;
    m->in_ack_pending = false;
    return 0;
}

static void in_batch(handoff_t *h, struct hf_mig *m, size_t n, int flags, int *fds, size_t nfds)
{
    struct hf_mig_rec recs[HF_MIG_BATCH_FDS];
    struct hf_mig_hdr hdr = {0};
    struct hf_mig_ack ack;
    uint32_t refused = 0;
    int rc = (flags & MSG_TRUNC) ? -EBADMSG : handoff__mig_batch_parse(m->rbuf, n, &hdr, recs);
    bool take;

    if ((flags & MSG_TRUNC) && handoff__mig_hdr_parse(m->rbuf, n, &hdr) < 0)
        rc = -EPROTO;
    if (rc == -EPROTO || hdr.type != HF_MIG_T_BATCH || hdr.count == 0 ||
        hdr.count > HF_MIG_BATCH_FDS) {
        for (size_t i = 0; i < nfds; i++)
            (void)close(fds[i]);
        in_close(h, m, HANDOFF_LOG_ERR, "malformed batch header; %zu fds closed", nfds);
        return;
    }
    memset(&ack, 0, sizeof ack);
    ack.seq = hdr.seq;
    ack.count = hdr.count;
    ack.received = nfds < hdr.count ? (uint32_t)nfds : hdr.count;
    /* Nothing is adopted from a malformed batch, from more fds than
     * records, or once this process is stopping; room in the queue is
     * reserved first, so that nothing acknowledged can be lost. */
    take = rc >= 0 && nfds <= hdr.count && !h->stop_pending &&
           m->qlen + nfds <= HF_MIG_PENDING_MAX && handoff__mig_q_reserve(m, m->qlen + nfds) == 0;
    if (rc < 0 || nfds > hdr.count)
        handoff__log(h, HANDOFF_LOG_ERR,
                     "migration: malformed batch %u from pid %ld (%u records, %zu fds); "
                     "refusing it",
                     hdr.seq, (long)m->in_pid, hdr.count, nfds);
    for (size_t i = 0; i < nfds; i++) {
        struct mig_entry e = {.fd = fds[i]};
        int v = take && i < hdr.count ? handoff__mig_check_conn(fds[i]) : -ECANCELED;
        if (v == 0 && m->qbytes + recs[i].len > HF_MIG_PENDING_BYTES)
            v = -ENOBUFS;
        if (v == 0 && recs[i].len) {
            e.len = recs[i].len;
            e.state = malloc(e.len);
            if (!e.state)
                v = -ENOMEM;
            else
                memcpy(e.state, recs[i].state, e.len);
        }
        if (v < 0) {
            (void)close(fds[i]);
            if (take)
                refused++;
            continue;
        }
        m->held[m->nheld++] = e;
        ack.bits[i / 8] |= (uint8_t)(1u << (i % 8));
    }
    if (refused)
        handoff__log(h, HANDOFF_LOG_WARNING,
                     "migration: refused %u connections of batch %u (not a connected stream "
                     "socket, over capacity, or stopping)",
                     refused, hdr.seq);
    if ((flags & MSG_CTRUNC) || nfds < hdr.count)
        handoff__log(h, HANDOFF_LOG_WARNING,
                     "migration: received %zu of %u fds of batch %u%s; the predecessor keeps "
                     "the rest",
                     nfds, hdr.count, hdr.seq,
                     (flags & MSG_CTRUNC) ? " (MSG_CTRUNC: at the fd limit)" : "");
    m->in_refused += hdr.count - m->nheld;
    m->acklen = handoff__mig_ack_write(m->ack, &ack);
    m->in_ack_pending = true;
}

void handoff__mig_in_process(handoff_t *h, struct hf_mig *m)
{
    int fds[HF_MIG_BATCH_FDS + 1];

    for (int k = 0; k < HF_MIG_MSGS_PER_POLL && m->in_fd >= 0; k++) {
        size_t nfds;
        pid_t pid;
        int flags = 0, n;

        if (m->in_ack_pending) {
            int r = in_send_ack(h, m);
            if (r == -EAGAIN)
                return;
            if (r < 0) {
                in_close(h, m, HANDOFF_LOG_WARNING, "acknowledgement: %s", strerror(-r));
                return;
            }
        }
        n = handoff__mig_recv_msg(m->in_fd, m->rbuf, HF_MIG_MSG_MAX, fds, HF_MIG_BATCH_FDS + 1, &nfds, &pid,
                     &flags);
        if (n == -EAGAIN)
            return;
        if (n <= 0) {
            for (size_t i = 0; i < nfds; i++)
                (void)close(fds[i]);
            if (n == 0)
                in_close(h, m, HANDOFF_LOG_INFO, "the predecessor closed the channel");
            else
                in_close(h, m, HANDOFF_LOG_WARNING, "recv: %s", strerror(-n));
            return;
        }
        if (pid != m->in_pid) {
            handoff__log(h, HANDOFF_LOG_WARNING,
                         "migration: ignoring a batch from pid %ld (the predecessor is pid %ld)",
                         (long)pid, (long)m->in_pid);
            for (size_t i = 0; i < nfds; i++)
                (void)close(fds[i]);
            continue;
        }
        in_batch(h, m, (size_t)n, flags, fds, nfds);
    }
    if (m->in_fd >= 0 && m->in_ack_pending) {
        int r = in_send_ack(h, m);
        if (r < 0 && r != -EAGAIN)
            in_close(h, m, HANDOFF_LOG_WARNING, "acknowledgement: %s", strerror(-r));
    }
}

bool handoff__mig_busy(handoff_t *h)
{
    struct hf_mig *m = h->mig;
    bool busy;

    if (!m)
        return false;
    pthread_mutex_lock(&m->mu);
    busy = m->in_fd >= 0;
    pthread_mutex_unlock(&m->mu);
    return busy;
}

void handoff__mig_in_free(struct hf_mig *m)
{
    for (uint32_t i = 0; i < m->nheld; i++) {
        (void)close(m->held[i].fd);
        free(m->held[i].state);
    }
    m->nheld = 0;
    if (m->in_fd >= 0)
        (void)close(m->in_fd);
    m->in_fd = -1;
    free(m->rbuf);
    m->rbuf = NULL;
}

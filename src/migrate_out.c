/*
 * migrate_out.c - connection migration, the old generation's side: the
 * channel to the successor (docs/protocol.md, section 9.3).
 *
 * handoff_migrate() appends a record to the open batch; a full batch (252
 * fds, or the message size limit) is sent at once, a partial one at the
 * next handoff_next_event(). Sends never block: on EAGAIN the batch waits
 * for EPOLLOUT. The library keeps its copy of every fd until the successor
 * acknowledges the batch with the list of what it adopted; then it closes
 * its copy of those, and the rest comes back through handoff_adopt() with
 * returned = 1. A channel that breaks (EOF, error, malformed
 * acknowledgement, no acknowledgement within the timeout) is shut down
 * first - from then on the successor's acknowledgements fail with EPIPE and
 * it closes what it received - then the acknowledgements already queued
 * are honoured, and everything else is returned. So each connection ends
 * up in exactly one generation.
 *
 * handoff_migrate() may run on any thread (under m->mu); the timer is a
 * timerfd of its own for that reason.
 */
#include "migrate_impl.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#ifndef ETOOMANYREFS
#define ETOOMANYREFS 109
#endif

static void batch_free(struct mig_batch *b)
{
    if (b) {
        free(b->msg);
        free(b);
    }
}

static struct mig_batch *batch_new(void)
{
    struct mig_batch *b = calloc(1, sizeof *b);

    if (!b)
        return NULL;
    b->cap = 4096;
    b->msg = malloc(b->cap);
    if (!b->msg) {
        free(b);
        return NULL;
    }
    b->len = HF_MIG_HDR;
    return b;
}

static int batch_reserve(struct mig_batch *b, size_t more)
{
    size_t cap = b->cap;
    unsigned char *n;

    if (b->len + more <= cap)
        return 0;
    while (cap < b->len + more)
        cap *= 2;
    n = realloc(b->msg, cap);
    if (!n)
        return -ENOMEM;
    b->msg = n;
    b->cap = cap;
    return 0;
}

/* Moves the open batch to the send queue, its header written. */
static void close_open(struct hf_mig *m)
{
    struct mig_batch *b = m->open;
    struct hf_mig_hdr hdr = {.version = HF_MIG_VERSION, .type = HF_MIG_T_BATCH};

    if (!b)
        return;
    m->open = NULL;
    if (b->n == 0) {
        batch_free(b);
        return;
    }
    b->seq = hdr.seq = m->next_seq++;
    hdr.count = b->n;
    handoff__mig_hdr_write(b->msg, &hdr);
    *m->unsent_tail = b;
    m->unsent_tail = &b->next;
}

static void timer_arm(struct hf_mig *m, uint64_t at)
{
    struct itimerspec its = {{0, 0}, {0, 0}};

    if (m->timerfd < 0)
        return;
    if (at) {
        its.it_value.tv_sec = (time_t)(at / HANDOFF_USEC_PER_SEC);
        its.it_value.tv_nsec = (long)(at % HANDOFF_USEC_PER_SEC) * 1000;
    }
    (void)timerfd_settime(m->timerfd, TFD_TIMER_ABSTIME, &its, NULL);
}

__attribute__((format(printf, 2, 3))) static void out_break(struct hf_mig *m, const char *fmt,
                                                            ...)
{
    va_list ap;

    if (m->out != CH_OPEN)
        return;
    m->out = CH_BROKEN;
    va_start(ap, fmt);
    handoff__vformat(m->out_why, sizeof m->out_why, fmt, ap);
    va_end(ap);
}

static int send_batch(int fd, const struct mig_batch *b)
{
    union {
        struct cmsghdr hdr;
        char space[CMSG_SPACE(sizeof(int) * HF_MIG_BATCH_FDS)];
    } ctl;
    struct iovec iov = {.iov_base = b->msg, .iov_len = b->len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space,
                         .msg_controllen = CMSG_SPACE(sizeof(int) * b->n)};
    struct cmsghdr *c;
    ssize_t n;

    memset(&ctl, 0, sizeof ctl);
    c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * b->n);
    memcpy(CMSG_DATA(c), b->fds, sizeof(int) * b->n);
    do {
        n = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    return n == (ssize_t)b->len ? 0 : -EIO;
}

/* Sends queued batches until the socket is full. */
static void out_send(handoff_t *h, struct hf_mig *m)
{
    while (m->out == CH_OPEN && m->unsent && !m->out_wait_write && !m->out_wait_ack) {
        struct mig_batch *b = m->unsent;
        int r = send_batch(m->out_fd, b);

        if (r == -EAGAIN) {
            /* The successor is slow: never block, wait for room. */
            m->out_wait_write = true;
            if (handoff__mig_epoll_set(h, m->out_fd, HF_TAG_MIG_OUT, EPOLLIN | EPOLLOUT) < 0)
                out_break(m, "cannot watch the channel");
            return;
        }
        if (r == -ETOOMANYREFS && m->inflight) {
            /* Our user has too many fds in flight (RLIMIT_NOFILE): the
             * next acknowledgement frees some. */
            m->out_wait_ack = true;
            return;
        }
        if (r < 0) {
            out_break(m, "sendmsg: %s", strerror(-r));
            return;
        }
        m->unsent = b->next;
        if (!m->unsent)
            m->unsent_tail = &m->unsent;
        b->next = NULL;
        b->sent_at = handoff_now_usec();
        if (!m->inflight)
            timer_arm(m, b->sent_at + m->ack_timeout);
        *m->inflight_tail = b;
        m->inflight_tail = &b->next;
    }
}

/* Record i of b goes back to the application (returned = 1). */
static void return_one(handoff_t *h, struct hf_mig *m, struct mig_batch *b, uint32_t i)
{
    struct mig_entry e = {.fd = b->fds[i], .returned = true};

    e.len = hf_rd32(b->msg + b->off[i]);
    m->pending--;
    m->pending_bytes -= e.len;
    if (e.len) {
        e.state = malloc(e.len);
        if (e.state)
            memcpy(e.state, b->msg + b->off[i] + 4, e.len);
    }
    if ((e.len && !e.state) || handoff__mig_q_reserve(m, m->qlen + 1) < 0) {
        handoff__log(h, HANDOFF_LOG_ERR,
                     "migration: out of memory returning a connection; closing it");
        free(e.state);
        (void)close(e.fd);
        hf_mig_conn_end(h);
        return;
    }
    handoff__mig_q_push(m, &e);
    m->out_returned++;
}

static void return_batch(handoff_t *h, struct hf_mig *m, struct mig_batch *b)
{
    for (uint32_t i = 0; i < b->n; i++)
        return_one(h, m, b, i);
    batch_free(b);
}

static void apply_ack(handoff_t *h, struct hf_mig *m, const struct hf_mig_ack *ack)
{
    struct mig_batch *b = m->inflight;
    uint32_t adopted = 0;

    m->inflight = b->next;
    if (!m->inflight)
        m->inflight_tail = &m->inflight;
    for (uint32_t i = 0; i < b->n; i++) {
        if (ack->bits[i / 8] & (1u << (i % 8))) {
            /* The successor holds its own copy now. */
            uint32_t len = hf_rd32(b->msg + b->off[i]);
            (void)close(b->fds[i]);
            m->pending--;
            m->pending_bytes -= len;
            m->out_adopted++;
            adopted++;
            hf_mig_conn_end(h);
        } else {
            return_one(h, m, b, i);
        }
    }
    if (ack->received < b->n)
        handoff__log(h, HANDOFF_LOG_WARNING,
                     "migration: successor pid %ld received %u of %u connections of batch %u "
                     "(at its fd limit?); the rest are ours again",
                     (long)m->out_pid, ack->received, b->n, b->seq);
    if (adopted < ack->received)
        handoff__log(h, HANDOFF_LOG_INFO,
                     "migration: successor pid %ld refused %u connections of batch %u",
                     (long)m->out_pid, ack->received - adopted, b->seq);
    batch_free(b);
    timer_arm(m, m->inflight ? m->inflight->sent_at + m->ack_timeout : 0);
    if (m->out_wait_ack) {
        m->out_wait_ack = false;
        out_send(h, m);
    }
}

/* Reads acknowledgements. During a teardown (the channel already shut
 * down), it takes whatever is queued and stops at the first problem. */
static void out_read(handoff_t *h, struct hf_mig *m, bool teardown)
{
    unsigned char buf[HF_MIG_ACK_MAX + 1];
    int fds[HF_MIG_BATCH_FDS + 1];

    for (int k = 0; teardown || k < HF_MIG_MSGS_PER_POLL; k++) {
        struct hf_mig_ack ack;
        size_t nfds;
        pid_t pid;
        int flags = 0, n;

        if (!teardown && m->out != CH_OPEN)
            return;
        n = handoff__mig_recv_msg(m->out_fd, buf, sizeof buf, fds, HF_MIG_BATCH_FDS + 1, &nfds, &pid, &flags);
        for (size_t i = 0; i < nfds; i++)
            (void)close(fds[i]); /* nothing is sent this way */
        if (n == -EAGAIN || (teardown && n <= 0))
            return;
        if (n < 0) {
            out_break(m, "recv: %s", strerror(-n));
            return;
        }
        if (n == 0) {
            out_break(m, "the successor closed the channel");
            return;
        }
        if (pid != m->out_pid) {
            /* Only the successor itself may acknowledge (the socketpair is
             * unnamed; this is a process that inherited its end). */
            handoff__log(h, HANDOFF_LOG_WARNING,
                         "migration: ignoring a message from pid %ld (successor is pid %ld)",
                         (long)pid, (long)m->out_pid);
            continue;
        }
        if ((flags & MSG_TRUNC) || handoff__mig_ack_parse(buf, (size_t)n, &ack) < 0) {
            out_break(m, "malformed acknowledgement");
            return;
        }
        if (!m->inflight || ack.seq != m->inflight->seq || ack.count != m->inflight->n) {
            out_break(m, "acknowledgement of batch %u, expected %u", ack.seq,
                      m->inflight ? m->inflight->seq : 0);
            return;
        }
        apply_ack(h, m, &ack);
    }
}

/* Ends the channel to the successor: what it acknowledged before the
 * shutdown stays with it, everything else comes back to us. */
void handoff__mig_out_teardown(handoff_t *h, struct hf_mig *m)
{
    unsigned long ret0 = m->out_returned;
    struct mig_batch *b;

    if (m->out == CH_NONE)
        return;
    (void)shutdown(m->out_fd, SHUT_RDWR);
    out_read(h, m, true);
    while ((b = m->inflight)) {
        m->inflight = b->next;
        return_batch(h, m, b);
    }
    while ((b = m->unsent)) {
        m->unsent = b->next;
        return_batch(h, m, b);
    }
    if ((b = m->open)) {
        m->open = NULL;
        return_batch(h, m, b);
    }
    m->inflight_tail = &m->inflight;
    m->unsent_tail = &m->unsent;
    handoff__loop_del(&h->loop, m->out_fd);
    (void)close(m->out_fd);
    m->out_fd = -1;
    if (m->timerfd >= 0) {
        handoff__loop_del(&h->loop, m->timerfd);
        (void)close(m->timerfd);
        m->timerfd = -1;
    }
    m->out = CH_NONE;
    m->out_wait_write = m->out_wait_ack = false;
    handoff__log(h, m->out_returned > ret0 ? HANDOFF_LOG_WARNING : HANDOFF_LOG_INFO,
                 "migration to pid %ld ended (%s): %lu connections adopted by it, %lu returned "
                 "to us (%lu just now)",
                 (long)m->out_pid, m->out_why, m->out_adopted, m->out_returned,
                 m->out_returned - ret0);
}

int handoff__mig_attach_out(handoff_t *h, int fd, pid_t peer)
{
    struct hf_mig *m = h->mig;
    int one = 1, sb = (int)HF_MIG_MSG_MAX * 2, r;
    socklen_t l = sizeof sb;

    if (!m) {
        (void)close(fd);
        return -EINVAL;
    }
    pthread_mutex_lock(&m->mu);
    if (m->out != CH_NONE) {
        out_break(m, "a new successor took over");
        handoff__mig_out_teardown(h, m);
    }
    m->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    (void)setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
    /* A message larger than SO_SNDBUF fails with EMSGSIZE: ask for room for
     * two full messages, and size messages by what we got. */
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sb, sizeof sb);
    if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sb, &l) < 0)
        sb = 212992;
    m->max_msg = HF_MIG_MSG_MAX;
    if ((size_t)sb < m->max_msg + 1024)
        m->max_msg = (size_t)sb > 2048 ? (size_t)sb - 1024 : 1024;
    if (m->timerfd < 0 || (r = handoff__mig_epoll_set(h, fd, HF_TAG_MIG_OUT, EPOLLIN)) < 0 ||
        (r = handoff__loop_add(&h->loop, m->timerfd, HF_TAG_MIG_TIMER)) < 0) {
        r = m->timerfd < 0 ? -errno : r;
        handoff__log(h, HANDOFF_LOG_WARNING, "migration: cannot watch the channel: %s",
                     strerror(-r));
        handoff__loop_del(&h->loop, fd);
        (void)close(fd);
        if (m->timerfd >= 0)
            (void)close(m->timerfd);
        m->timerfd = -1;
        pthread_mutex_unlock(&m->mu);
        return r;
    }
    m->out_fd = fd;
    m->out_pid = peer;
    m->out = CH_OPEN;
    m->out_adopted = m->out_returned = 0;
    snprintf(m->out_why, sizeof m->out_why, "%s", "we exited");
    m->ack_timeout = HF_MIG_ACK_TIMEOUT_USEC;
    if (h->drain_timeout != HANDOFF_NO_TIMEOUT && h->drain_timeout / 2 < m->ack_timeout)
        m->ack_timeout = h->drain_timeout / 2;
    pthread_mutex_unlock(&m->mu);
    handoff__mig_raise_nofile(h);
    return 0;
}

void handoff__mig_handover(handoff_t *h, unsigned adopt)
{
    int fd;

    if (!h->mig || adopt != HF_MIG_VERSION || h->child.sock < 0)
        return;
    fd = h->child.sock;
    h->child.sock = -1;
    if (handoff__mig_attach_out(h, fd, h->child.pid) == 0)
        handoff__log(h, HANDOFF_LOG_INFO, "migration: successor pid %ld adopts connections",
                     (long)h->child.pid);
}

int handoff_successor_adopts(const handoff_t *h)
{
    struct hf_mig *m = h ? h->mig : NULL;
    int r;

    if (!m)
        return 0;
    pthread_mutex_lock(&m->mu);
    r = m->out == CH_OPEN;
    pthread_mutex_unlock(&m->mu);
    return r;
}

int handoff_migrate(handoff_t *h, int fd, const void *state, size_t len)
{
    struct hf_mig *m;
    struct mig_batch *b;
    size_t rec = 4 + len;
    int r;

    if (!h || fd < 0 || (len && !state))
        return -EINVAL;
    if (len > HANDOFF_MIGRATE_STATE_MAX)
        return -EMSGSIZE;
    m = h->mig;
    if (!m || !handoff_successor_adopts(h))
        return -ENOTCONN;
    r = handoff__mig_check_conn(fd);
    if (r < 0)
        return r;
    pthread_mutex_lock(&m->mu);
    if (m->out != CH_OPEN) {
        r = -ENOTCONN;
        goto out;
    }
    if (m->pending >= HF_MIG_PENDING_MAX || m->pending_bytes + len > HF_MIG_PENDING_BYTES) {
        r = -ENOBUFS;
        goto out;
    }
    if (HF_MIG_HDR + rec > m->max_msg) {
        r = -EMSGSIZE;
        goto out;
    }
    if (m->open && m->open->len + rec > m->max_msg)
        close_open(m);
    if (!m->open && !(m->open = batch_new())) {
        r = -ENOMEM;
        goto out;
    }
    b = m->open;
    if (batch_reserve(b, rec) < 0) {
        r = -ENOMEM;
        goto out;
    }
    b->off[b->n] = (uint32_t)b->len;
    b->fds[b->n++] = fd;
    hf_wr32(b->msg + b->len, (uint32_t)len);
    if (len)
        memcpy(b->msg + b->len + 4, state, len);
    b->len += rec;
    m->pending++;
    m->pending_bytes += len;
    /* Counted until acknowledged or returned: STOP(DRAINED) waits. */
    hf_mig_conn_begin(h);
    if (b->n == HF_MIG_BATCH_FDS)
        close_open(m);
    out_send(h, m);
    /* A partial batch goes out at the next handoff_next_event(). */
    if (m->open && m->open->n == 1)
        handoff__loop_wake(&h->loop);
    if (m->out == CH_BROKEN)
        handoff__loop_wake(&h->loop);
    r = 0;
out:
    pthread_mutex_unlock(&m->mu);
    return r;
}

void handoff__mig_out_timer(handoff_t *h, struct hf_mig *m)
{
    uint64_t ticks;

    (void)!read(m->timerfd, &ticks, sizeof ticks);
    if (m->out == CH_OPEN && m->inflight) {
        uint64_t due = m->inflight->sent_at + m->ack_timeout;
        if (handoff_now_usec() >= due)
            out_break(m, "no acknowledgement of batch %u within %llu ms", m->inflight->seq,
                      (unsigned long long)(m->ack_timeout / HANDOFF_USEC_PER_MSEC));
        else
            timer_arm(m, due);
    }
    (void)h;
}

void handoff__mig_set_ack_timeout(handoff_t *h, uint64_t usec)
{
    struct hf_mig *m = h->mig;

    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->ack_timeout = usec;
    pthread_mutex_unlock(&m->mu);
}

void handoff__mig_out_event(handoff_t *h, struct hf_mig *m)
{
    if (m->out == CH_NONE)
        return;
    if (m->out_wait_write) {
        m->out_wait_write = false;
        if (handoff__mig_epoll_set(h, m->out_fd, HF_TAG_MIG_OUT, EPOLLIN) < 0)
            out_break(m, "cannot watch the channel");
    }
    out_read(h, m, false);
    out_send(h, m);
}

void handoff__mig_out_flush(handoff_t *h, struct hf_mig *m)
{
    if (m->out == CH_OPEN && m->open) {
        close_open(m);
        out_send(h, m);
    }
}

static void free_batches(struct mig_batch *b)
{
    while (b) {
        struct mig_batch *next = b->next;
        for (uint32_t i = 0; i < b->n; i++)
            (void)close(b->fds[i]);
        batch_free(b);
        b = next;
    }
}

void handoff__mig_out_free(handoff_t *h, struct hf_mig *m)
{
    if (m->out != CH_NONE)
        handoff__log(h, m->pending ? HANDOFF_LOG_WARNING : HANDOFF_LOG_INFO,
                     "migration to pid %ld ended (we exited): %lu connections adopted by it, "
                     "%lu returned to us; %zu not acknowledged are closed",
                     (long)m->out_pid, m->out_adopted, m->out_returned, m->pending);
    free_batches(m->inflight);
    free_batches(m->unsent);
    free_batches(m->open);
    m->inflight = m->unsent = m->open = NULL;
    if (m->out_fd >= 0)
        (void)close(m->out_fd);
    if (m->timerfd >= 0)
        (void)close(m->timerfd);
    m->out_fd = m->timerfd = -1;
}

/*
 * migrate.c - connection migration: the old generation hands established
 * connections (fd + opaque state) to its successor over the handshake
 * socket, which stays open after READY when both sides opted in
 * (HANDOFF_MIGRATE) and the parent advertised it (HANDOFF_CAPS).
 *
 * Old generation ("out" channel): handoff_migrate() appends a record to
 * the open batch; a full batch (252 fds, or the message size limit) is
 * sent at once, a partial one at the next handoff_next_event(). Sends
 * never block: on EAGAIN the batch waits for EPOLLOUT. The library keeps
 * its copy of every fd until the successor acknowledges the batch with
 * the list of what it adopted; then it closes its copy of those, and the
 * rest comes back through handoff_adopt() with returned = 1. A channel
 * that breaks (EOF, error, malformed acknowledgement, no acknowledgement
 * within the timeout) is shut down first - from then on the successor's
 * acknowledgements fail with EPIPE and it closes what it received - then
 * the acknowledgements already queued are honoured, and everything else
 * is returned. So each connection ends up in exactly one generation.
 *
 * Successor ("in" channel): each batch is received with MSG_CMSG_CLOEXEC
 * and the sender's kernel-verified pid; every fd is checked; the accepted
 * ones are adopted only once the acknowledgement naming them has been
 * sent (docs/protocol.md, section 9).
 *
 * Threads: everything here runs under m->mu. handoff_migrate(),
 * handoff_adopt() and handoff_successor_adopts() may be called from any
 * thread; events are pushed only from the thread calling
 * handoff_next_event().
 */
#include "migrate.h"
#include "handle.h"
#include "log.h"
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#ifndef ETOOMANYREFS
#define ETOOMANYREFS 109
#endif

/* A connection waiting for handoff_adopt(). */
struct mig_entry {
    int fd;
    bool returned;
    uint32_t len;
    unsigned char *state; /* malloc'd; NULL when len is 0 */
};

/* One batch: the wire message, built as records are added, and the fds. */
struct mig_batch {
    struct mig_batch *next;
    uint32_t seq, n;
    uint64_t sent_at;
    size_t len, cap;
    unsigned char *msg;
    int fds[HF_MIG_BATCH_FDS];
    uint32_t off[HF_MIG_BATCH_FDS]; /* offset of record i's length field */
};

enum mig_ch { CH_NONE = 0, CH_OPEN, CH_BROKEN };

struct hf_mig {
    pthread_mutex_t mu;

    /* to the successor */
    enum mig_ch out;
    int out_fd;
    pid_t out_pid;
    bool out_wait_write;  /* EPOLLOUT armed after EAGAIN */
    bool out_wait_ack;    /* ETOOMANYREFS: retry after the next ack */
    char out_why[160];
    int timerfd;
    uint64_t ack_timeout;
    uint32_t next_seq;
    size_t max_msg;
    struct mig_batch *open;
    struct mig_batch *unsent, **unsent_tail;
    struct mig_batch *inflight, **inflight_tail;
    size_t pending, pending_bytes;
    unsigned long out_adopted, out_returned; /* this channel */

    /* from the predecessor */
    bool in_want;         /* we said ADOPT */
    int in_fd;
    pid_t in_pid;
    unsigned char *rbuf;
    bool in_ack_pending;
    bool in_wait_write;
    unsigned char ack[HF_MIG_ACK_MAX];
    size_t acklen;
    struct mig_entry held[HF_MIG_BATCH_FDS]; /* accepted, ack not sent yet */
    uint32_t nheld;
    unsigned long in_adopted, in_refused;

    /* waiting for handoff_adopt(): a ring */
    struct mig_entry *q;
    size_t qhead, qlen, qcap, qbytes;
    unsigned char *cur;   /* state returned by the last handoff_adopt() */
    bool event_pending;
};

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void wake(handoff_t *h)
{
    handoff__loop_wake(&h->loop);
}

/* Registers fd under tag in the loop's epoll set for events (the loop
 * itself only watches for EPOLLIN). */
static int epoll_set(handoff_t *h, int fd, uint32_t tag, uint32_t events)
{
    struct epoll_event e = {.events = events, .data.u32 = tag};
    if (epoll_ctl(h->loop.epfd, EPOLL_CTL_MOD, fd, &e) == 0)
        return 0;
    if (errno != ENOENT)
        return -errno;
    return epoll_ctl(h->loop.epfd, EPOLL_CTL_ADD, fd, &e) < 0 ? -errno : 0;
}

/* The connection count of handoff_conn_begin()/_end() (core.c, a layer
 * above this file): the library counts the connections it holds. */
static void conn_begin(handoff_t *h)
{
    atomic_fetch_add(&h->conns, 1);
}

static void conn_end(handoff_t *h)
{
    if (atomic_fetch_sub(&h->conns, 1) == 1 && atomic_load(&h->draining))
        handoff__loop_wake(&h->loop);
}

/* A connected stream socket of a family we hand over, in two system calls
 * per connection on each side (a hand-over of 10,000 makes 20,000 on
 * each): getsockopt(SO_TYPE) fails with ENOTSOCK for anything but a
 * socket (what fstat()'s S_ISSOCK would tell), and a socket with a peer
 * is not listening (listen() refuses a connected socket, and a listener
 * has no peer), so SO_ACCEPTCONN adds nothing to getpeername(). */
static int check_conn(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss, l;
    int type = 0;

    l = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) < 0)
        return errno == ENOTSOCK ? -ENOTSOCK : -errno;
    if (type != SOCK_STREAM)
        return -EINVAL;
    ss.ss_family = AF_UNSPEC;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
        return -EINVAL;
    if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6 && ss.ss_family != AF_UNIX)
        return -EINVAL;
    return 0;
}

/* The kernel limits fds in flight by the sender's RLIMIT_NOFILE, and a
 * receiver at its limit silently loses the excess: both sides use what
 * the hard limit allows. */
static void raise_nofile(handoff_t *h)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
            handoff__log(h, HANDOFF_LOG_INFO, "migration: RLIMIT_NOFILE raised from %llu to %llu",
                         (unsigned long long)was, (unsigned long long)rl.rlim_max);
    }
}

/* ------------------------------------------------------------------------ */
/* The queue for handoff_adopt()                                            */

static int q_reserve(struct hf_mig *m, size_t need)
{
    struct mig_entry *n;
    size_t cap;

    if (need <= m->qcap)
        return 0;
    cap = m->qcap ? m->qcap : 64;
    while (cap < need)
        cap *= 2;
    n = malloc(cap * sizeof *n);
    if (!n)
        return -ENOMEM;
    for (size_t i = 0; m->qcap && i < m->qlen; i++)
        n[i] = m->q[(m->qhead + i) % m->qcap];
    free(m->q);
    m->q = n;
    m->qcap = cap;
    m->qhead = 0;
    return 0;
}

/* Needs room reserved. */
static void q_push(struct hf_mig *m, const struct mig_entry *e)
{
    m->q[(m->qhead + m->qlen) % m->qcap] = *e;
    m->qlen++;
    m->qbytes += e->len;
}

/* ------------------------------------------------------------------------ */
/* Old generation: batches                                                  */

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
            if (epoll_set(h, m->out_fd, HF_TAG_MIG_OUT, EPOLLIN | EPOLLOUT) < 0)
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

    e.len = rd32(b->msg + b->off[i]);
    m->pending--;
    m->pending_bytes -= e.len;
    if (e.len) {
        e.state = malloc(e.len);
        if (e.state)
            memcpy(e.state, b->msg + b->off[i] + 4, e.len);
    }
    if ((e.len && !e.state) || q_reserve(m, m->qlen + 1) < 0) {
        handoff__log(h, HANDOFF_LOG_ERR,
                     "migration: out of memory returning a connection; closing it");
        free(e.state);
        (void)close(e.fd);
        conn_end(h);
        return;
    }
    q_push(m, &e);
    m->out_returned++;
}

static void return_batch(handoff_t *h, struct hf_mig *m, struct mig_batch *b)
{
    for (uint32_t i = 0; i < b->n; i++)
        return_one(h, m, b, i);
    batch_free(b);
}

static int recv_msg(int fd, void *buf, size_t len, int *fds, size_t maxfds, size_t *nfds,
                    pid_t *pid, int *flags)
{
    union {
        struct cmsghdr hdr;
        char space[CMSG_SPACE(sizeof(struct ucred)) +
                   CMSG_SPACE(sizeof(int) * (HF_MIG_BATCH_FDS + 1))];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space,
                         .msg_controllen = sizeof ctl.space};
    ssize_t n;

    *nfds = 0;
    *pid = 0;
    do {
        n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET)
            continue;
        if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len == CMSG_LEN(sizeof(struct ucred))) {
            struct ucred cr;
            memcpy(&cr, CMSG_DATA(c), sizeof cr);
            *pid = cr.pid;
        } else if (c->cmsg_type == SCM_RIGHTS) {
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int f;
                memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
                if (*nfds < maxfds)
                    fds[(*nfds)++] = f;
                else
                    (void)close(f);
            }
        }
    }
    *flags = msg.msg_flags;
    return (int)n;
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
            uint32_t len = rd32(b->msg + b->off[i]);
            (void)close(b->fds[i]);
            m->pending--;
            m->pending_bytes -= len;
            m->out_adopted++;
            adopted++;
            conn_end(h);
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
        n = recv_msg(m->out_fd, buf, sizeof buf, fds, HF_MIG_BATCH_FDS + 1, &nfds, &pid, &flags);
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
static void out_teardown(handoff_t *h, struct hf_mig *m)
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
        out_teardown(h, m);
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
    if (m->timerfd < 0 || (r = epoll_set(h, fd, HF_TAG_MIG_OUT, EPOLLIN)) < 0 ||
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
    raise_nofile(h);
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
    r = check_conn(fd);
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
    wr32(b->msg + b->len, (uint32_t)len);
    if (len)
        memcpy(b->msg + b->len + 4, state, len);
    b->len += rec;
    m->pending++;
    m->pending_bytes += len;
    /* Counted until acknowledged or returned: STOP(DRAINED) waits. */
    conn_begin(h);
    if (b->n == HF_MIG_BATCH_FDS)
        close_open(m);
    out_send(h, m);
    /* A partial batch goes out at the next handoff_next_event(). */
    if (m->open && m->open->n == 1)
        wake(h);
    if (m->out == CH_BROKEN)
        wake(h);
    r = 0;
out:
    pthread_mutex_unlock(&m->mu);
    return r;
}

static void on_timer(handoff_t *h, struct hf_mig *m)
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

/* ------------------------------------------------------------------------ */
/* Successor                                                                */

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
    raise_nofile(h);
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
    r = !m->rbuf ? -ENOMEM : m->in_fd >= 0 ? -EBUSY : epoll_set(h, fd, HF_TAG_MIG_IN, EPOLLIN);
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
            (void)epoll_set(h, m->in_fd, HF_TAG_MIG_IN, EPOLLOUT);
        }
        return -EAGAIN;
    }
    if (n < 0)
        return -errno;
    if (m->in_wait_write) {
        m->in_wait_write = false;
        (void)epoll_set(h, m->in_fd, HF_TAG_MIG_IN, EPOLLIN);
    }
    /* Room was reserved before the acknowledgement was built. */
    for (uint32_t i = 0; i < m->nheld; i++) {
        q_push(m, &m->held[i]);
        conn_begin(h);
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
           m->qlen + nfds <= HF_MIG_PENDING_MAX && q_reserve(m, m->qlen + nfds) == 0;
    if (rc < 0 || nfds > hdr.count)
        handoff__log(h, HANDOFF_LOG_ERR,
                     "migration: malformed batch %u from pid %ld (%u records, %zu fds); "
                     "refusing it",
                     hdr.seq, (long)m->in_pid, hdr.count, nfds);
    for (size_t i = 0; i < nfds; i++) {
        struct mig_entry e = {.fd = fds[i]};
        int v = take && i < hdr.count ? check_conn(fds[i]) : -ECANCELED;
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

static void in_process(handoff_t *h, struct hf_mig *m)
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
        n = recv_msg(m->in_fd, m->rbuf, HF_MIG_MSG_MAX, fds, HF_MIG_BATCH_FDS + 1, &nfds, &pid,
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

/* ------------------------------------------------------------------------ */
/* Both                                                                     */

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
    if (tag == HF_TAG_MIG_OUT && m->out != CH_NONE) {
        if (m->out_wait_write) {
            m->out_wait_write = false;
            if (epoll_set(h, m->out_fd, HF_TAG_MIG_OUT, EPOLLIN) < 0)
                out_break(m, "cannot watch the channel");
        }
        out_read(h, m, false);
        out_send(h, m);
    } else if (tag == HF_TAG_MIG_TIMER && m->timerfd >= 0) {
        on_timer(h, m);
    } else if (tag == HF_TAG_MIG_IN && m->in_fd >= 0) {
        in_process(h, m);
    }
    if (m->out == CH_BROKEN)
        out_teardown(h, m);
    push_adopt_event(h, m);
    pthread_mutex_unlock(&m->mu);
}

void handoff__mig_poll(handoff_t *h)
{
    struct hf_mig *m = h->mig;

    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    if (m->out == CH_OPEN && m->open) {
        close_open(m);
        out_send(h, m);
    }
    if (m->out == CH_BROKEN)
        out_teardown(h, m);
    push_adopt_event(h, m);
    pthread_mutex_unlock(&m->mu);
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

void handoff__mig_free(handoff_t *h)
{
    struct hf_mig *m = h->mig;

    if (!m)
        return;
    h->mig = NULL;
    if (m->out != CH_NONE)
        handoff__log(h, m->pending ? HANDOFF_LOG_WARNING : HANDOFF_LOG_INFO,
                     "migration to pid %ld ended (we exited): %lu connections adopted by it, "
                     "%lu returned to us; %zu not acknowledged are closed",
                     (long)m->out_pid, m->out_adopted, m->out_returned, m->pending);
    free_batches(m->inflight);
    free_batches(m->unsent);
    free_batches(m->open);
    for (uint32_t i = 0; i < m->nheld; i++) {
        (void)close(m->held[i].fd);
        free(m->held[i].state);
    }
    for (size_t i = 0; i < m->qlen; i++) {
        struct mig_entry *e = &m->q[(m->qhead + i) % m->qcap];
        (void)close(e->fd);
        free(e->state);
    }
    if (m->qlen)
        handoff__log(h, HANDOFF_LOG_WARNING,
                     "migration: closing %zu connections nobody took with handoff_adopt()",
                     m->qlen);
    if (m->out_fd >= 0)
        (void)close(m->out_fd);
    if (m->in_fd >= 0)
        (void)close(m->in_fd);
    if (m->timerfd >= 0)
        (void)close(m->timerfd);
    free(m->q);
    free(m->cur);
    free(m->rbuf);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

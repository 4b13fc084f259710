/*
 * migrate_base.c - what both ends of connection migration use: the check of
 * a connection's fd, the queue of connections for handoff_adopt(), and
 * receiving one message with its fds and its sender's verified pid.
 */
#include "migrate_impl.h"
#include "log.h"
#include "shared/sockaddr.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* Registers fd under tag in the loop's epoll set for events (the loop
 * itself only watches for EPOLLIN). */
int handoff__mig_epoll_set(handoff_t *h, int fd, uint32_t tag, uint32_t events)
{
    struct epoll_event e = {.events = events, .data.u32 = tag};
    if (epoll_ctl(h->loop.epfd, EPOLL_CTL_MOD, fd, &e) == 0)
        return 0;
    if (errno != ENOENT)
        return -errno;
    return epoll_ctl(h->loop.epfd, EPOLL_CTL_ADD, fd, &e) < 0 ? -errno : 0;
}

/* A connected stream socket of a family we hand over, in two system calls
 * per connection on each side (a hand-over of 10,000 makes 20,000 on
 * each): getsockopt(SO_TYPE) fails with ENOTSOCK for anything but a
 * socket (what fstat()'s S_ISSOCK would tell), and a socket with a peer
 * is not listening (listen() refuses a connected socket, and a listener
 * has no peer), so SO_ACCEPTCONN adds nothing to getpeername(). */
int handoff__mig_check_conn(int fd)
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
void handoff__mig_raise_nofile(handoff_t *h)
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

int handoff__mig_q_reserve(struct hf_mig *m, size_t need)
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
void handoff__mig_q_push(struct hf_mig *m, const struct mig_entry *e)
{
    m->q[(m->qhead + m->qlen) % m->qcap] = *e;
    m->qlen++;
    m->qbytes += e->len;
}

int handoff__mig_recv_msg(int fd, void *buf, size_t len, int *fds, size_t maxfds, size_t *nfds,
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
    struct ucred cr;
    ssize_t n;

    *nfds = 0;
    *pid = 0;
    n = handoff__recvmsg_nb(fd, &msg);
    if (n < 0)
        return (int)n;
    if (handoff__msg_take(&msg, &cr, fds, maxfds, nfds))
        *pid = cr.pid;
    *flags = msg.msg_flags;
    return (int)n;
}

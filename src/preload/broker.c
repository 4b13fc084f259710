/*
 * broker.c - the supervisor hands its sockets to the shim, on demand.
 *
 * When a server under `handoff run --preload` binds one of the
 * supervisor's addresses, the shim asks here (one datagram) and gets the
 * socket back in SCM_RIGHTS. Fetching at bind() time, rather than passing
 * fds at exec, is what makes close-all loops, closefrom()/close_range(),
 * LISTEN_PID in forked children and fd-number collisions irrelevant: the
 * worker holds no socket it did not ask for.
 *
 * Who may ask: a process in the tree of a live worker (the owner callback
 * decides, with the kernel's SCM_CREDENTIALS pid). A request from anyone
 * else is refused, and so is a bind of an address that a live process of
 * the same worker already holds (two servers on one address), unless both
 * set SO_REUSEPORT, as the kernel would. Each generation's worker is its
 * own owner: a new generation binding what the old one holds is the point.
 *
 * The supervisor is single-threaded and must never block here: the socket
 * is non-blocking, replies are sent with MSG_DONTWAIT, and a shim that
 * cannot be answered (its socket gone, its queue full) times out on its
 * side with an error.
 */
#include "preload.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_BINDS 1024

struct bind_rec {
    pid_t owner, pid;
    int index;
    bool reuseport;
};

struct pl_broker {
    int fd;
    size_t n;
    int fds[PL_MAX_HELD];
    uint64_t ino[PL_MAX_HELD]; /* the socket inodes, to find holders in /proc */
    struct pl_sock held[PL_MAX_HELD];
    struct bind_rec binds[MAX_BINDS];
    size_t nbinds;
    struct sockaddr_un addr;
    socklen_t addrlen;
};

int pl_broker_open(const int *fds, size_t n, struct pl_broker **out, char *addr, size_t addrlen)
{
    struct pl_broker *b;
    uint64_t rnd = 0;
    int one = 1, w, e;

    *out = NULL;
    if (n > PL_MAX_HELD)
        return -E2BIG;
    b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    b->n = n;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        int r = pl_sock_from_fd(fds[i], true, &b->held[i]);
        if (r < 0 || fstat(fds[i], &st) < 0) {
            free(b);
            return r < 0 ? r : -errno;
        }
        b->fds[i] = fds[i];
        b->ino[i] = (uint64_t)st.st_ino;
        b->held[i].sino = (uint64_t)st.st_ino;
    }
    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) < 0) {
        struct timespec ts;
        (void)clock_gettime(CLOCK_MONOTONIC, &ts);
        rnd = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
    }
    w = snprintf(addr, addrlen, "@handoff/%ld/preload/%016llx", (long)getpid(), (unsigned long long)rnd);
    if (w < 0 || (size_t)w >= addrlen || (size_t)w >= sizeof b->addr.sun_path) {
        free(b);
        return -ENAMETOOLONG;
    }
    b->addr.sun_family = AF_UNIX;
    memcpy(b->addr.sun_path + 1, addr + 1, (size_t)w - 1);
    b->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)w);
    b->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (b->fd < 0) {
        e = errno;
        free(b);
        return -e;
    }
    if (setsockopt(b->fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0 ||
        bind(b->fd, (struct sockaddr *)&b->addr, b->addrlen) < 0) {
        e = errno;
        (void)close(b->fd);
        free(b);
        return -e;
    }
    *out = b;
    return 0;
}

int pl_broker_fd(const struct pl_broker *b)
{
    return b->fd;
}

const struct pl_sock *pl_broker_held(const struct pl_broker *b, size_t *n)
{
    *n = b->n;
    return b->held;
}

void pl_broker_close(struct pl_broker *b)
{
    if (!b)
        return;
    (void)close(b->fd);
    free(b);
}

int pl_broker_worker_env(const struct pl_broker *b, const char *lib, const char *cur, int depth, bool ready,
                         int log, int stop_signal, char **ld_preload, char **handoff_preload)
{
    struct pl_env e;
    struct stat st;
    size_t cap;
    int r;

    *ld_preload = *handoff_preload = NULL;
    memset(&e, 0, sizeof e);
    if (!lib || strlen(lib) >= sizeof e.lib)
        return -EINVAL;
    e.depth = depth;
    e.ready = ready;
    e.log = log;
    e.stop_signal = stop_signal;
    if (stat("/proc/self/ns/net", &st) == 0) {
        e.netns_dev = (uint64_t)st.st_dev;
        e.netns_ino = (uint64_t)st.st_ino;
    }
    (void)snprintf(e.sock, sizeof e.sock, "@%.*s", (int)(b->addrlen - offsetof(struct sockaddr_un, sun_path) - 1),
                   b->addr.sun_path + 1);
    (void)snprintf(e.lib, sizeof e.lib, "%s", lib);
    e.nheld = b->n;
    memcpy(e.held, b->held, b->n * sizeof b->held[0]);
    cap = strlen("LD_PRELOAD=") + (cur ? strlen(cur) : 0) + strlen(lib) + 2;
    *ld_preload = malloc(cap);
    if (!*ld_preload)
        return -ENOMEM;
    memcpy(*ld_preload, "LD_PRELOAD=", 11);
    r = pl_preload_add(*ld_preload + 11, cap - 11, cur, lib);
    if (r < 0)
        goto fail;
    cap = 1024 + b->n * 300;
    *handoff_preload = malloc(cap);
    if (!*handoff_preload) {
        r = -ENOMEM;
        goto fail;
    }
    memcpy(*handoff_preload, PL_ENV "=", sizeof PL_ENV);
    r = pl_env_format(&e, *handoff_preload + sizeof PL_ENV, cap - sizeof PL_ENV);
    if (r < 0)
        goto fail;
    return 0;
fail:
    free(*ld_preload);
    free(*handoff_preload);
    *ld_preload = *handoff_preload = NULL;
    return r == -ENOSPC ? -ENOMEM : r;
}

static void comm_of(pid_t pid, char *buf, size_t len)
{
    char path[64];
    ssize_t n;
    int fd;

    (void)snprintf(buf, len, "?");
    (void)snprintf(path, sizeof path, "/proc/%ld/comm", (long)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    n = read(fd, buf, len - 1);
    (void)close(fd);
    if (n <= 0) {
        (void)snprintf(buf, len, "?");
        return;
    }
    buf[n] = '\0';
    if (buf[n - 1] == '\n')
        buf[n - 1] = '\0';
}

/* Does pid still hold the socket with inode ino? A process whose fds
 * cannot be read (another user, not dumpable) is taken to hold it. */
static bool holds(pid_t pid, uint64_t ino)
{
    char path[64], want[48], link[64];
    struct dirent *d;
    bool found = false;
    DIR *dir;

    (void)snprintf(path, sizeof path, "/proc/%ld/fd", (long)pid);
    dir = opendir(path);
    if (!dir)
        return errno != ENOENT && errno != ESRCH;
    (void)snprintf(want, sizeof want, "socket:[%llu]", (unsigned long long)ino);
    while (!found && (d = readdir(dir)) != NULL) {
        ssize_t n;
        if (d->d_name[0] == '.')
            continue;
        n = readlinkat(dirfd(dir), d->d_name, link, sizeof link - 1);
        if (n <= 0)
            continue;
        link[n] = '\0';
        found = strcmp(link, want) == 0;
    }
    (void)closedir(dir);
    return found;
}

static void logf_(const struct pl_broker_ops *ops, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void logf_(const struct pl_broker_ops *ops, int level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    if (!ops->log)
        return;
    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof msg, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
    va_end(ap);
    ops->log(level, msg, ops->ud);
}

/* Decides one request; fills rep. Returns the held index to attach, or -1. */
static int decide(struct pl_broker *b, pid_t pid, pid_t owner, const struct pl_req *q,
                  const struct pl_broker_ops *ops, struct pl_rep *rep)
{
    char want[160], comm[32], ocomm[32];
    size_t idx = 0;
    int reason = 0, v;

    comm_of(pid, comm, sizeof comm);
    (void)pl_sock_format(&q->sock, want, sizeof want);
    if (owner <= 0) {
        rep->status = EPERM;
        (void)snprintf(rep->msg, sizeof rep->msg,
                       "pid %ld is not in the process tree of a worker of this supervisor (a server that "
                       "daemonizes leaves it: run it in the foreground)",
                       (long)pid);
        logf_(ops, 1, "preload: refused %s to pid %ld (%s): not in a worker's process tree", want, (long)pid,
              comm);
        return -1;
    }
    v = pl_match(b->held, b->n, &q->sock, &idx, &reason);
    if (v == PL_NONE) {
        rep->status = EADDRNOTAVAIL;
        (void)snprintf(rep->msg, sizeof rep->msg, "not one of the supervisor's sockets");
        return -1;
    }
    rep->index = (int)idx;
    if (v == PL_CONFLICT) {
        char have[160];
        (void)pl_sock_format(&b->held[idx], have, sizeof have);
        rep->status = EADDRINUSE;
        (void)snprintf(rep->msg, sizeof rep->msg, "conflicts with the supervisor's %.64s: %s", have,
                       pl_reason_text(reason));
        return -1;
    }
    /* Two servers of one worker on one address: refused as the kernel
     * refuses a second bind while the first socket is open, unless both
     * asked for SO_REUSEPORT. Records of processes that no longer hold the
     * socket are dropped here. */
    bool reuse = (q->flags & PL_REQ_REUSEPORT) != 0, known = false;
    for (size_t i = 0; i < b->nbinds;) {
        struct bind_rec *r = &b->binds[i];
        if (r->owner != owner || r->index != (int)idx) {
            i++;
            continue;
        }
        if (r->pid == pid) {
            known = true;
            r->reuseport = reuse;
            i++;
            continue;
        }
        if (!holds(r->pid, b->ino[idx])) {
            *r = b->binds[--b->nbinds];
            continue;
        }
        if (!(reuse && r->reuseport)) {
            comm_of(r->pid, ocomm, sizeof ocomm);
            rep->status = EADDRINUSE;
            (void)snprintf(rep->msg, sizeof rep->msg,
                           "already bound by pid %ld (%.15s) of the same worker: two servers cannot share one "
                           "address (unless both set SO_REUSEPORT)",
                           (long)r->pid, ocomm);
            logf_(ops, 1, "preload: refused %s to pid %ld (%s): pid %ld (%s) of the same worker holds it",
                  want, (long)pid, comm, (long)r->pid, ocomm);
            return -1;
        }
        i++;
    }
    if (!known) {
        if (b->nbinds == MAX_BINDS) {
            /* Full: forget the records of processes that let go. */
            for (size_t i = 0; i < b->nbinds;) {
                if (!holds(b->binds[i].pid, b->ino[b->binds[i].index]))
                    b->binds[i] = b->binds[--b->nbinds];
                else
                    i++;
            }
        }
        if (b->nbinds < MAX_BINDS)
            b->binds[b->nbinds++] = (struct bind_rec){owner, pid, (int)idx, reuse};
    }
    if (ops->served)
        ops->served(owner, pid, idx, ops->ud);
    rep->status = 0;
    logf_(ops, 3, "preload: pid %ld (%s) of worker %ld binds %s: socket %zu", (long)pid, comm, (long)owner,
          want, idx);
    return (int)idx;
}

static void reply(struct pl_broker *b, const struct sockaddr_un *to, socklen_t tolen, const struct pl_rep *rep,
                  int fd, const struct pl_broker_ops *ops)
{
    uint8_t buf[PL_REP_SIZE];
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } c;
    struct iovec iov = {buf, sizeof buf};
    struct msghdr mh = {.msg_name = (void *)to, .msg_namelen = tolen, .msg_iov = &iov, .msg_iovlen = 1};

    if (pl_rep_encode(rep, buf, sizeof buf) < 0)
        return;
    if (fd >= 0) {
        memset(&c, 0, sizeof c);
        mh.msg_control = c.buf;
        mh.msg_controllen = sizeof c.buf;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    }
    if (sendmsg(b->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
        logf_(ops, 3, "preload: reply lost: %s", strerror(errno));
}

void pl_broker_on_event(struct pl_broker *b, const struct pl_broker_ops *ops)
{
    for (int k = 0; k < 64; k++) {
        uint8_t buf[PL_REQ_SIZE + 1];
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 8)];
        } c;
        struct sockaddr_un from;
        struct iovec iov = {buf, sizeof buf};
        struct msghdr mh = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov, .msg_iovlen = 1,
                            .msg_control = c.buf, .msg_controllen = sizeof c.buf};
        struct ucred cred = {0, 0, 0};
        bool have_cred = false;
        struct pl_req q;
        struct pl_rep rep;
        ssize_t n;
        int idx;

        memset(&from, 0, sizeof from);
        n = recvmsg(b->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR)
                logf_(ops, 1, "preload: broker: %s", strerror(errno));
            return;
        }
        /* Whatever fds a sender attached are not ours to keep. */
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS &&
                cm->cmsg_len >= CMSG_LEN(sizeof cred)) {
                memcpy(&cred, CMSG_DATA(cm), sizeof cred);
                have_cred = true;
            } else if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
                size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < nfd; i++) {
                    int fd;
                    memcpy(&fd, CMSG_DATA(cm) + i * sizeof fd, sizeof fd);
                    (void)close(fd);
                }
            }
        }
        if (!have_cred || cred.pid <= 0)
            continue;
        bool bad = (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || pl_req_decode(buf, (size_t)n, &q) < 0;
        pid_t owner = ops->owner ? ops->owner(cred.pid, ops->ud) : 0;
        if (!bad && q.op == PL_OP_READY) {
            /* No reply. Bits beyond the held sockets are not the shim's. */
            uint64_t all = b->n >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << b->n) - 1;
            if (owner > 0 && ops->ready && !(q.mask & ~all))
                ops->ready(owner, cred.pid, q.mask, ops->ud);
            else
                logf_(ops, 3, "preload: ignored READY from pid %ld", (long)cred.pid);
            continue;
        }
        /* A sender without an address cannot be answered. */
        if (mh.msg_namelen <= sizeof(sa_family_t))
            continue;
        memset(&rep, 0, sizeof rep);
        rep.index = -1;
        if (bad) {
            rep.status = EPROTO;
            (void)snprintf(rep.msg, sizeof rep.msg, "malformed request (a shim of another version?)");
            logf_(ops, 1, "preload: malformed request from pid %ld", (long)cred.pid);
            reply(b, &from, mh.msg_namelen, &rep, -1, ops);
            continue;
        }
        idx = decide(b, cred.pid, owner, &q, ops, &rep);
        reply(b, &from, mh.msg_namelen, &rep, idx >= 0 ? b->fds[idx] : -1, ops);
    }
}

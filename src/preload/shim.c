/*
 * shim.c - libhandoff-preload.so: `handoff run --preload` for servers that
 * bind their own sockets.
 *
 * The supervisor puts this library into a worker's LD_PRELOAD and
 * describes its sockets in HANDOFF_PRELOAD (env.c). When the server binds
 * one of those addresses, bind() asks the supervisor's broker for the
 * socket (broker.c), dup3()s it onto the fd the server holds (keeping the
 * fd's FD_CLOEXEC, and the server's O_NONBLOCK on the shared socket) and
 * returns 0 without a bind system call; listen() on it returns 0 too. The
 * server then accepts from the supervisor's listen queue, the same one the
 * old and the new generation share during a reload: nobody is refused.
 *
 * This file is over 600 lines because the shim's state (the sockets it
 * holds, the readiness watch, the stop-signal trampoline and the detached
 * placeholders) is static to one translation unit, never exported from
 * the library; what is pure is already apart (match.c, env.c, proto.c).
 *
 * What else is interposed, and why:
 *  - shutdown() of a supervisor socket does nothing: on a listening socket
 *    it would stop listening for every holder (checked: connect() then
 *    gets ECONNREFUSED). close() needs nothing: the supervisor keeps its
 *    own reference, so it is not interposed, and closefrom()/close_range()
 *    do not matter either.
 *  - unlink(), unlinkat() and remove() of the supervisor's unix socket
 *    file do nothing: servers remove a stale socket file before bind and
 *    at exit, and the path must outlive every generation.
 *  - sigaction() and signal() of the supervisor's stop signal: the
 *    server's handler is wrapped, so that at that signal the process stops
 *    accepting on the supervisor's sockets before the handler runs (see
 *    "the stop signal" below).
 *  - accept(), accept4(), poll(), ppoll(), select(), pselect() and
 *    epoll_ctl() only look, and only until the server has started waiting
 *    on every supervisor socket it bound: that is when the shim tells the
 *    supervisor it is ready (the server itself does not speak sd_notify).
 *    After that they cost one atomic load; after the stop signal, accept()
 *    of a detached socket the server had blocking waits a little before
 *    it fails (see "the stop signal").
 *
 * Environment hygiene (authbind's model, with a pid instead of exec
 * counting): the shim is active in the worker process, and in whatever
 * the worker execs without forking (sh -c 'exec server', #!/usr/bin/env),
 * recognised by HANDOFF_PRELOAD's pid. A program the server spawns (fork
 * and exec) is another pid: its constructor removes the shim from
 * LD_PRELOAD (other entries stay) and drops HANDOFF_PRELOAD, so nothing
 * below it loads the shim, and the shim stays passive in it, except to
 * explain a bind of a supervisor address. depth=N keeps it active N such
 * levels down (--preload-depth).
 *
 * Constraints: no allocation and no stdio outside the constructor; the
 * functions a signal handler may call (shutdown, the accept/poll family)
 * use only atomics and system calls; pass-through calls go to the next
 * definition (another preload library, or libc).
 */
#include "preload.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* glibc declares bind() and accept() with transparent unions under
 * _GNU_SOURCE (sys/socket.h); the definitions here must match. */
#if defined(__USE_GNU) && !defined(__cplusplus)
#define SOCKADDR_PTR(a) ((a).__sockaddr__)
#define CONST_SOCKADDR_ARG(p) ((__CONST_SOCKADDR_ARG){.__sockaddr__ = (p)})
#else
#define SOCKADDR_PTR(a) (a)
#define CONST_SOCKADDR_ARG(p) (p)
#endif

/* Seconds the shim waits for the broker's answer. */
#define FETCH_TIMEOUT 10
/* fds below this are marked in a bitmap, so that the poll family and
 * shutdown() find the supervisor's sockets without a system call. */
#define FD_BITS 8192
/* fds per held socket remembered for the "two binds in one process" check. */
#define FDS_PER_HELD 32

struct held_state {
    atomic_int bound;               /* this process bound it (0/1) */
    atomic_int watched;             /* ... and waits for connections on it */
    atomic_int reuseport;           /* its last bind set SO_REUSEPORT */
    atomic_int fds[FDS_PER_HELD];   /* fd + 1, 0 = empty */
};

static struct {
    bool loaded;                    /* HANDOFF_PRELOAD was parsed */
    bool active;                    /* this process takes sockets */
    struct pl_env env;
    struct held_state h[PL_MAX_HELD];
    atomic_bool ready_pending;      /* READY=1 not sent, and asked for */
    atomic_bool ready_sent;
    _Atomic uint64_t fdbits[FD_BITS / 64];
    char comm[32];
} G;

/* ---- the next definitions ---- */

/* Resolved on first use: an interposed call can come before the
 * constructor runs (from another library's constructor). */
typedef void (*anyfn)(void);
#define NEXT(name) ((__typeof__(&(name)))next_sym(&next_##name, #name))
static anyfn next_bind, next_listen, next_shutdown, next_unlink, next_unlinkat, next_remove, next_accept,
    next_accept4, next_poll, next_ppoll, next_select, next_pselect, next_epoll_ctl, next___poll_chk,
    next___ppoll_chk, next_sigaction, next_signal;

static anyfn next_sym(anyfn *slot, const char *name)
{
    anyfn f = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (!f) {
        void *p = dlsym(RTLD_NEXT, name);
        memcpy(&f, &p, sizeof f); /* ISO C has no object-to-function cast */
        __atomic_store_n(slot, f, __ATOMIC_RELEASE);
    }
    return f;
}

/* ---- messages ---- */

static void say(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(int level, const char *fmt, ...)
{
    char buf[768];
    int n, k;
    va_list ap;

    if (G.loaded && level > G.env.log)
        return;
    n = snprintf(buf, sizeof buf, "handoff-preload[%ld %s]: ", (long)getpid(), G.comm);
    if (n < 0)
        return;
    va_start(ap, fmt);
    k = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
    va_end(ap);
    if (k < 0)
        return;
    n += k;
    if ((size_t)n > sizeof buf - 2)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    (void)!write(STDERR_FILENO, buf, (size_t)n);
}

/* ---- /proc/self/fd, read without allocating ---- */

struct linux_dirent64 {
    uint64_t ino;
    int64_t off;
    unsigned short reclen;
    unsigned char type;
    char name[];
};

/* The fd a /proc/self/fd entry names, or -1 ("." and ".."). */
static int fd_of_name(const char *name)
{
    int v = 0;
    if (name[0] < '0' || name[0] > '9')
        return -1;
    for (; *name >= '0' && *name <= '9' && v < 100000000; name++)
        v = v * 10 + (*name - '0');
    return *name ? -1 : v;
}

/* ---- which fds are the supervisor's sockets ---- */

static void mark_fd(int fd, bool on)
{
    if (fd < 0 || fd >= FD_BITS)
        return;
    uint64_t bit = (uint64_t)1 << (fd % 64);
    if (on)
        atomic_fetch_or(&G.fdbits[fd / 64], bit);
    else
        atomic_fetch_and(&G.fdbits[fd / 64], ~bit);
}

static bool fd_marked(int fd)
{
    return fd >= 0 && fd < FD_BITS && (atomic_load_explicit(&G.fdbits[fd / 64], memory_order_relaxed) >> (fd % 64)) & 1;
}

/* The held socket fd refers to (by the socket's inode), or -1. */
static int held_index(int fd)
{
    struct stat st;

    if (!G.loaded || G.env.nheld == 0 || fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
        return -1;
    for (size_t i = 0; i < G.env.nheld; i++)
        if (G.env.held[i].sino && G.env.held[i].sino == (uint64_t)st.st_ino)
            return (int)i;
    return -1;
}

/* Like held_index(), for fds marked in the bitmap only (no system call for
 * the others); clears stale marks. */
static int marked_index(int fd)
{
    int i;

    if (!fd_marked(fd))
        return -1;
    i = held_index(fd);
    if (i < 0)
        mark_fd(fd, false);
    return i;
}

static void remember_fd(int idx, int fd)
{
    struct held_state *h = &G.h[idx];
    mark_fd(fd, true);
    for (int k = 0; k < FDS_PER_HELD; k++) {
        int cur = atomic_load(&h->fds[k]);
        if (cur == fd + 1)
            return;
    }
    for (int k = 0; k < FDS_PER_HELD; k++) {
        int expect = 0;
        if (atomic_compare_exchange_strong(&h->fds[k], &expect, fd + 1))
            return;
    }
    /* Full: the slot of an fd that no longer refers to the socket. */
    for (int k = 0; k < FDS_PER_HELD; k++) {
        int cur = atomic_load(&h->fds[k]);
        if (held_index(cur - 1) != idx && atomic_compare_exchange_strong(&h->fds[k], &cur, fd + 1))
            return;
    }
}

/* Another fd of this process still refers to held socket idx? */
static int other_fd(int idx, int fd)
{
    struct held_state *h = &G.h[idx];
    for (int k = 0; k < FDS_PER_HELD; k++) {
        int cur = atomic_load(&h->fds[k]);
        if (cur == 0 || cur == fd + 1)
            continue;
        if (held_index(cur - 1) == idx)
            return cur - 1;
        (void)atomic_compare_exchange_strong(&h->fds[k], &cur, 0);
    }
    return -1;
}

/* ---- readiness ---- */

/* The broker's address. */
static socklen_t broker_addr(struct sockaddr_un *to)
{
    size_t slen = strlen(G.env.sock);

    memset(to, 0, sizeof *to);
    to->sun_family = AF_UNIX;
    if (slen < 2 || slen > sizeof to->sun_path)
        return 0;
    memcpy(to->sun_path + 1, G.env.sock + 1, slen - 1); /* "@name": abstract */
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + slen);
}

/* READY to the broker, which knows this process's worker (the kernel
 * attaches the pid), rather than to NOTIFY_SOCKET, which counts only the
 * worker's own pid: the process that accepts is often a child of it. */
static void send_ready(void)
{
    struct pl_req q = {.op = PL_OP_READY};
    struct sockaddr_un to;
    socklen_t tolen = broker_addr(&to);
    uint8_t buf[PL_REQ_SIZE];
    int fd;

    for (size_t i = 0; i < G.env.nheld; i++)
        if (atomic_load(&G.h[i].bound))
            q.mask |= (uint64_t)1 << i;
    if (!tolen || pl_req_encode(&q, buf, sizeof buf) < 0)
        return;
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (sendto(fd, buf, sizeof buf, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&to, tolen) < 0)
        say(1, "READY to the supervisor: %s", strerror(errno));
    else
        say(2, "ready: the server waits for connections on every supervisor socket it bound");
    (void)close(fd);
}

/* The server waits for connections on fd (it polls or accepts). Once it
 * does on every supervisor socket this process bound, READY=1. */
static void make_lame_timer(void);

static void watching(int fd)
{
    int idx = marked_index(fd);

    if (idx < 0 || atomic_exchange(&G.h[idx].watched, 1))
        return;
    make_lame_timer(); /* a forked child (nginx's workers) needs its own */
    for (size_t i = 0; i < G.env.nheld; i++)
        if (atomic_load(&G.h[i].bound) && !atomic_load(&G.h[i].watched))
            return;
    if (!atomic_exchange(&G.ready_sent, true)) {
        atomic_store(&G.ready_pending, false);
        send_ready();
    }
}

static inline bool ready_pending(void)
{
    return atomic_load_explicit(&G.ready_pending, memory_order_relaxed);
}

/* ---- fetching a socket from the broker ---- */

/* Returns the socket (close-on-exec) or -errno, with the broker's reason
 * in why. */
static int fetch(const struct pl_sock *req, bool reuseport, char *why, size_t wlen)
{
    struct pl_req q = {.op = PL_OP_BIND, .flags = reuseport ? PL_REQ_REUSEPORT : 0, .sock = *req};
    struct sockaddr_un to;
    socklen_t tolen = broker_addr(&to);
    struct timeval tv = {FETCH_TIMEOUT, 0};
    uint8_t buf[PL_REP_SIZE + 1];
    int s, one = 1, got = -1, e;

    why[0] = '\0';
    if (!tolen || pl_req_encode(&q, buf, sizeof buf) < 0)
        return -EINVAL;
    s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -errno;
    /* SO_PASSCRED makes the kernel give this socket an address on send
     * (autobind): the broker answers to it. */
    if (setsockopt(s, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0 ||
        setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) {
        e = errno;
        (void)close(s);
        return -e;
    }
    if (sendto(s, buf, PL_REQ_SIZE, MSG_NOSIGNAL, (struct sockaddr *)&to, tolen) < 0) {
        e = errno;
        (void)close(s);
        (void)snprintf(why, wlen,
                       "cannot reach the supervisor at %s: %s (has it exited, or is this process in another "
                       "network namespace?)",
                       G.env.sock, strerror(e));
        return -(e == ECONNREFUSED || e == ENOENT ? EADDRNOTAVAIL : e);
    }
    for (int tries = 0; tries < 8; tries++) {
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 4)];
        } c;
        struct sockaddr_un from;
        struct iovec iov = {buf, sizeof buf};
        struct msghdr mh = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov, .msg_iovlen = 1,
                            .msg_control = c.b, .msg_controllen = sizeof c.b};
        struct pl_rep rep;
        ssize_t n;
        int fd = -1;

        memset(&from, 0, sizeof from);
        n = recvmsg(s, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            e = errno;
            (void)snprintf(why, wlen, "no answer from the supervisor at %s: %s", G.env.sock,
                           e == EAGAIN ? "timed out" : strerror(e));
            got = -(e == EAGAIN ? ETIMEDOUT : e);
            break;
        }
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                continue;
            for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                int x;
                memcpy(&x, CMSG_DATA(cm) + i * sizeof x, sizeof x);
                if (fd < 0)
                    fd = x;
                else
                    (void)close(x);
            }
        }
        /* Only the broker's own address answers (another process could
         * send to this autobound one). */
        if (mh.msg_namelen != tolen || memcmp(&from, &to, tolen) != 0) {
            if (fd >= 0)
                (void)close(fd);
            continue;
        }
        if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || pl_rep_decode(buf, (size_t)n, &rep) < 0) {
            if (fd >= 0)
                (void)close(fd);
            (void)snprintf(why, wlen, "a malformed answer from the supervisor (another version?)");
            got = -EPROTO;
            break;
        }
        (void)snprintf(why, wlen, "%s", rep.msg);
        if (rep.status == 0 && fd >= 0) {
            got = fd;
        } else {
            if (fd >= 0)
                (void)close(fd);
            got = -(rep.status ? rep.status : EPROTO);
        }
        break;
    }
    (void)close(s);
    return got;
}

/* ---- bind ---- */

/* Options a server may set before bind() that the kernel keeps on the
 * socket and gives to accepted connections: copied to the shared socket
 * when the server's differ. SO_REUSEADDR and SO_REUSEPORT are not (they
 * only matter to a real bind), IPV6_V6ONLY must already match. */
static void copy_options(int from, int to, const struct pl_sock *s)
{
    static const struct {
        int level, name, tcp_only, doubled;
        const char *what;
    } opts[] = {
        {SOL_SOCKET, SO_KEEPALIVE, 0, 0, "SO_KEEPALIVE"},
        {SOL_SOCKET, SO_RCVBUF, 0, 1, "SO_RCVBUF"},
        {SOL_SOCKET, SO_SNDBUF, 0, 1, "SO_SNDBUF"},
        {IPPROTO_TCP, TCP_NODELAY, 1, 0, "TCP_NODELAY"},
        {IPPROTO_TCP, TCP_DEFER_ACCEPT, 1, 0, "TCP_DEFER_ACCEPT"},
        {IPPROTO_TCP, TCP_FASTOPEN, 1, 0, "TCP_FASTOPEN"},
    };
    bool tcp = (s->family == AF_INET || s->family == AF_INET6) && s->type == SOCK_STREAM &&
               (s->protocol == 0 || s->protocol == IPPROTO_TCP);

    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        int a = 0, b = 0;
        socklen_t la = sizeof a, lb = sizeof b;
        if (opts[i].tcp_only && !tcp)
            continue;
        if (getsockopt(from, opts[i].level, opts[i].name, &a, &la) < 0 ||
            getsockopt(to, opts[i].level, opts[i].name, &b, &lb) < 0 || a == b)
            continue;
        /* The kernel reports twice the buffer size it was given. */
        int v = opts[i].doubled ? a / 2 : a;
        if (setsockopt(to, opts[i].level, opts[i].name, &v, sizeof v) == 0)
            say(2, "copied %s=%d set before bind() to the shared socket", opts[i].what, a);
    }
}

struct epoll_reg {
    int epfd;
    struct epoll_event ev;
};

/* The epoll sets fd is registered in (an event loop may add a socket
 * before it binds it): from /proc/self/fdinfo, since epoll offers no way
 * to list them. Returns how many were found (at most max). */
static int epoll_regs(int fd, struct epoll_reg *regs, int max)
{
    char dents[2048], link[32], path[48], buf[4096], line[256];
    int dir, found = 0;
    long n;

    dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return 0;
    while (found < max && (n = syscall(SYS_getdents64, dir, dents, sizeof dents)) > 0) {
        for (long off = 0; off < n && found < max;) {
            const struct linux_dirent64 *d = (const void *)(dents + off);
            ssize_t l;
            int epfd = fd_of_name(d->name), info;
            size_t ll = 0, nl;
            off += d->reclen;
            if (epfd < 0)
                continue;
            l = readlinkat(dir, d->name, link, sizeof link - 1);
            if (l <= 0)
                continue;
            link[l] = '\0';
            if (strcmp(link, "anon_inode:[eventpoll]") != 0)
                continue;
            static const char dir_path[] = "/proc/self/fdinfo/";
            nl = strnlen(d->name, sizeof path - sizeof dir_path);
            memcpy(path, dir_path, sizeof dir_path - 1);
            memcpy(path + sizeof dir_path - 1, d->name, nl);
            path[sizeof dir_path - 1 + nl] = '\0';
            info = open(path, O_RDONLY | O_CLOEXEC);
            if (info < 0)
                continue;
            /* Line by line, across read boundaries. */
            while ((l = read(info, buf, sizeof buf)) > 0 && found < max) {
                for (ssize_t i = 0; i < l && found < max; i++) {
                    if (buf[i] != '\n') {
                        if (ll < sizeof line)
                            line[ll++] = buf[i];
                        continue;
                    }
                    int tfd;
                    uint32_t ev;
                    uint64_t data;
                    if (ll < sizeof line && pl_fdinfo_epoll_line(line, ll, &tfd, &ev, &data) && tfd == fd) {
                        regs[found].epfd = epfd;
                        regs[found].ev.events = ev;
                        regs[found].ev.data.u64 = data;
                        found++;
                    }
                    ll = 0;
                }
            }
            (void)close(info);
        }
    }
    (void)close(dir);
    return found;
}

static bool same_netns(void)
{
    struct stat st;
    if (!G.env.netns_ino || stat("/proc/self/ns/net", &st) < 0)
        return true; /* cannot tell */
    return (uint64_t)st.st_dev == G.env.netns_dev && (uint64_t)st.st_ino == G.env.netns_ino;
}

static int fail(int e)
{
    errno = e;
    return -1;
}

/* The address a bound socket has, or false if it has none. */
static bool is_bound(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    struct pl_sock s;

    memset(&s, 0, sizeof s);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 || pl_sock_from_addr(&s, &ss, len) < 0)
        return false;
    if (s.family == AF_UNIX)
        return s.ukind != PL_UNIX_UNNAMED;
    return s.port != 0;
}

/* bind() of an address the supervisor holds: substitute its socket. */
static int substitute(int fd, struct pl_sock *req, size_t idx, const char *what)
{
    struct epoll_reg regs[8];
    int nregs, got, fdflags, flflags, reuse = 0, other;
    socklen_t rl = sizeof reuse;
    char why[PL_REP_MSG + 64];

    /* bind() twice on one fd, or on a socket bound for real: what the
     * kernel says. */
    if (is_bound(fd))
        return fail(EINVAL);
    (void)getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &reuse, &rl);
    /* The same address twice in this process: EADDRINUSE, as the kernel
     * says while the first socket is open, unless both set SO_REUSEPORT
     * (servers that open one socket per thread or per worker do; they all
     * get the one shared socket, which balances the same way). */
    other = other_fd((int)idx, fd);
    if (other >= 0 && !(reuse && atomic_load(&G.h[idx].reuseport))) {
        say(0, "bind %s: this process already has it on fd %d (and SO_REUSEPORT is not set on both)", what,
            other);
        return fail(EADDRINUSE);
    }
    fdflags = fcntl(fd, F_GETFD);
    flflags = fcntl(fd, F_GETFL);
    if (fdflags < 0 || flflags < 0)
        return -1;
    got = fetch(req, reuse != 0, why, sizeof why);
    if (got < 0) {
        say(0, "bind %s: %s", what, why[0] ? why : strerror(-got));
        return fail(-got);
    }
    /* What came back must be the supervisor's socket for this address. */
    struct pl_sock gs;
    if (pl_sock_from_fd(got, true, &gs) < 0 || held_index(got) != (int)idx) {
        (void)close(got);
        say(0, "bind %s: the supervisor sent another socket", what);
        return fail(EADDRNOTAVAIL);
    }
    copy_options(fd, got, req);
    /* O_NONBLOCK belongs to the open file description, which every holder
     * shares: the server gets the mode it created its socket with. */
    int cur = fcntl(got, F_GETFL);
    if (cur >= 0 && (cur & O_NONBLOCK) != (flflags & O_NONBLOCK))
        (void)fcntl(got, F_SETFL, (cur & ~O_NONBLOCK) | (flflags & O_NONBLOCK));
    nregs = epoll_regs(fd, regs, 8);
    if (dup3(got, fd, (fdflags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
        int e = errno;
        (void)close(got);
        say(0, "bind %s: dup3: %s", what, strerror(e));
        return fail(e);
    }
    (void)close(got);
    /* The fd now refers to another file: its registrations (of the old
     * socket) went with it; make the same ones for the new socket. */
    for (int i = 0; i < nregs; i++) {
        struct epoll_event ev = regs[i].ev;
        ev.events &= ~(uint32_t)(EPOLLERR | EPOLLHUP);
        if (NEXT(epoll_ctl)(regs[i].epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
            say(1, "bind %s: could not add it back to epoll fd %d: %s", what, regs[i].epfd, strerror(errno));
        else
            say(2, "bind %s: re-registered in epoll fd %d", what, regs[i].epfd);
    }
    atomic_store(&G.h[idx].reuseport, reuse != 0);
    remember_fd((int)idx, fd);
    make_lame_timer();
    if (!atomic_exchange(&G.h[idx].bound, 1) && G.env.ready && !atomic_load(&G.ready_sent))
        atomic_store(&G.ready_pending, true);
    say(2, "bind %s: fd %d is the supervisor's socket", what, fd);
    return 0;
}

/* A bind of an address the supervisor does not hold: a real bind. One
 * with a port or path, later listened on, is worth a warning then. */
#define UNHELD 64
static struct {
    atomic_int fd; /* fd + 1 */
    uint64_t ino;
    bool reuseport;
} unheld[UNHELD];

static void note_unheld(int fd)
{
    struct stat st;
    int reuse = 0;
    socklen_t rl = sizeof reuse;

    if (fstat(fd, &st) < 0)
        return;
    (void)getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &reuse, &rl);
    for (int k = 0; k < UNHELD; k++) {
        int expect = 0;
        if (atomic_compare_exchange_strong(&unheld[k].fd, &expect, -1)) {
            unheld[k].ino = (uint64_t)st.st_ino;
            unheld[k].reuseport = reuse != 0;
            atomic_store(&unheld[k].fd, fd + 1);
            return;
        }
    }
}

static void warn_unheld(int fd)
{
    struct stat st;

    for (int k = 0; k < UNHELD; k++) {
        if (atomic_load(&unheld[k].fd) != fd + 1)
            continue;
        if (fstat(fd, &st) == 0 && (uint64_t)st.st_ino == unheld[k].ino) {
            struct pl_sock s;
            char what[160];
            if (pl_sock_from_fd(fd, true, &s) == 0) {
                (void)pl_sock_format(&s, what, sizeof what);
                say(1,
                    "listening on %s, which the supervisor does not hold: connections to it are refused "
                    "while a generation restarts (give the supervisor --listen %s)%s",
                    what, what,
                    unheld[k].reuseport ? "; and with SO_REUSEPORT each generation's socket joins the "
                                          "group, and connections queued on the old one are reset when it exits"
                                        : "");
            }
        }
        atomic_store(&unheld[k].fd, 0);
    }
}

EXPORT int bind(int fd, __CONST_SOCKADDR_ARG addr, socklen_t len)
{
    const struct sockaddr *sa = SOCKADDR_PTR(addr);
    struct pl_sock req;
    size_t idx = 0;
    int v, reason = 0, domain, r;
    char what[160];

    if (!G.loaded || !sa || len < sizeof(sa_family_t) || pl_sock_from_fd(fd, false, &req) < 0)
        return NEXT(bind)(fd, addr, len);
    domain = req.family;
    if (pl_sock_from_addr(&req, sa, len) < 0 || req.family != domain)
        return NEXT(bind)(fd, addr, len); /* the kernel's error */
    if (req.family == AF_UNIX && req.ukind == PL_UNIX_PATH)
        (void)pl_unix_file_id(AT_FDCWD, req.name, &req.dev, &req.ino);
    v = pl_match(G.env.held, G.env.nheld, &req, &idx, &reason);
    if (v == PL_NONE) {
        r = NEXT(bind)(fd, addr, len);
        if (r == 0 && G.active && (req.family == AF_UNIX ? req.ukind != PL_UNIX_UNNAMED : req.port != 0)) {
            int e = errno;
            note_unheld(fd);
            errno = e;
        }
        return r;
    }
    (void)pl_sock_format(&req, what, sizeof what);
    if (!G.active) {
        say(0,
            "bind %s: the supervisor holds this address, but the shim is not active in a program the server "
            "started (pid %ld is not the worker): give handoff run --preload-depth, or bind in the worker",
            what, (long)getpid());
        return fail(EADDRINUSE);
    }
    if (!same_netns()) {
        say(0,
            "bind %s: this process is in another network namespace than the supervisor, whose sockets "
            "cannot serve it",
            what);
        return fail(EADDRINUSE);
    }
    if (v == PL_CONFLICT) {
        char have[160];
        (void)pl_sock_format(&G.env.held[idx], have, sizeof have);
        say(0, "bind %s: conflicts with the supervisor's %s: %s", what, have, pl_reason_text(reason));
        return fail(EADDRINUSE);
    }
    return substitute(fd, &req, idx, what);
}

EXPORT int listen(int fd, int backlog)
{
    if (G.loaded && G.active) {
        int idx = held_index(fd);
        if (idx >= 0 && G.env.held[idx].type != SOCK_DGRAM) {
            /* Already listening, with the supervisor's backlog. */
            mark_fd(fd, true);
            return 0;
        }
        int r = NEXT(listen)(fd, backlog);
        if (r == 0) {
            int e = errno;
            warn_unheld(fd);
            errno = e;
        }
        return r;
    }
    return NEXT(listen)(fd, backlog);
}

EXPORT int shutdown(int fd, int how)
{
    if (marked_index(fd) >= 0)
        return 0;
    return NEXT(shutdown)(fd, how);
}

/* Is path (relative to dirfd) the supervisor's unix socket file? */
static bool held_file(int dirfd, const char *path)
{
    uint64_t dev, ino;

    if (!G.loaded || !G.active || !path)
        return false;
    bool any = false;
    for (size_t i = 0; i < G.env.nheld && !any; i++)
        any = G.env.held[i].family == AF_UNIX && G.env.held[i].ukind == PL_UNIX_PATH && G.env.held[i].ino;
    if (!any || pl_unix_file_id(dirfd, path, &dev, &ino) < 0)
        return false;
    for (size_t i = 0; i < G.env.nheld; i++) {
        const struct pl_sock *h = &G.env.held[i];
        if (h->family == AF_UNIX && h->ukind == PL_UNIX_PATH && h->ino == ino && h->dev == dev) {
            say(2, "unlink %s: kept (the supervisor's socket file)", path);
            return true;
        }
    }
    return false;
}

EXPORT int unlink(const char *path)
{
    if (held_file(AT_FDCWD, path))
        return 0;
    return NEXT(unlink)(path);
}

EXPORT int unlinkat(int dirfd, const char *path, int flags)
{
    if (!(flags & AT_REMOVEDIR) && held_file(dirfd, path))
        return 0;
    return NEXT(unlinkat)(dirfd, path, flags);
}

EXPORT int remove(const char *path)
{
    if (held_file(AT_FDCWD, path))
        return 0;
    return NEXT(remove)(path);
}

/* ---- the accept and poll families: readiness only ---- */

/* An fd the stop signal detached: see "the stop signal" below. */
static void nap_if_detached(int fd);
static atomic_int ndetached;

EXPORT int accept(int fd, __SOCKADDR_ARG addr, socklen_t *len)
{
    if (ready_pending())
        watching(fd);
    if (atomic_load_explicit(&ndetached, memory_order_relaxed))
        nap_if_detached(fd);
    return NEXT(accept)(fd, addr, len);
}

EXPORT int accept4(int fd, __SOCKADDR_ARG addr, socklen_t *len, int flags)
{
    if (ready_pending())
        watching(fd);
    if (atomic_load_explicit(&ndetached, memory_order_relaxed))
        nap_if_detached(fd);
    return NEXT(accept4)(fd, addr, len, flags);
}

/* glibc declares poll()'s array write-only (an access attribute), which
 * makes gcc think reading .events here reads uninitialised memory. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
static void watching_pollfds(const struct pollfd *fds, nfds_t n)
{
    for (nfds_t i = 0; i < n && ready_pending(); i++)
        if (fds[i].events & POLLIN)
            watching(fds[i].fd);
}

EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    if (ready_pending() && fds)
        watching_pollfds(fds, n);
    return NEXT(poll)(fds, n, timeout);
}

EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *t, const sigset_t *mask)
{
    if (ready_pending() && fds)
        watching_pollfds(fds, n);
    return NEXT(ppoll)(fds, n, t, mask);
}

/* The _FORTIFY_SOURCE entry points (servers built with it call these). */
int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen);
int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *t, const sigset_t *mask, size_t fdslen);

EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
    if (ready_pending() && fds && n <= fdslen / sizeof *fds)
        watching_pollfds(fds, n);
    return NEXT(__poll_chk)(fds, n, timeout, fdslen);
}

EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *t, const sigset_t *mask,
                       size_t fdslen)
{
    if (ready_pending() && fds && n <= fdslen / sizeof *fds)
        watching_pollfds(fds, n);
    return NEXT(__ppoll_chk)(fds, n, t, mask, fdslen);
}

static void watching_fdset(int n, const fd_set *r)
{
    for (int fd = 0; fd < n && fd < FD_SETSIZE && ready_pending(); fd++)
        if (FD_ISSET(fd, r))
            watching(fd);
}

EXPORT int select(int n, fd_set *r, fd_set *w, fd_set *e, struct timeval *t)
{
    if (ready_pending() && r)
        watching_fdset(n, r);
    return NEXT(select)(n, r, w, e, t);
}

EXPORT int pselect(int n, fd_set *r, fd_set *w, fd_set *e, const struct timespec *t, const sigset_t *mask)
{
    if (ready_pending() && r)
        watching_fdset(n, r);
    return NEXT(pselect)(n, r, w, e, t, mask);
}

EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    int r = NEXT(epoll_ctl)(epfd, op, fd, ev);
    if (r == 0 && ready_pending() && ev && (op == EPOLL_CTL_ADD || op == EPOLL_CTL_MOD) && (ev->events & EPOLLIN))
        watching(fd);
    return r;
}

/* ---- the stop signal: stop accepting ---- */

/* When the supervisor stops a generation (its --stop-signal), the new one
 * is ready and accepts from the same sockets. A server that goes on
 * accepting until it exits takes connections it then drops (Redis closes
 * what it accepted but did not read when it shuts down). So the shim
 * wraps the server's handler of that signal: before it runs, every
 * supervisor socket of the process is taken out of its epoll sets and
 * replaced by a listening socket nobody connects to (the same epoll
 * registrations, so the server's bookkeeping holds); what is queued stays
 * for the new generation. Only system calls here: this runs in a signal
 * handler. A server that blocks the signal and reads it from a signalfd
 * is not covered (its own drain then decides).
 *
 * That placeholder is always non-blocking (it is the shim's own open file
 * description; nobody else shares it), even where the server's socket was
 * blocking. A thread that waits in a blocking accept() when the signal
 * comes is interrupted, and then calls accept() again on the same fd:
 * Python retries at once after EINTR (PEP 475), and under SA_RESTART the
 * kernel restarts the call itself, re-reading the fd. On a blocking
 * placeholder that second accept() waited forever (nobody connects to
 * it), so the server never got back to its loop to see its own stop flag
 * and was killed at the drain timeout (socketserver's serve_forever() is
 * in accept() whenever another process took the connection its poll()
 * announced, as happens often on a shared listen queue). Now it gets
 * EAGAIN; through accept()/accept4() here a server that had the socket
 * blocking first waits DETACHED_NAP_MS (or until a signal), so that an
 * accept loop that keeps calling does not spin (F_GETFL shows O_NONBLOCK
 * on that fd from then on). A thread waiting in accept() that the signal
 * did not interrupt stays on the supervisor's socket until its next
 * connection, which it takes and serves. */

static struct sigaction user_act; /* the server's action for the stop signal */
static atomic_int user_act_set;   /* ... which the trampoline wraps */
static atomic_int detached;

/* The placeholders: fd and its socket's inode (the server may close the
 * fd and reuse the number), and whether the server's socket was blocking. */
#define DETACHED_MAX 256
#define DETACHED_NAP_MS 100
static struct {
    atomic_int fd; /* fd + 1, 0 = empty */
    _Atomic uint64_t ino;
    atomic_bool was_blocking;
} detached_fds[DETACHED_MAX];

static void note_detached(int fd, bool was_blocking)
{
    struct stat st;
    int k = atomic_load(&ndetached);

    if (k >= DETACHED_MAX || fstat(fd, &st) < 0)
        return;
    atomic_store(&detached_fds[k].ino, (uint64_t)st.st_ino);
    atomic_store(&detached_fds[k].was_blocking, was_blocking);
    atomic_store(&detached_fds[k].fd, fd + 1);
    atomic_store(&ndetached, k + 1); /* only detach_all() adds, once */
}

/* accept() on a placeholder the server had blocking: wait a little, as a
 * blocking accept() would, but not forever (the placeholder answers
 * EAGAIN then). */
static void nap_if_detached(int fd)
{
    int n = atomic_load(&ndetached);
    struct stat st;

    for (int k = 0; k < n; k++) {
        if (atomic_load(&detached_fds[k].fd) != fd + 1)
            continue;
        if (atomic_load(&detached_fds[k].was_blocking) && fstat(fd, &st) == 0 &&
            (uint64_t)st.st_ino == atomic_load(&detached_fds[k].ino)) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            (void)NEXT(poll)(&p, 1, DETACHED_NAP_MS);
        }
        return;
    }
}

static void detach_fd(int fd)
{
    struct epoll_reg regs[16];
    int n = epoll_regs(fd, regs, 16), fdfl = fcntl(fd, F_GETFD), fl = fcntl(fd, F_GETFL), d;

    for (int i = 0; i < n; i++)
        (void)NEXT(epoll_ctl)(regs[i].epfd, EPOLL_CTL_DEL, fd, NULL);
    /* A listening AF_UNIX socket with an abstract name of the kernel's
     * choosing (autobind: only the address family), which nobody connects
     * to. If it cannot be made, the fd stays out of the epoll sets, which
     * stops an event loop from accepting all the same. Non-blocking
     * whatever the server's socket was: see above. */
    d = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (d < 0)
        return;
    struct sockaddr_un any = {.sun_family = AF_UNIX};
    if (NEXT(bind)(d, CONST_SOCKADDR_ARG((struct sockaddr *)&any), sizeof(sa_family_t)) == 0 &&
        NEXT(listen)(d, 1) == 0 &&
        dup3(d, fd, (fdfl >= 0 && (fdfl & FD_CLOEXEC)) ? O_CLOEXEC : 0) == fd) {
        mark_fd(fd, false);
        note_detached(fd, fl >= 0 && !(fl & O_NONBLOCK));
        for (int i = 0; i < n; i++) {
            struct epoll_event ev = regs[i].ev;
            ev.events &= ~(uint32_t)(EPOLLERR | EPOLLHUP);
            (void)NEXT(epoll_ctl)(regs[i].epfd, EPOLL_CTL_ADD, fd, &ev);
        }
    }
    (void)close(d);
}

/* Returns how many fds were taken out. */
static int detach_all(void)
{
    char dents[2048];
    int dir, count = 0;
    long n;

    if (!G.active || atomic_exchange(&detached, 1))
        return 0;
    dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return 0;
    /* A supervisor socket on any fd (dup()s included). Entries are read
     * before anything is changed: dup3() does not add fds. */
    int fds[256], nfds = 0;
    while ((n = syscall(SYS_getdents64, dir, dents, sizeof dents)) > 0)
        for (long off = 0; off < n && nfds < 256;) {
            struct linux_dirent64 *d = (void *)(dents + off);
            int fd = fd_of_name(d->name);
            off += d->reclen;
            if (fd >= 0 && fd != dir && held_index(fd) >= 0)
                fds[nfds++] = fd;
        }
    (void)close(dir);
    for (int i = 0; i < nfds; i++, count++)
        detach_fd(fds[i]);
    if (count && G.env.log >= 2) {
        static const char msg[] = "handoff-preload: stop signal: no longer accepting on the supervisor's sockets\n";
        (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
    }
    return count;
}

/* The lame-duck pause: the server's handler runs this long after the
 * signal, so that what it accepted just before is served. A server that
 * stops at its next timer tick (Redis) closes what it accepted but did
 * not read yet; connections arriving meanwhile queue for the new
 * generation, which is ready. The timer (created outside the handler,
 * timer_settime() being async-signal-safe) delivers the same signal,
 * recognised by its si_code and value. */
#define LAME_DUCK_NSEC 100000000L
#define LAME_MAGIC 0x68616e64 /* "hand" */
static timer_t lame_timer;
static atomic_long lame_timer_pid; /* timers are not inherited by fork() */
static siginfo_t first_si;
static atomic_int stop_state;      /* 0 running, 1 lame duck, 2 handler called */

/* In a process that has a supervisor socket and a handler to defer. */
static void make_lame_timer(void)
{
    long me;
    struct sigevent sev;
    timer_t t;
    bool any = false;

    if (!G.active || G.env.stop_signal <= 0 || !atomic_load(&user_act_set))
        return;
    for (size_t i = 0; i < G.env.nheld && !any; i++)
        any = atomic_load(&G.h[i].bound) != 0;
    if (!any)
        return;
    me = (long)getpid();
    if (atomic_load(&lame_timer_pid) == me)
        return;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = G.env.stop_signal;
    sev.sigev_value.sival_int = LAME_MAGIC;
    if (timer_create(CLOCK_MONOTONIC, &sev, &t) == 0) {
        lame_timer = t;
        atomic_store(&lame_timer_pid, me);
    }
}

static void call_user(int sig, siginfo_t *si, void *uc)
{
    struct sigaction a = user_act;

    if ((unsigned)a.sa_flags & SA_RESETHAND)
        atomic_store(&user_act_set, 0);
    if (a.sa_flags & SA_SIGINFO)
        a.sa_sigaction(sig, si, uc);
    else if (a.sa_handler != SIG_DFL && a.sa_handler != SIG_IGN)
        a.sa_handler(sig);
}

static void trampoline(int sig, siginfo_t *si, void *uc)
{
    int e = errno, n;

    if (si && si->si_code == SI_TIMER && si->si_value.sival_int == LAME_MAGIC) {
        int one = 1;
        if (atomic_compare_exchange_strong(&stop_state, &one, 2)) {
            errno = e;
            call_user(sig, &first_si, uc);
        }
        return;
    }
    n = detach_all();
    if (n > 0 && atomic_load(&stop_state) == 0 && !((unsigned)user_act.sa_flags & SA_RESETHAND) &&
        atomic_load(&lame_timer_pid) == (long)getpid()) {
        struct itimerspec its = {{0, 0}, {0, LAME_DUCK_NSEC}};
        if (si)
            first_si = *si;
        atomic_store(&stop_state, 1);
        if (timer_settime(lame_timer, 0, &its, NULL) == 0) {
            errno = e;
            return;
        }
    }
    /* No pause (nothing to stop, no timer in this process, a second
     * signal): the handler now. */
    atomic_store(&stop_state, 2);
    errno = e;
    call_user(sig, si, uc);
}

static bool wraps(int sig)
{
    return G.active && G.env.stop_signal > 0 && sig == G.env.stop_signal;
}

/* The server's handler for the stop signal, wrapped in the trampoline. */
static int install_wrapped(int sig, const struct sigaction *act)
{
    struct sigaction t = *act;
    int r;

    user_act = *act;
    atomic_store(&user_act_set, 1);
    t.sa_flags |= SA_SIGINFO;
    t.sa_sigaction = trampoline;
    r = NEXT(sigaction)(sig, &t, NULL);
    /* cppcheck takes NEXT(sigaction) for this file's sigaction(). */
    /* cppcheck-suppress knownConditionTrueFalse */
    if (r == 0)
        make_lame_timer();
    return r;
}

EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    struct sigaction prev;
    int r;

    if (!wraps(sig))
        return NEXT(sigaction)(sig, act, old);
    /* What the server believes is installed: its own handler. */
    r = NEXT(sigaction)(sig, NULL, &prev);
    if (r < 0)
        return r;
    if (atomic_load(&user_act_set) && (prev.sa_flags & SA_SIGINFO) && prev.sa_sigaction == trampoline)
        prev = user_act;
    if (act && (act->sa_handler == SIG_DFL || act->sa_handler == SIG_IGN)) {
        atomic_store(&user_act_set, 0);
        r = NEXT(sigaction)(sig, act, NULL);
    } else if (act) {
        r = install_wrapped(sig, act);
    }
    if (r < 0)
        return r;
    if (old)
        *old = prev;
    return 0;
}

EXPORT sighandler_t signal(int sig, sighandler_t h)
{
    struct sigaction sa, old;

    if (!wraps(sig))
        return NEXT(signal)(sig, h);
    /* glibc's signal(): BSD semantics. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(sig, &sa, &old) < 0)
        return SIG_ERR;
    return old.sa_handler; /* in glibc, sa_sigaction shares its storage */
}

/* ---- start-up ---- */

/* Removes the shim from this process's environment, so that nothing it
 * starts loads it: only the shim's LD_PRELOAD entries go (jemalloc, a
 * sanitizer runtime, ... stay), edited in place; HANDOFF_PRELOAD goes. */
static void leave_environment(void)
{
    char *lp = getenv("LD_PRELOAD");
    if (lp && pl_preload_strip(lp, G.env.lib) == 0)
        (void)unsetenv("LD_PRELOAD");
    (void)unsetenv(PL_ENV);
}

/* Supervisor sockets this process already has (inherited over an exec of
 * itself): known to shutdown(), listen() and readiness too. */
static void adopt_open_fds(void)
{
    char dents[2048];
    int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    long n;

    if (dir < 0)
        return;
    while ((n = syscall(SYS_getdents64, dir, dents, sizeof dents)) > 0) {
        for (long off = 0; off < n;) {
            const struct linux_dirent64 *d = (const void *)(dents + off);
            int fd = fd_of_name(d->name), idx;
            off += d->reclen;
            if (fd >= 0 && fd != dir && (idx = held_index(fd)) >= 0) {
                remember_fd(idx, fd);
                atomic_store(&G.h[idx].bound, 1);
                if (G.env.ready && !atomic_load(&G.ready_sent))
                    atomic_store(&G.ready_pending, true);
            }
        }
    }
    (void)close(dir);
}

__attribute__((constructor)) static void pl_init(void)
{
    const char *v = getenv(PL_ENV);
    char err[128];
    int fd;
    ssize_t n;

    if (!v)
        return; /* not started by handoff run --preload: stay out of the way */
    fd = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        n = read(fd, G.comm, sizeof G.comm - 1);
        (void)close(fd);
        if (n > 0 && G.comm[n - 1] == '\n')
            G.comm[n - 1] = '\0';
    }
    if (pl_env_parse(v, &G.env, err, sizeof err) < 0) {
        say(0, "%s is not valid (%s): the shim stays out of the way", PL_ENV, err);
        return;
    }
    G.loaded = true;
    if (getauxval(AT_SECURE)) {
        say(0, "secure-execution mode (set-user-ID, set-group-ID or file capabilities): the shim stays out of "
               "the way");
        G.loaded = false;
        leave_environment();
        return;
    }
    if ((long)getpid() == G.env.pid) {
        G.active = true; /* the worker, or what it exec'd */
    } else if (G.env.depth > 0) {
        /* A program the server started, and --preload-depth reaches it:
         * active here, one level less below. */
        char *buf = malloc(16384 + PL_MAX_HELD * 300);
        G.active = true;
        G.env.depth--;
        if (buf && pl_env_format(&G.env, buf, 16384 + PL_MAX_HELD * 300) > 0) {
            pl_put_pid(buf + strlen(buf) - PL_PID_DIGITS, (long)getpid());
            G.env.pid = (long)getpid();
            (void)setenv(PL_ENV, buf, 1);
        }
        free(buf);
    } else {
        leave_environment();
    }
    if (G.active) {
        adopt_open_fds();
        say(2, "active (%zu supervisor socket%s)", G.env.nheld, G.env.nheld == 1 ? "" : "s");
    }
}

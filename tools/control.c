/*
 * control.c - the control socket of `handoff run`, and its client.
 *
 * A filesystem AF_UNIX stream socket, mode 0600. Each connection sends one
 * command line ("reload", "status" or "stop") and reads the answer up to
 * EOF. The last line of every answer is "OK [message]", "ERR message" or
 * "DENIED message"; lines before it are data (the status text).
 *
 * Access: only root and the supervisor's own uid, checked on every
 * connection with SO_PEERCRED (the 0600 mode already stops others at
 * connect(); the check holds even if someone loosens the mode or passes
 * the socket on).
 *
 * Out of file descriptors (RLIMIT_NOFILE): a spare fd (/dev/null) is kept
 * open and closed to accept one connection, so that `handoff reload` and
 * `handoff status` still get an answer (typically why the reload failed).
 * When even that is used, the listening socket is taken out of epoll for
 * a moment instead of waking the loop again and again: clients wait in
 * its backlog.
 */
#include "tool.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_CONNS 32
#define IDLE_USEC (5 * HANDOFF_USEC_PER_SEC)
#define ACCEPT_PAUSE_USEC (250 * HANDOFF_USEC_PER_MSEC)

struct conn {
    int fd;
    char in[128];
    size_t inlen;
    uint64_t deadline;   /* must send its command by then */
    uint64_t wait_seq;   /* waiting for this reload; 0 = not waiting */
};

struct control {
    int fd;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int epfd;
    uint64_t tag_listen, tag_conn;
    int spare;             /* /dev/null, given up to accept at the fd limit */
    uint64_t paused_until; /* accept paused (fd limit) until then; 0 = not */
    bool pause_logged;     /* until an accept succeeds again */
    struct conn conns[MAX_CONNS];
};

static int open_spare(void)
{
    return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* After closing a connection: the fd just freed makes room for the spare. */
static void refill_spare(struct control *c)
{
    if (c->spare < 0)
        c->spare = open_spare();
}

static int unix_addr(const char *path, struct sockaddr_un *sun, socklen_t *len)
{
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof sun->sun_path)
        return -ENAMETOOLONG;
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, n);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

int control_open(const char *path, struct control **out, char *err, size_t errlen)
{
    struct sockaddr_un sun;
    socklen_t len;
    struct control *c;
    mode_t old;
    int fd, r;

    if ((r = unix_addr(path, &sun, &len)) < 0) {
        (void)snprintf(err, errlen, "control socket path \"%s\" is too long", path);
        return r;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        r = -errno;
        (void)snprintf(err, errlen, "control socket %s: %s", path, strerror(-r));
        return r;
    }
    /* Bind with a tight umask so the socket never exists with a looser
     * mode, not even for an instant. */
    old = umask(0177);
    r = bind(fd, (struct sockaddr *)&sun, len);
    if (r < 0 && errno == EADDRINUSE) {
        /* A socket nobody accepts on is stale (its supervisor died). */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct stat st;
        if (probe >= 0 && connect(probe, (struct sockaddr *)&sun, len) < 0 &&
            errno == ECONNREFUSED && lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
            (void)unlink(path);
            r = bind(fd, (struct sockaddr *)&sun, len);
        } else {
            errno = EADDRINUSE;
        }
        if (probe >= 0)
            (void)close(probe);
    }
    r = r < 0 ? -errno : 0;
    (void)umask(old);
    if (r == 0 && chmod(path, 0600) < 0)
        r = -errno;
    if (r == 0 && listen(fd, 16) < 0)
        r = -errno;
    if (r < 0) {
        (void)snprintf(err, errlen, "control socket %s: %s%s", path, strerror(-r),
                       r == -EADDRINUSE ? " (another supervisor is running with that name?)" : "");
        (void)close(fd);
        return r;
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        (void)close(fd);
        (void)unlink(path);
        (void)snprintf(err, errlen, "control socket %s: out of memory", path);
        return -ENOMEM;
    }
    c->fd = fd;
    c->epfd = -1;
    c->spare = open_spare(); /* none (-1) is tolerated: see on_accept() */
    (void)snprintf(c->path, sizeof c->path, "%s", path);
    for (int i = 0; i < MAX_CONNS; i++)
        c->conns[i].fd = -1;
    *out = c;
    return 0;
}

static void conn_close(struct control *c, struct conn *k)
{
    if (k->fd < 0)
        return;
    if (c->epfd >= 0)
        (void)epoll_ctl(c->epfd, EPOLL_CTL_DEL, k->fd, NULL);
    (void)close(k->fd);
    k->fd = -1;
    k->inlen = 0;
    k->wait_seq = 0;
    refill_spare(c);
}

void control_close(struct control *c)
{
    if (!c)
        return;
    for (int i = 0; i < MAX_CONNS; i++) {
        if (c->conns[i].fd >= 0 && c->conns[i].wait_seq)
            (void)send(c->conns[i].fd, "ERR the supervisor is exiting\n", 30, MSG_NOSIGNAL | MSG_DONTWAIT);
        conn_close(c, &c->conns[i]);
    }
    (void)close(c->fd);
    (void)unlink(c->path);
    if (c->spare >= 0)
        (void)close(c->spare);
    free(c);
}

int control_listen_fd(const struct control *c)
{
    return c->fd;
}

void control_set_epoll(struct control *c, int epfd, uint64_t tag_listen, uint64_t tag_conn)
{
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = tag_listen | (uint32_t)c->fd};

    c->epfd = epfd;
    c->tag_listen = tag_listen;
    c->tag_conn = tag_conn;
    (void)epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &e);
}

/* Answers are small (the status is a few KB at most) and the socket
 * buffer is larger: one non-blocking send, and the connection is closed
 * right after. A client that stopped reading loses its answer. */
static void reply(struct conn *k, const char *text)
{
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t n = send(k->fd, text + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n <= 0)
            return;
        off += (size_t)n;
    }
}

static void run_command(struct control *c, struct conn *k, const char *cmd)
{
    if (strcmp(cmd, "status") == 0) {
        char *buf = malloc(65536);
        if (!buf) {
            reply(k, "ERR out of memory\n");
        } else {
            size_t n = sup_status(buf, 65536 - 8);
            (void)snprintf(buf + n, 65536 - n, "OK\n");
            reply(k, buf);
            free(buf);
        }
    } else if (strcmp(cmd, "reload") == 0) {
        const char *why = NULL;
        uint64_t seq = sup_request_reload(&why);
        if (seq) {
            k->wait_seq = seq;
            k->deadline = UINT64_MAX;
            return; /* answered by control_reload_done() */
        }
        char line[256];
        (void)snprintf(line, sizeof line, "ERR %s\n", why ? why : "cannot reload");
        reply(k, line);
    } else if (strcmp(cmd, "stop") == 0) {
        reply(k, "OK stopping\n");
        sup_request_stop();
    } else {
        char line[200];
        (void)snprintf(line, sizeof line, "ERR unknown command \"%.64s\"\n", cmd);
        reply(k, line);
    }
    conn_close(c, k);
}

/* Closing a unix socket with unread data makes the peer's recv() fail
 * with ECONNRESET instead of returning our answer: read what is there. */
static void drain_close(int fd)
{
    char tmp[256];
    (void)shutdown(fd, SHUT_WR);
    for (int i = 0; i < 4 && recv(fd, tmp, sizeof tmp, MSG_DONTWAIT) > 0; i++) {
    }
    (void)close(fd);
}

/* accept4() failed with EMFILE or ENFILE: accept with the spare fd, or
 * pause accepting (the listening socket stays readable, and a level-
 * triggered epoll would wake us again at once, for ever). */
static int accept_at_fd_limit(struct control *c, int err)
{
    if (c->spare >= 0) {
        (void)close(c->spare);
        c->spare = -1;
        int fd = accept4(c->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
            log_warn("control: %s: accepted a connection with the spare fd", strerror(err));
            return fd;
        }
        c->spare = open_spare();
    }
    if (!c->paused_until) {
        struct epoll_event e = {.events = 0, .data.u64 = c->tag_listen | (uint32_t)c->fd};
        (void)epoll_ctl(c->epfd, EPOLL_CTL_MOD, c->fd, &e);
    }
    if (!c->pause_logged)
        log_warn("control: cannot accept: %s; clients wait (retrying every %d ms)", strerror(err),
                 (int)(ACCEPT_PAUSE_USEC / 1000));
    c->pause_logged = true;
    c->paused_until = handoff_now_usec() + ACCEPT_PAUSE_USEC;
    return -1;
}

static void resume_accept(struct control *c)
{
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = c->tag_listen | (uint32_t)c->fd};

    c->paused_until = 0;
    (void)epoll_ctl(c->epfd, EPOLL_CTL_MOD, c->fd, &e);
}

static void on_accept(struct control *c)
{
    for (int tries = 0; tries < MAX_CONNS; tries++) {
        struct ucred cred;
        socklen_t clen = sizeof cred;
        struct conn *k = NULL;
        int fd = accept4(c->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

        if (fd < 0 && (errno == EMFILE || errno == ENFILE))
            fd = accept_at_fd_limit(c, errno);
        if (fd < 0)
            return;
        c->pause_logged = false;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 ||
            (cred.uid != 0 && cred.uid != geteuid())) {
            char line[160];
            log_warn("control: refused a connection from uid %ld (pid %ld): only root and uid %ld may control this supervisor",
                     (long)cred.uid, (long)cred.pid, (long)geteuid());
            (void)snprintf(line, sizeof line, "DENIED permission denied: uid %ld is neither root nor uid %ld\n",
                           (long)cred.uid, (long)geteuid());
            (void)send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
            drain_close(fd);
            refill_spare(c);
            continue;
        }
        for (int i = 0; i < MAX_CONNS && !k; i++)
            if (c->conns[i].fd < 0)
                k = &c->conns[i];
        if (!k) {
            (void)send(fd, "ERR too many control connections\n", 33, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)close(fd);
            refill_spare(c);
            continue;
        }
        k->fd = fd;
        k->inlen = 0;
        k->wait_seq = 0;
        k->deadline = handoff_now_usec() + IDLE_USEC;
        struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = c->tag_conn | (uint32_t)fd};
        if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &e) < 0)
            conn_close(c, k);
    }
}

static void on_conn(struct control *c, struct conn *k)
{
    ssize_t n;

    if (k->wait_seq) {
        /* A waiting client only ever sends EOF (it gave up). */
        char tmp[64];
        n = recv(k->fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN))
            conn_close(c, k);
        return;
    }
    n = recv(k->fd, k->in + k->inlen, sizeof k->in - 1 - k->inlen, MSG_DONTWAIT);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0) {
        conn_close(c, k);
        return;
    }
    k->inlen += (size_t)n;
    k->in[k->inlen] = '\0';
    char *nl = strchr(k->in, '\n');
    if (!nl) {
        if (k->inlen == sizeof k->in - 1) {
            reply(k, "ERR command too long\n");
            conn_close(c, k);
        }
        return;
    }
    *nl = '\0';
    if (nl > k->in && nl[-1] == '\r')
        nl[-1] = '\0';
    run_command(c, k, k->in);
}

void control_on_event(struct control *c, int fd)
{
    if (fd == c->fd) {
        on_accept(c);
        return;
    }
    for (int i = 0; i < MAX_CONNS; i++)
        if (c->conns[i].fd == fd) {
            on_conn(c, &c->conns[i]);
            return;
        }
}

uint64_t control_deadline(const struct control *c)
{
    uint64_t d = c && c->paused_until ? c->paused_until : UINT64_MAX;
    for (int i = 0; c && i < MAX_CONNS; i++)
        if (c->conns[i].fd >= 0 && c->conns[i].deadline < d)
            d = c->conns[i].deadline;
    return d;
}

void control_on_timer(struct control *c, uint64_t now)
{
    if (c && c->paused_until && now >= c->paused_until)
        resume_accept(c);
    for (int i = 0; c && i < MAX_CONNS; i++) {
        struct conn *k = &c->conns[i];
        if (k->fd >= 0 && k->deadline <= now) {
            reply(k, "ERR no command received\n");
            conn_close(c, k);
        }
    }
}

void control_reload_done(struct control *c, uint64_t seq, bool ok, const char *msg)
{
    char line[600];

    (void)snprintf(line, sizeof line, "%s %s\n", ok ? "OK" : "ERR", msg);
    for (int i = 0; c && i < MAX_CONNS; i++) {
        struct conn *k = &c->conns[i];
        if (k->fd >= 0 && k->wait_seq == seq) {
            reply(k, line);
            conn_close(c, k);
        }
    }
}

/* ---- client ---- */

int control_client(const char *path, const char *cmd, uint64_t timeout)
{
    struct sockaddr_un sun;
    socklen_t len;
    char buf[65536] = "", line[160];
    size_t got = 0;
    uint64_t deadline = timeout ? handoff_now_usec() + timeout : UINT64_MAX;
    int fd, send_err = 0;

    if (unix_addr(path, &sun, &len) < 0) {
        (void)fprintf(stderr, "handoff: control socket path \"%s\" is too long\n", path);
        return EXIT_USAGE;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, len) < 0) {
        int e = errno;
        (void)fprintf(stderr, "handoff: cannot connect to %s: %s%s\n", path, strerror(e),
                      e == ENOENT || e == ECONNREFUSED ? " (is `handoff run` running? see --control/--name)" : "");
        if (fd >= 0)
            (void)close(fd);
        return e == EACCES || e == EPERM ? EXIT_REFUSED : EXIT_NOCONNECT;
    }
    (void)snprintf(line, sizeof line, "%s\n", cmd);
    /* A refused client may find the connection already closed; the
     * verdict waiting in the receive buffer is read below all the same. */
    if (send(fd, line, strlen(line), MSG_NOSIGNAL) < 0)
        send_err = errno;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ms = -1;
        if (deadline != UINT64_MAX) {
            uint64_t now = handoff_now_usec();
            if (now >= deadline) {
                (void)fprintf(stderr, "handoff: no answer within %.1f s (a reload goes on regardless)\n",
                              (double)timeout / 1e6);
                (void)close(fd);
                return EXIT_TIMEOUT;
            }
            ms = (int)((deadline - now + 999) / 1000);
        }
        int r = poll(&p, 1, ms);
        if (r < 0 && errno != EINTR)
            break;
        if (r <= 0)
            continue;
        ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (n <= 0 || got + (size_t)n >= sizeof buf - 1) {
            if (n > 0)
                got += (size_t)n;
            break;
        }
        got += (size_t)n;
    }
    (void)close(fd);
    buf[got] = '\0';
    /* The last line is the verdict; everything before it is data. */
    while (got > 0 && buf[got - 1] == '\n')
        buf[--got] = '\0';
    char *last = strrchr(buf, '\n');
    last = last ? last + 1 : buf;
    if (last > buf)
        (void)fwrite(buf, 1, (size_t)(last - buf), stdout);
    if (strncmp(last, "OK", 2) == 0) {
        if (last[2] == ' ' && last[3])
            (void)printf("%s\n", last + 3);
        return EXIT_OK;
    }
    if (strncmp(last, "DENIED ", 7) == 0) {
        (void)fprintf(stderr, "handoff: %s: %s\n", cmd, last + 7);
        return EXIT_REFUSED;
    }
    if (strncmp(last, "ERR ", 4) == 0) {
        (void)fprintf(stderr, "handoff: %s failed: %s\n", cmd, last + 4);
        return EXIT_FAILED;
    }
    if (send_err) {
        (void)fprintf(stderr, "handoff: %s: %s\n", path, strerror(send_err));
        return EXIT_NOCONNECT;
    }
    (void)fprintf(stderr, "handoff: %s: the supervisor closed the connection without an answer\n", cmd);
    return EXIT_FAILED;
}

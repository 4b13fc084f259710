/*
 * control.c - the control socket of `handoff run`, server side (the
 * client is client.c).
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

#include "shared/sockaddr.h"

#include <errno.h>
#include <fcntl.h>
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
    uint64_t deadline;   /* must send its command (or read more of its answer) by then */
    uint64_t wait_seq;   /* waiting for this reload; 0 = not waiting */
    pid_t pid;           /* the client, from SO_PEERCRED */
    uid_t uid;
    char *out;           /* the part of the answer the socket did not take yet */
    size_t outlen, outoff;
    bool closing;        /* answered: closed once out is sent */
};

struct control {
    int fd;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int epfd;
    uint64_t tag;          /* epoll data: tag | fd */
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

int control_open(const char *path, struct control **out, char *err, size_t errlen)
{
    struct sockaddr_un sun;
    socklen_t len;
    struct control *c;
    mode_t old;
    int fd, r;

    if ((r = unix_sockaddr(path, &sun, &len)) < 0) {
        (void)snprintf(err, errlen, "control socket path \"%s\" is too long", path);
        return r;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        r = -errno;
        (void)snprintf(err, errlen, "control socket %s: %s", path, strerror(-r));
        return r;
    }
    /* The socket file gets its mode at bind() from the umask: 0600, never
     * looser, not even for an instant. There is no chmod() by path after
     * it: in a directory others can write, the path may be a symlink by
     * then, and chmod() would follow it. (The supervisor runs no threads,
     * so the process-wide umask is safe to switch.) */
    old = umask(0177);
    r = bind(fd, (struct sockaddr *)&sun, len);
    if (r < 0 && errno == EADDRINUSE) {
        /* A socket nobody accepts on is stale (its supervisor died). The
         * probe does not block: a full backlog is a live socket. */
        if (handoff__unix_unlink_stale(path) == 0) {
            r = bind(fd, (struct sockaddr *)&sun, len);
        } else {
            errno = EADDRINUSE;
        }
    }
    r = r < 0 ? -errno : 0;
    (void)umask(old);
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
    free(k->out);
    k->out = NULL;
    k->outlen = k->outoff = 0;
    k->closing = false;
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

void control_set_epoll(struct control *c, int epfd, uint64_t tag)
{
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = tag | (uint32_t)c->fd};

    c->epfd = epfd;
    c->tag = tag;
    (void)epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &e);
}

static void conn_events(struct control *c, struct conn *k, uint32_t events)
{
    struct epoll_event e = {.events = events, .data.u64 = c->tag | (uint32_t)k->fd};
    if (c->epfd >= 0)
        (void)epoll_ctl(c->epfd, EPOLL_CTL_MOD, k->fd, &e);
}

/* Sends what is left of the answer. 1 all sent, 0 some left (wait for
 * EPOLLOUT), -1 the client is gone. */
static int conn_flush(struct conn *k)
{
    while (k->outoff < k->outlen) {
        ssize_t n = send(k->fd, k->out + k->outoff, k->outlen - k->outoff, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        if (n <= 0)
            return -1;
        k->outoff += (size_t)n;
        k->deadline = handoff_now_usec() + IDLE_USEC; /* progress */
    }
    return 1;
}

/* Queues text (len bytes) on the connection and sends what the socket
 * takes now. An answer can be larger than the socket buffer (the status of
 * hundreds of workers): the rest goes out on EPOLLOUT, and a client that
 * reads nothing for IDLE_USEC loses it. */
static void reply_len(struct control *c, struct conn *k, const char *text, size_t len)
{
    char *n;

    if (k->closing || k->fd < 0)
        return;
    n = realloc(k->out, k->outlen + len);
    if (!n) {
        log_warn("control: out of memory for an answer; connection closed");
        conn_close(c, k);
        return;
    }
    k->out = n;
    memcpy(k->out + k->outlen, text, len);
    k->outlen += len;
    k->deadline = handoff_now_usec() + IDLE_USEC;
    if (conn_flush(k) == 0)
        conn_events(c, k, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
}

static void reply(struct control *c, struct conn *k, const char *text)
{
    reply_len(c, k, text, strlen(text));
}

/* The answer is complete: the connection closes once it is sent. */
static void conn_done(struct control *c, struct conn *k)
{
    if (k->fd < 0)
        return;
    k->wait_seq = 0;
    if (k->outoff >= k->outlen) {
        conn_close(c, k);
        return;
    }
    k->closing = true;
}

/* A complete command line: the caller carries out what it knows (1,
 * *req filled); anything else is answered here. */
static int run_command(struct control *c, struct conn *k, const char *cmd, struct control_req *req)
{
    /* Who asked for what: reloads and stops are an audit trail; status is
     * polled by monitoring, so only with -v. */
    tool_log(strcmp(cmd, "status") == 0 ? LOG_DEBUG_ : LOG_INFO_, "control: %.16s%s from pid %ld (uid %ld)", cmd,
             strlen(cmd) > 16 ? "..." : "", (long)k->pid, (long)k->uid);
    if (strcmp(cmd, "status") == 0 || strcmp(cmd, "reload") == 0 || strcmp(cmd, "stop") == 0) {
        req->conn = (int)(k - c->conns);
        (void)snprintf(req->cmd, sizeof req->cmd, "%s", cmd);
        req->pid = k->pid;
        req->uid = k->uid;
        k->deadline = UINT64_MAX; /* the caller answers */
        return 1;
    }
    struct sbuf b = {0};
    sbuf_printf(&b, "ERR unknown command \"");
    sbuf_escaped(&b, cmd);
    sbuf_printf(&b, "\"\n");
    reply(c, k, b.oom ? "ERR unknown command\n" : b.p);
    sbuf_free(&b);
    conn_done(c, k);
    return 0;
}

void control_answer(struct control *c, int conn, const char *text, size_t len)
{
    struct conn *k = &c->conns[conn];

    reply_len(c, k, text, len);
    conn_done(c, k);
}

void control_wait(struct control *c, int conn, uint64_t seq)
{
    struct conn *k = &c->conns[conn];

    k->wait_seq = seq;
    k->deadline = UINT64_MAX;
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
        struct epoll_event e = {.events = 0, .data.u64 = c->tag | (uint32_t)c->fd};
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
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = c->tag | (uint32_t)c->fd};

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
        k->pid = cred.pid;
        k->uid = cred.uid;
        k->inlen = 0;
        k->wait_seq = 0;
        k->deadline = handoff_now_usec() + IDLE_USEC;
        struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP, .data.u64 = c->tag | (uint32_t)fd};
        if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &e) < 0)
            conn_close(c, k);
    }
}

static int on_conn(struct control *c, struct conn *k, struct control_req *req)
{
    ssize_t n;

    if (k->closing) {
        /* Answered, and the rest of the answer waits for EPOLLOUT: send
         * it; input is discarded. At EOF only EPOLLOUT is watched: a
         * level-triggered EOF would wake the loop again and again. */
        char tmp[256];
        if (conn_flush(k) != 0) {
            conn_close(c, k);
            return 0;
        }
        n = recv(k->fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (n == 0)
            conn_events(c, k, EPOLLOUT);
        return 0;
    }
    if (k->wait_seq) {
        /* A waiting client only ever sends EOF (it gave up). */
        char tmp[64];
        n = recv(k->fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN))
            conn_close(c, k);
        return 0;
    }
    n = recv(k->fd, k->in + k->inlen, sizeof k->in - 1 - k->inlen, MSG_DONTWAIT);
    if (n < 0 && errno == EAGAIN)
        return 0;
    if (n <= 0) {
        conn_close(c, k);
        return 0;
    }
    k->inlen += (size_t)n;
    k->in[k->inlen] = '\0';
    char *nl = strchr(k->in, '\n');
    if (!nl) {
        if (k->inlen == sizeof k->in - 1) {
            reply(c, k, "ERR command too long\n");
            conn_done(c, k);
        }
        return 0;
    }
    *nl = '\0';
    if (nl > k->in && nl[-1] == '\r')
        nl[-1] = '\0';
    return run_command(c, k, k->in, req);
}

int control_on_event(struct control *c, int fd, struct control_req *req)
{
    if (fd == c->fd) {
        on_accept(c);
        return 0;
    }
    for (int i = 0; i < MAX_CONNS; i++)
        if (c->conns[i].fd == fd)
            return on_conn(c, &c->conns[i], req);
    return 0;
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
            if (k->outoff < k->outlen) {
                conn_close(c, k); /* it stopped reading its answer */
                continue;
            }
            reply(c, k, "ERR no command received\n");
            conn_done(c, k);
        }
    }
}

void control_reload_done(struct control *c, uint64_t seq, bool ok, const char *msg)
{
    struct sbuf b = {0};
    bool waiting = false;

    for (int i = 0; c && i < MAX_CONNS; i++)
        waiting |= c->conns[i].fd >= 0 && c->conns[i].wait_seq == seq;
    if (!waiting)
        return;
    /* One line, whatever the message holds (it may quote a path). */
    sbuf_printf(&b, "%s ", ok ? "OK" : "ERR");
    sbuf_text(&b, msg);
    sbuf_printf(&b, "\n");
    if (b.oom)
        log_warn("control: out of memory for the answer to reload %llu", (unsigned long long)seq);
    for (int i = 0; c && i < MAX_CONNS; i++) {
        struct conn *k = &c->conns[i];
        if (k->fd >= 0 && k->wait_seq == seq) {
            reply(c, k, b.oom ? (ok ? "OK\n" : "ERR (out of memory for the message)\n") : b.p);
            conn_done(c, k);
        }
    }
    sbuf_free(&b);
}

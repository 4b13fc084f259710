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
#include <sys/time.h>
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
    /* The socket file gets its mode at bind() from the umask: 0600, never
     * looser, not even for an instant. There is no chmod() by path after
     * it: in a directory others can write, the path may be a symlink by
     * then, and chmod() would follow it. (The supervisor runs no threads,
     * so the process-wide umask is safe to switch.) */
    old = umask(0177);
    r = bind(fd, (struct sockaddr *)&sun, len);
    if (r < 0 && errno == EADDRINUSE) {
        /* A socket nobody accepts on is stale (its supervisor died). The
         * probe does not block: a full backlog (EAGAIN) is a live socket. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
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

static void conn_events(struct control *c, struct conn *k, uint32_t events)
{
    struct epoll_event e = {.events = events, .data.u64 = c->tag_conn | (uint32_t)k->fd};
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

static void run_command(struct control *c, struct conn *k, const char *cmd)
{
    /* Who asked for what: reloads and stops are an audit trail; status is
     * polled by monitoring, so only with -v. */
    tool_log(strcmp(cmd, "status") == 0 ? LOG_DEBUG_ : LOG_INFO_, "control: %.16s%s from pid %ld (uid %ld)", cmd,
             strlen(cmd) > 16 ? "..." : "", (long)k->pid, (long)k->uid);
    if (strcmp(cmd, "status") == 0) {
        struct sbuf b = {0};
        sup_status(&b);
        sbuf_printf(&b, "OK\n");
        if (b.oom) {
            log_warn("control: out of memory for the status");
            reply(c, k, "ERR out of memory\n");
        }
        else
            reply_len(c, k, b.p, b.len);
        sbuf_free(&b);
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
        reply(c, k, line);
    } else if (strcmp(cmd, "stop") == 0) {
        reply(c, k, "OK stopping\n");
        sup_request_stop();
    } else {
        struct sbuf b = {0};
        sbuf_printf(&b, "ERR unknown command \"");
        sbuf_escaped(&b, cmd);
        sbuf_printf(&b, "\"\n");
        reply(c, k, b.oom ? "ERR unknown command\n" : b.p);
        sbuf_free(&b);
    }
    conn_done(c, k);
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
        k->pid = cred.pid;
        k->uid = cred.uid;
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

    if (k->closing) {
        /* Answered, and the rest of the answer waits for EPOLLOUT: send
         * it; input is discarded. At EOF only EPOLLOUT is watched: a
         * level-triggered EOF would wake the loop again and again. */
        char tmp[256];
        if (conn_flush(k) != 0) {
            conn_close(c, k);
            return;
        }
        n = recv(k->fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (n == 0)
            conn_events(c, k, EPOLLOUT);
        return;
    }
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
            reply(c, k, "ERR command too long\n");
            conn_done(c, k);
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

/* ---- client ---- */

/* Client side: the answer can be large (the status of hundreds of
 * workers), so it is kept whole in memory, up to MAX_ANSWER, and only
 * then split into data and the verdict (its last line). */
#define MAX_ANSWER (64u << 20)

/* Writes text to f with any control byte left (an older supervisor does
 * not escape what workers report) shown as '?'. */
static void print_clean(FILE *f, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        (void)putc((ch < 0x20 && ch != '\n' && ch != '\t') || ch == 0x7f ? '?' : ch, f);
    }
}

/* Prints the data lines of an answer and returns the exit code its last
 * line (the verdict) stands for. */
static int client_verdict(char *buf, size_t got, const char *cmd, const char *path, int send_err)
{
    while (got > 0 && buf[got - 1] == '\n')
        buf[--got] = '\0';
    char *last = memrchr(buf, '\n', got);
    last = last ? last + 1 : buf;
    if (last > buf)
        print_clean(stdout, buf, (size_t)(last - buf));
    if (strncmp(last, "OK", 2) == 0) {
        if (last[2] == ' ' && last[3]) {
            print_clean(stdout, last + 3, strlen(last + 3));
            (void)putchar('\n');
        }
        return EXIT_OK;
    }
    if (strncmp(last, "DENIED ", 7) == 0) {
        (void)fprintf(stderr, "handoff: %s: ", cmd);
        print_clean(stderr, last + 7, strlen(last + 7));
        (void)putc('\n', stderr);
        return EXIT_REFUSED;
    }
    if (strncmp(last, "ERR ", 4) == 0) {
        (void)fprintf(stderr, "handoff: %s failed: ", cmd);
        print_clean(stderr, last + 4, strlen(last + 4));
        (void)putc('\n', stderr);
        return EXIT_FAILED;
    }
    if (send_err) {
        (void)fprintf(stderr, "handoff: %s: %s\n", path, strerror(send_err));
        return EXIT_NOCONNECT;
    }
    (void)fprintf(stderr, "handoff: %s: the supervisor closed the connection without an answer\n", cmd);
    return EXIT_FAILED;
}

int control_client(const char *path, const char *cmd, uint64_t timeout)
{
    struct sockaddr_un sun;
    socklen_t len;
    char line[160];
    struct sbuf ans = {0};
    uint64_t deadline = timeout ? handoff_now_usec() + timeout : UINT64_MAX;
    int fd, send_err = 0, code;

    if (unix_addr(path, &sun, &len) < 0) {
        (void)fprintf(stderr, "handoff: control socket path \"%s\" is too long\n", path);
        return EXIT_USAGE;
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    /* connect() to a unix socket whose backlog is full (a supervisor that
     * is stopped, or flooded) waits for room, bounded by SO_SNDTIMEO only;
     * so do the sends. */
    if (fd >= 0 && timeout) {
        struct timeval tv = {.tv_sec = (time_t)(timeout / 1000000), .tv_usec = (suseconds_t)(timeout % 1000000)};
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, len) < 0) {
        int e = errno;
        if (e == EAGAIN && timeout) {
            (void)fprintf(stderr, "handoff: no answer within %.1f s: %s accepts no connection (its backlog is full)\n",
                          (double)timeout / 1e6, path);
            (void)close(fd);
            return EXIT_TIMEOUT;
        }
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
                sbuf_free(&ans);
                return EXIT_TIMEOUT;
            }
            ms = (int)((deadline - now + 999) / 1000);
        }
        int r = poll(&p, 1, ms);
        if (r < 0 && errno != EINTR)
            break;
        if (r <= 0)
            continue;
        char chunk[16384];
        ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (ans.len + (size_t)n > MAX_ANSWER) {
            (void)fprintf(stderr, "handoff: %s: the answer is longer than %u MB; giving up\n", cmd, MAX_ANSWER >> 20);
            (void)close(fd);
            sbuf_free(&ans);
            return EXIT_FAILED;
        }
        sbuf_append(&ans, chunk, (size_t)n);
        if (ans.oom) {
            (void)fprintf(stderr, "handoff: %s: out of memory for the answer\n", cmd);
            (void)close(fd);
            sbuf_free(&ans);
            return EXIT_FAILED;
        }
    }
    (void)close(fd);
    code = client_verdict(ans.p ? ans.p : "", ans.len, cmd, path, send_err);
    sbuf_free(&ans);
    return code;
}

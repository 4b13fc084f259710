/*
 * echo - a TCP/UDP/unix echo server built on libhandoff alone.
 *
 * It restarts with no failed connection on SIGHUP (the new binary inherits
 * the sockets) and shuts down gracefully on SIGTERM/SIGINT. Its stream
 * connections migrate (HANDOFF_MIGRATE): once the new generation is ready,
 * each one moves to it with the bytes read but not yet echoed as its
 * state, so clients never see the restart; this process exits as soon as
 * the new one has acknowledged them. Without migration (--no-migrate, a
 * successor that does not adopt, or a connection it refuses) this process
 * keeps serving its connections until their clients close them.
 *
 * This file is over 600 lines: it is the complete generic example (stream
 * and datagram echo, restarts, connection migration) plus the fault knobs
 * the integration tests drive, and one file is what users copy.
 *
 *   echo --listen 127.0.0.1:9000 --listen udp://127.0.0.1:9000 \
 *        --pid-file /tmp/echo.pid
 *   kill -HUP $(cat /tmp/echo.pid)
 */
#include <handoff.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_LISTEN 16
#define BUF 16384

extern char **environ;

/* An idle connection is small (no buffer): input is read into one shared
 * buffer and echoed at once; only what the peer does not take right away
 * is kept, in a buffer of its own. (A 16 KiB buffer per connection would
 * also make the hand-over slow: right after the fork of the successor
 * every page the old generation writes costs a copy-on-write fault.) */
struct conn {
    struct conn *prev, *next; /* every open stream connection */
    int fd;
    int returned;        /* the successor did not take it: never again */
    size_t pending, off; /* bytes read but not yet echoed back: buf[off..pending) */
    char *buf;           /* NULL when nothing is pending */
};

static char rbuf[BUF];

/* The state a migrating connection carries: "ECH1", the number of bytes
 * read but not yet echoed, a padding length (tests fill the channel with
 * it), the bytes, the padding. */
static const unsigned char state_magic[4] = {'E', 'C', 'H', '1'};
#define STATE_HDR 12

enum { TAG_HANDOFF = -1, TAG_PAUSE = -2 };

static struct {
    handoff_t *h;
    int ep;
    int lfd[MAX_LISTEN];
    int ludp[MAX_LISTEN];
    int nl;
    int draining;
    int paused;
    int pause_tfd;
    const char *exec_on_usr1;
    int verbose;
    struct conn *conns;      /* list head */
    int migrate;             /* HANDOFF_MIGRATE is on */
    size_t state_pad;
    char *ballast; /* --ballast */
    long crash_after_adopt;  /* abort after adopting this many (-1: never) */
    uint64_t ready_at;
    unsigned long adopted, returned_total, bad_state;
} S;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: echo [options]\n"
            "  --listen ADDR          address to serve (repeatable; default 127.0.0.1:9000):\n"
            "                         HOST:PORT, [V6]:PORT, udp://HOST:PORT, unix:/path, unix:@name\n"
            "  --pid-file PATH        file that always names the serving pid\n"
            "  --drain-timeout SEC    close connections still open after SEC (default 30)\n"
            "  --upgrade-timeout SEC  kill a new generation not ready after SEC (default 60)\n"
            "  --resume-window SEC    take the service back if a new version dies within SEC\n"
            "                         of taking over (default 0: off)\n"
            "  --no-migrate           drain connections instead of handing them to the new\n"
            "                         generation (also off with --resume-window)\n"
            "  --nofile N             set RLIMIT_NOFILE to N (soft and hard)\n"
            "  --max-draining N       generations draining at once (default 3; -1: no limit)\n"
            "  --exec-on-usr1 CMD     run CMD with /bin/sh on SIGUSR1 (used by tests)\n"
            "  --crash-after-ready MS abort MS after becoming ready (fault tests)\n"
            "  --crash-after-adopt N  abort after adopting N connections (fault tests)\n"
            "  --stall-after-ready MS do nothing for MS after becoming ready (fault tests)\n"
            "  --state-pad BYTES      pad each migrating connection's state (tests)\n"
            "  --ballast MB           allocate and touch MB MiB (restart benchmarks: a\n"
            "                         large process)\n"
            "  --verbose              log every event\n"
            "  --help                 this text\n"
            "SIGHUP: zero-downtime restart. SIGTERM/SIGINT: graceful stop (twice: now).\n");
}

static void conn_link(struct conn *c)
{
    c->prev = NULL;
    c->next = S.conns;
    if (S.conns)
        S.conns->prev = c;
    S.conns = c;
}

static void conn_unlink(struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        S.conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

static void conn_close(struct conn *c)
{
    (void)epoll_ctl(S.ep, EPOLL_CTL_DEL, c->fd, NULL);
    (void)close(c->fd);
    conn_unlink(c);
    free(c->buf);
    free(c);
    handoff_conn_end(S.h);
}

/* Sends p[0..len) (c's own pending bytes when from_pending) and keeps in
 * c what the peer does not take now. Returns 1 if everything went, 0 if
 * some is pending, -1 on error. */
static int conn_send(struct conn *c, const char *p, size_t len, int from_pending)
{
    size_t off = 0;

    while (off < len) {
        ssize_t n = send(c->fd, p + off, len - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno != EAGAIN)
                return -1;
            if (!from_pending) {
                char *b = malloc(len - off);
                if (!b)
                    return -1;
                memcpy(b, p + off, len - off);
                free(c->buf);
                c->buf = b;
                c->pending = len - off;
                c->off = 0;
            } else {
                c->off += off;
            }
            struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
            (void)epoll_ctl(S.ep, EPOLL_CTL_MOD, c->fd, &e);
            return 0;
        }
        off += (size_t)n;
    }
    return 1;
}

/* Echoes what is pending, then reads more. Returns -1 when closed. */
static int conn_io(struct conn *c)
{
    if (c->off < c->pending) {
        int r = conn_send(c, c->buf + c->off, c->pending - c->off, 1);
        if (r <= 0)
            return r;
    }
    free(c->buf);
    c->buf = NULL;
    c->off = c->pending = 0;
    for (;;) {
        ssize_t n = recv(c->fd, rbuf, sizeof rbuf, 0);
        if (n == 0)
            return -1;
        if (n < 0) {
            if (errno != EAGAIN)
                return -1;
            struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
            (void)epoll_ctl(S.ep, EPOLL_CTL_MOD, c->fd, &e);
            return 0;
        }
        int r = conn_send(c, rbuf, (size_t)n, 0);
        if (r <= 0)
            return r;
    }
}

static void stop_accepting(void);

static void accept_all(int lfd)
{
    for (;;) {
        /* Each conn is owned by the epoll set (data.ptr), which the analyzer
         * cannot follow. */
        int fd = handoff_accept(S.h, lfd, 1); /* NOLINT(clang-analyzer-unix.Malloc) */
        if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM) {
            /* Out of fds: the connection stays queued in the kernel. Pause
             * accepting for a moment instead of spinning on a listener
             * that stays readable. */
            if (!S.paused) {
                fprintf(stderr, "echo[%d]: accept: %s; pausing 50 ms\n", getpid(), strerror(-fd));
                stop_accepting();
                struct itimerspec its = {{0, 0}, {0, 50L * 1000 * 1000}};
                (void)timerfd_settime(S.pause_tfd, 0, &its, NULL);
                S.paused = 1;
            }
            return;
        }
        if (fd < 0) {
            if (fd != -EAGAIN && fd != -ECONNABORTED)
                fprintf(stderr, "echo[%d]: accept: %s\n", getpid(), strerror(-fd));
            return;
        }
        struct conn *c = malloc(sizeof *c);
        if (!c) {
            (void)close(fd);
            handoff_conn_end(S.h);
            continue;
        }
        c->fd = fd;
        c->returned = 0;
        c->pending = c->off = 0;
        c->buf = NULL;
        conn_link(c);
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        /* c is owned by the list and the epoll set from here (freed by
         * conn_close). */
        if (epoll_ctl(S.ep, EPOLL_CTL_ADD, fd, &e) < 0)
            conn_close(c);
    }
}

static void udp_echo(int fd)
{
    char buf[65536];
    struct sockaddr_storage peer;
    for (int i = 0; i < 64; i++) {
        socklen_t plen = sizeof peer;
        ssize_t n = recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&peer, &plen);
        if (n < 0)
            return;
        (void)sendto(fd, buf, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&peer, plen);
    }
}

/* Runs cmd and waits for it. The child must not inherit the signals that
 * handoff_new() blocked in this process: reset its mask and dispositions. */
static void run_command(const char *cmd)
{
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    posix_spawnattr_t attr;
    sigset_t none, all;
    pid_t pid;
    int st;

    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (posix_spawn(&pid, "/bin/sh", NULL, &attr, argv, environ) == 0)
        (void)waitpid(pid, &st, 0);
    posix_spawnattr_destroy(&attr);
}

/* ------------------------------------------------------------------------ */
/* Migration                                                                */

static void put32(unsigned char *p, uint32_t v)
{
    memcpy(p, &v, 4); /* both generations run on this machine */
}

static uint32_t get32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Watches c again (after a failed hand-over, or once adopted) and echoes
 * what it holds (bytes already queued in the kernel are reported by
 * epoll at once). Returns -1 if it had to be closed. */
static int conn_watch(struct conn *c)
{
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(S.ep, EPOLL_CTL_ADD, c->fd, &e) < 0 ||
        (c->off < c->pending && conn_io(c) < 0)) {
        conn_close(c);
        return -1;
    }
    return 0;
}

/* Hands c to the successor. Returns 1 if it went, 0 if we keep it (not
 * watched: the caller calls conn_watch()). */
static int conn_migrate(struct conn *c)
{
    static unsigned char state[STATE_HDR + BUF + HANDOFF_MIGRATE_STATE_MAX];
    size_t n = c->pending - c->off, pad = S.state_pad;
    int r;

    if (c->returned)
        return 0;
    if (STATE_HDR + n + pad > HANDOFF_MIGRATE_STATE_MAX)
        pad = HANDOFF_MIGRATE_STATE_MAX - STATE_HDR - n;
    memcpy(state, state_magic, sizeof state_magic);
    put32(state + 4, (uint32_t)n);
    put32(state + 8, (uint32_t)pad);
    if (n)
        memcpy(state + STATE_HDR, c->buf + c->off, n);
    memset(state + STATE_HDR + n, 'p', pad);
    /* The successor shares the open file description: stop watching it
     * here first (an epoll registration outlives our close()). */
    (void)epoll_ctl(S.ep, EPOLL_CTL_DEL, c->fd, NULL);
    r = handoff_migrate(S.h, c->fd, state, STATE_HDR + n + pad);
    if (r < 0) {
        if (r != -ENOTCONN)
            fprintf(stderr, "echo[%d]: migrate: %s; keeping the connection\n", getpid(),
                    strerror(-r));
        return 0;
    }
    /* The library owns the fd now and counts the connection until the
     * successor has it. */
    conn_unlink(c);
    free(c->buf);
    free(c);
    handoff_conn_end(S.h);
    return 1;
}

static void migrate_all(void)
{
    unsigned long moved = 0, kept = 0;
    struct conn *c = S.conns, *next;

    for (; c; c = next) {
        next = c->next;
        if (conn_migrate(c)) {
            moved++;
        } else {
            kept++;
            (void)conn_watch(c);
        }
    }
    if (S.verbose || kept)
        fprintf(stderr, "echo[%d]: migrated %lu connections, kept %lu\n", getpid(), moved, kept);
}

/* Checks a state blob; returns the count of pending bytes or -1. */
static long state_parse(const void *p, size_t len)
{
    const unsigned char *s = p;
    uint32_t n, pad;

    if (!s || len < STATE_HDR || memcmp(s, state_magic, sizeof state_magic) != 0)
        return -1;
    n = get32(s + 4);
    pad = get32(s + 8);
    if (n > BUF || pad > HANDOFF_MIGRATE_STATE_MAX || len != STATE_HDR + (size_t)n + pad)
        return -1;
    return n;
}

static void adopt_all(void)
{
    unsigned long got = 0, ret = 0;
    handoff_adopted ad;

    while (handoff_adopt(S.h, &ad) > 0) {
        long n = state_parse(ad.state, ad.len);
        struct conn *c;
        if (n < 0 || !(c = malloc(sizeof *c))) {
            /* Not ours to guess at: a peer with another state format. */
            fprintf(stderr, "echo[%d]: %s for an adopted connection; closing it\n", getpid(),
                    n < 0 ? "malformed state" : "out of memory");
            S.bad_state++;
            (void)close(ad.fd);
            handoff_conn_end(S.h);
            continue;
        }
        c->fd = ad.fd;
        c->returned = ad.returned;
        c->off = 0;
        c->pending = (size_t)n;
        c->buf = n ? malloc((size_t)n) : NULL;
        if (n && !c->buf) {
            free(c);
            (void)close(ad.fd);
            handoff_conn_end(S.h);
            continue;
        }
        if (n)
            memcpy(c->buf, (const unsigned char *)ad.state + STATE_HDR, (size_t)n);
        conn_link(c);
        if (ad.returned) {
            ret++;
        } else {
            got++;
            /* A generation that is itself handing over (its predecessor
             * still draining) passes the connection straight on. */
            if (S.draining && handoff_successor_adopts(S.h) && conn_migrate(c))
                continue;
        }
        (void)conn_watch(c);
    }
    S.adopted += got;
    S.returned_total += ret;
    if (S.verbose && got)
        fprintf(stderr,
                "echo[%d]: adopted %lu connections (total %lu, %" PRIu64 " us after ready)\n",
                getpid(), got, S.adopted, handoff_now_usec() - S.ready_at);
    if (ret)
        fprintf(stderr, "echo[%d]: %lu connections returned by the successor; serving them\n",
                getpid(), ret);
    if (S.crash_after_adopt >= 0 && S.adopted >= (unsigned long)S.crash_after_adopt) {
        fprintf(stderr, "echo[%d]: crashing after adopting %lu connections\n", getpid(),
                S.adopted);
        struct rlimit nocore = {0, 0};
        (void)setrlimit(RLIMIT_CORE, &nocore);
        abort();
    }
}

/* Listener fds carry their index + 1 in data.u64 high bits to tell them
 * from connections (data.ptr); the handoff fd uses a sentinel. */
#define LTAG(i) ((uint64_t)0xEC400000u << 32 | (uint64_t)(i))
#define IS_LTAG(v) (((v) >> 32) == 0xEC400000u)

static void stop_accepting(void)
{
    for (int i = 0; i < S.nl; i++)
        (void)epoll_ctl(S.ep, EPOLL_CTL_DEL, S.lfd[i], NULL);
}

static void start_accepting(void)
{
    for (int i = 0; i < S.nl; i++) {
        struct epoll_event e = {.events = EPOLLIN, .data.u64 = LTAG(i)};
        (void)epoll_ctl(S.ep, EPOLL_CTL_ADD, S.lfd[i], &e);
    }
}

/* Returns 1 when the process should exit. */
static int on_handoff(void)
{
    handoff_event ev;
    int r;
    while ((r = handoff_next_event(S.h, &ev)) > 0) {
        if (S.verbose || ev.type == HANDOFF_EVENT_UPGRADE_FAILED)
            fprintf(stderr, "echo[%d]: %s: %s\n", getpid(), handoff_event_name(ev.type),
                    ev.message);
        switch (ev.type) {
        case HANDOFF_EVENT_DRAIN:
            if (!S.paused)
                stop_accepting();
            S.draining = 1;
            if (ev.reason == HANDOFF_DRAIN_UPGRADE && handoff_successor_adopts(S.h))
                migrate_all();
            break;
        case HANDOFF_EVENT_ADOPT:
            adopt_all();
            break;
        case HANDOFF_EVENT_RESUME:
            /* The new version died right after taking over: serve again. */
            S.draining = 0;
            if (!S.paused)
                start_accepting();
            break;
        case HANDOFF_EVENT_STOP:
            return 1;
        case HANDOFF_EVENT_SIGNAL:
            if (ev.signo == SIGUSR1 && S.exec_on_usr1)
                run_command(S.exec_on_usr1);
            break;
        default:
            break;
        }
    }
    if (r < 0)
        fprintf(stderr, "echo[%d]: handoff_next_event: %s\n", getpid(), strerror(-r));
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"pid-file", required_argument, NULL, 'p'},
        {"drain-timeout", required_argument, NULL, 'd'},
        {"upgrade-timeout", required_argument, NULL, 'u'},
        {"exec-on-usr1", required_argument, NULL, 'x'},
        {"resume-window", required_argument, NULL, 'r'},
        {"crash-after-ready", required_argument, NULL, 'c'},
        {"crash-after-adopt", required_argument, NULL, 'A'},
        {"stall-after-ready", required_argument, NULL, 'S'},
        {"state-pad", required_argument, NULL, 'P'},
        {"ballast", required_argument, NULL, 'B'},
        {"nofile", required_argument, NULL, 'n'},
        {"no-migrate", no_argument, NULL, 'M'},
        {"max-draining", required_argument, NULL, 'm'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    handoff_options o = HANDOFF_OPTIONS_INIT;
    const char *specs[MAX_LISTEN];
    int nspecs = 0, c, r;

    int crash_ms = -1, stall_ms = 0, migrate = 1;
    long nofile = 0, ballast_mb = 0;
    S.crash_after_adopt = -1;
    while ((c = getopt_long(argc, argv, "l:p:d:u:x:r:c:A:S:P:B:n:Mm:vh", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (nspecs == MAX_LISTEN) {
                fprintf(stderr, "echo: at most %d --listen\n", MAX_LISTEN);
                return 2;
            }
            specs[nspecs++] = optarg;
            break;
        case 'p':
            o.pid_file = optarg;
            break;
        case 'c':
        case 'A':
        case 'S':
        case 'P':
        case 'B':
        case 'n': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 0 || v > 3600000) {
                fprintf(stderr, "echo: -%c wants a number from 0 to 3600000\n", c);
                return 2;
            }
            if (c == 'c')
                crash_ms = (int)v;
            else if (c == 'A')
                S.crash_after_adopt = v;
            else if (c == 'S')
                stall_ms = (int)v;
            else if (c == 'P')
                S.state_pad = (size_t)v;
            else if (c == 'B')
                ballast_mb = v;
            else
                nofile = v;
            break;
        }
        case 'M':
            migrate = 0;
            break;
        case 'm': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < -1 || v == 0 || v > 1000) {
                fprintf(stderr, "echo: --max-draining wants 1..1000 or -1\n");
                return 2;
            }
            o.max_draining = (int)v;
            break;
        }
        case 'd':
        case 'r':
        case 'u': {
            char *end;
            double s = strtod(optarg, &end);
            if (*end || s <= 0) {
                fprintf(stderr, "echo: --%s wants seconds > 0\n",
                        c == 'd' ? "drain-timeout" : c == 'r' ? "resume-window" : "upgrade-timeout");
                return 2;
            }
            uint64_t us = (uint64_t)(s * 1e6);
            if (c == 'd')
                o.drain_timeout_usec = us;
            else if (c == 'r')
                o.resume_window_usec = us;
            else
                o.upgrade_timeout_usec = us;
            break;
        }
        case 'x':
            S.exec_on_usr1 = optarg;
            break;
        case 'v':
            S.verbose = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "echo: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (nspecs == 0)
        specs[nspecs++] = "127.0.0.1:9000";

    if (nofile > 0) {
        struct rlimit rl = {(rlim_t)nofile, (rlim_t)nofile};
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            fprintf(stderr, "echo: --nofile: %s\n", strerror(errno));
            return 1;
        }
    }
    /* Connections handed to a successor die with it; with a resume window
     * (a successor that may crash and be rolled back) keep them here. */
    S.migrate = migrate && !o.resume_window_usec;
    o.argv = argv;
    o.flags = S.migrate ? HANDOFF_MIGRATE : 0;
    o.log = handoff_log_stderr; /* the library is silent without one */
    o.log_level = S.verbose ? HANDOFF_LOG_INFO : HANDOFF_LOG_WARNING;
    r = handoff_new(&o, &S.h);
    if (r < 0) {
        fprintf(stderr, "echo: handoff_new: %s\n", strerror(-r));
        return 1;
    }
    if (S.exec_on_usr1 && handoff_watch_signal(S.h, SIGUSR1) < 0) {
        fprintf(stderr, "echo: %s\n", handoff_errmsg(S.h));
        return 1;
    }
    S.ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = (uint64_t)TAG_HANDOFF};
    (void)epoll_ctl(S.ep, EPOLL_CTL_ADD, handoff_event_fd(S.h), &e);
    S.pause_tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    e.data.u64 = (uint64_t)TAG_PAUSE;
    (void)epoll_ctl(S.ep, EPOLL_CTL_ADD, S.pause_tfd, &e);
    for (int i = 0; i < nspecs; i++) {
        int fd = handoff_listen(S.h, NULL, specs[i], NULL);
        if (fd < 0) {
            fprintf(stderr, "echo: %s\n", handoff_errmsg(S.h));
            handoff_free(S.h);
            return 1;
        }
        /* An inherited socket keeps the mode its creator gave it (systemd's
         * are blocking); this loop needs non-blocking accept. */
        (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        S.lfd[S.nl] = fd;
        S.ludp[S.nl] = strncmp(specs[i], "udp", 3) == 0;
        e.events = EPOLLIN;
        e.data.u64 = LTAG(S.nl);
        (void)epoll_ctl(S.ep, EPOLL_CTL_ADD, fd, &e);
        S.nl++;
    }
    S.ready_at = handoff_now_usec();
    handoff_ready(S.h);
    if (ballast_mb > 0) {
        /* Touched, so that its pages are mapped: what a big server's
         * fork() would copy page tables for. Kept for the process's life;
         * after ready, so that a successor's restart does not wait for it. */
        size_t len = (size_t)ballast_mb << 20;
        char *b = malloc(len);
        if (!b) {
            fprintf(stderr, "echo: --ballast: out of memory\n");
            return 1;
        }
        for (size_t i = 0; i < len; i += 4096)
            b[i] = 1;
        S.ballast = b;
    }
    if (stall_ms > 0)
        usleep((useconds_t)stall_ms * 1000);
    if (crash_ms >= 0) {
        /* A new version that dies right after taking over (no core file). */
        struct rlimit nocore = {0, 0};
        (void)setrlimit(RLIMIT_CORE, &nocore);
        usleep((useconds_t)crash_ms * 1000);
        abort();
    }
    if (S.verbose)
        fprintf(stderr, "echo[%d]: generation %u serving%s\n", getpid(), handoff_generation(S.h),
                S.migrate ? " (migration on)" : "");

    for (;;) {
        struct epoll_event evs[64];
        int n = epoll_wait(S.ep, evs, 64, -1), handoff_ready_ev = 0;
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; i < n; i++) {
            uint64_t v = evs[i].data.u64;
            if (v == (uint64_t)TAG_HANDOFF) {
                /* Last: a migration frees connections whose events may
                 * still be in this batch. */
                handoff_ready_ev = 1;
            } else if (v == (uint64_t)TAG_PAUSE) {
                uint64_t t;
                (void)!read(S.pause_tfd, &t, sizeof t);
                S.paused = 0;
                if (!S.draining)
                    start_accepting();
            } else if (IS_LTAG(v)) {
                int k = (int)(v & 0xffff);
                if (S.draining)
                    continue;
                if (S.ludp[k])
                    udp_echo(S.lfd[k]);
                else
                    accept_all(S.lfd[k]);
            } else {
                struct conn *cn = evs[i].data.ptr;
                if (conn_io(cn) < 0)
                    conn_close(cn);
            }
        }
        if (handoff_ready_ev && on_handoff())
            goto out;
    }
out:
    /* STOP: whatever is still open is closed (the hammer). Connections
     * are not tracked in a list here; exiting closes them. */
    if (S.verbose)
        fprintf(stderr, "echo[%d]: exiting with %lu connections open\n", getpid(),
                handoff_conn_count(S.h));
    handoff_free(S.h);
    close(S.ep);
    free(S.ballast);
    return 0;
}

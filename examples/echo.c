/*
 * echo - a TCP/UDP/unix echo server built on libhandoff alone.
 *
 * It restarts with no failed connection on SIGHUP (the new binary inherits
 * the sockets; this process drains its connections and exits once the new
 * one is ready) and shuts down gracefully on SIGTERM/SIGINT.
 *
 *   echo --listen 127.0.0.1:9000 --listen udp://127.0.0.1:9000 \
 *        --pid-file /tmp/echo.pid
 *   kill -HUP $(cat /tmp/echo.pid)
 */
#include <handoff.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
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

struct conn {
    int fd;
    size_t pending, off; /* bytes read but not yet echoed back */
    char buf[BUF];
};

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
            "  --exec-on-usr1 CMD     run CMD with /bin/sh on SIGUSR1 (used by tests)\n"
            "  --crash-after-ready MS abort MS after becoming ready (fault tests)\n"
            "  --verbose              log every event\n"
            "  --help                 this text\n"
            "SIGHUP: zero-downtime restart. SIGTERM/SIGINT: graceful stop (twice: now).\n");
}

static void conn_close(struct conn *c)
{
    (void)epoll_ctl(S.ep, EPOLL_CTL_DEL, c->fd, NULL);
    (void)close(c->fd);
    free(c);
    handoff_conn_end(S.h);
}

/* Echoes what is buffered, then reads more. Returns -1 when closed. */
static int conn_io(struct conn *c)
{
    for (;;) {
        while (c->off < c->pending) {
            ssize_t n = send(c->fd, c->buf + c->off, c->pending - c->off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN) {
                    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
                    (void)epoll_ctl(S.ep, EPOLL_CTL_MOD, c->fd, &e);
                    return 0;
                }
                return -1;
            }
            c->off += (size_t)n;
        }
        c->off = c->pending = 0;
        ssize_t n = recv(c->fd, c->buf, sizeof c->buf, 0);
        if (n == 0)
            return -1;
        if (n < 0) {
            if (errno != EAGAIN)
                return -1;
            struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
            (void)epoll_ctl(S.ep, EPOLL_CTL_MOD, c->fd, &e);
            return 0;
        }
        c->pending = (size_t)n;
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
        c->pending = c->off = 0;
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        /* c is owned by the epoll set from here (freed by conn_close). */
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
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    handoff_options o = HANDOFF_OPTIONS_INIT;
    const char *specs[MAX_LISTEN];
    int nspecs = 0, c, r;

    int crash_ms = -1;
    while ((c = getopt_long(argc, argv, "l:p:d:u:x:r:c:vh", longopts, NULL)) != -1) {
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
        case 'c': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 0 || v > 3600000) {
                fprintf(stderr, "echo: --crash-after-ready wants milliseconds\n");
                return 2;
            }
            crash_ms = (int)v;
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

    o.argv = argv;
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
    handoff_ready(S.h);
    if (crash_ms >= 0) {
        /* A new version that dies right after taking over (no core file). */
        struct rlimit nocore = {0, 0};
        (void)setrlimit(RLIMIT_CORE, &nocore);
        usleep((useconds_t)crash_ms * 1000);
        abort();
    }
    if (S.verbose)
        fprintf(stderr, "echo[%d]: generation %u serving\n", getpid(), handoff_generation(S.h));

    for (;;) {
        struct epoll_event evs[64];
        int n = epoll_wait(S.ep, evs, 64, -1);
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; i < n; i++) {
            uint64_t v = evs[i].data.u64;
            if (v == (uint64_t)TAG_HANDOFF) {
                if (on_handoff())
                    goto out;
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
    }
out:
    /* STOP: whatever is still open is closed (the hammer). Connections
     * are not tracked in a list here; exiting closes them. */
    if (S.verbose)
        fprintf(stderr, "echo[%d]: exiting with %lu connections open\n", getpid(),
                handoff_conn_count(S.h));
    handoff_free(S.h);
    close(S.ep);
    return 0;
}

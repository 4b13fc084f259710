/*
 * preload-server.c - a small server that binds its own sockets the ways
 * real servers do, for the shim's tests (tests/it-preload.py). It knows
 * nothing of handoff.
 *
 *   preload-server [OPTIONS] ADDR...
 *
 * ADDR: HOST:PORT, [V6]:PORT, udp:HOST:PORT, unix:/PATH or unix:@NAME.
 * Every connection gets "pid PID\n" and is closed; a datagram gets the
 * same answer. Prints one line per event on stdout:
 *   "bound ADDR fd=N cloexec=C nonblock=B" / "bind ADDR: ERRNO-NAME"
 *   "listening" once the loop runs, "spawned PID" for --spawn.
 *
 * Options (each a pitfall of docs/guide-unmodified-servers.md):
 *   --cloexec-nonblock   socket(... | SOCK_CLOEXEC | SOCK_NONBLOCK)
 *   --reuseaddr, --reuseport, --v6only 0|1, --rcvbuf N, --nodelay
 *   --close-all          close fds 3..1023 one by one before socket()
 *   --closefrom          closefrom(3) before socket()
 *   --close-range        the close_range system call, directly
 *   --epoll-before-bind  add the socket to epoll before bind()
 *   --bind-twice         bind() the fd a second time (prints the result)
 *   --twice              a second socket bound to each address
 *   --listen-twice       listen() twice
 *   --unlink             unlink() a unix path before bind() and at exit
 *   --shutdown-on-exit   shutdown(SHUT_RDWR) the listeners before exit
 *   --shutdown-in-handler  ... and close them, from the SIGTERM handler
 *   --fork               bind in a forked child (no exec), which serves
 *   --daemonize          bind after a double fork (the parent exits)
 *   --exec-self          re-exec itself once before binding
 *   --blocking-accept    accept() (blocking) instead of accept4(NONBLOCK)
 *   --select             wait with select() instead of epoll
 *   --accept-only        no poll: wait in a blocking accept() on the first
 *                        socket, retried at once on EINTR (as Python's
 *                        socket.accept() does, PEP 475); the stop flag is
 *                        seen only when accept() returns otherwise. Prints
 *                        "accept errors N" (other failures) at the end
 *   --sa-restart         the SIGTERM/SIGINT handler has SA_RESTART
 *   --spawn CMD          after listen(): run /bin/sh -c CMD, wait for it
 *   --spawn-direct       ... run CMD itself (split at spaces), no shell
 *   --exit-after N       exit after N connections
 *   --slow MS            sleep MS before answering
 *   --linger MS          after SIGTERM, go on serving for MS before exiting
 *                        (as servers that exit only at their next timer do)
 * It exits on SIGTERM or SIGINT, closing its listeners first.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXL 32

static struct {
    bool cloexec_nonblock, reuseaddr, reuseport, nodelay, close_all, closefrom_, close_range_, epoll_before,
        bind_twice, twice, listen_twice, unlink_, shutdown_exit, shutdown_handler, spawn_direct, fork_, daemonize, exec_self, blocking, use_select,
        accept_only, sa_restart;
    int v6only, rcvbuf, exit_after, slow_ms, linger_ms;
    const char *spawn;
} O = {.v6only = -1};

static volatile sig_atomic_t g_stop;
static int g_fds[32];
static volatile sig_atomic_t g_nfds;
static int g_ep = -1; /* --epoll-before-bind: the set sockets join before bind() */

static void on_term(int s)
{
    (void)s;
    /* Async-signal-safe calls only: shutdown() and close() are. */
    if (O.shutdown_handler)
        for (int i = 0; i < g_nfds; i++) {
            (void)shutdown(g_fds[i], SHUT_RDWR);
            (void)close(g_fds[i]);
        }
    g_stop = 1;
}

struct lsn {
    int fd, type;
    char spec[200];
    char path[108];
};

static int parse(const char *spec, struct sockaddr_storage *ss, socklen_t *len, int *type)
{
    memset(ss, 0, sizeof *ss);
    *type = SOCK_STREAM;
    if (strncmp(spec, "udp:", 4) == 0) {
        *type = SOCK_DGRAM;
        spec += 4;
    }
    if (strncmp(spec, "unix:", 5) == 0) {
        struct sockaddr_un *sun = (struct sockaddr_un *)ss;
        const char *p = spec + 5;
        size_t n = strlen(p);
        if (n >= sizeof sun->sun_path)
            return -1;
        sun->sun_family = AF_UNIX;
        memcpy(sun->sun_path, p, n);
        if (p[0] == '@') {
            sun->sun_path[0] = '\0';
            *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
        } else {
            *len = (socklen_t)sizeof *sun;
        }
        return 0;
    }
    char host[128];
    const char *colon = strrchr(spec, ':');
    if (!colon)
        return -1;
    int port = atoi(colon + 1);
    size_t hl = (size_t)(colon - spec);
    if (hl >= sizeof host)
        return -1;
    memcpy(host, spec, hl);
    host[hl] = '\0';
    if (host[0] == '[') {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        host[hl - 1] = '\0';
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host + 1, &in6->sin6_addr) != 1)
            return -1;
        *len = sizeof *in6;
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
            return -1;
        *len = sizeof *in;
    }
    return 0;
}

static const char *ename(int e)
{
    switch (e) {
    case EADDRINUSE: return "EADDRINUSE";
    case EINVAL: return "EINVAL";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ETIMEDOUT: return "ETIMEDOUT";
    default: return strerror(e);
    }
}

static int open_one(const char *spec, struct lsn *l)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int type, one = 1, fd;

    if (parse(spec, &ss, &len, &type) < 0) {
        printf("bad address %s\n", spec);
        return -1;
    }
    fd = socket(ss.ss_family, type | (O.cloexec_nonblock ? SOCK_CLOEXEC | SOCK_NONBLOCK : 0), 0);
    if (fd < 0)
        return -1;
    if (O.epoll_before) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (g_ep < 0)
            g_ep = epoll_create1(EPOLL_CLOEXEC);
        (void)epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev);
    }
    if (O.reuseaddr)
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (O.reuseport)
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (O.nodelay && ss.ss_family != AF_UNIX)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (O.rcvbuf)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &O.rcvbuf, sizeof O.rcvbuf);
    if (O.v6only >= 0 && ss.ss_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &O.v6only, sizeof O.v6only);
    if (O.unlink_ && ss.ss_family == AF_UNIX && ((struct sockaddr_un *)&ss)->sun_path[0]) {
        snprintf(l->path, sizeof l->path, "%s", ((struct sockaddr_un *)&ss)->sun_path);
        (void)unlink(l->path);
    }
    if (bind(fd, (struct sockaddr *)&ss, len) < 0) {
        printf("bind %s: %s\n", spec, ename(errno));
        (void)close(fd);
        return -1;
    }
    if (O.bind_twice) {
        int r = bind(fd, (struct sockaddr *)&ss, len);
        printf("bind again %s: %s\n", spec, r == 0 ? "ok" : ename(errno));
    }
    if (type == SOCK_STREAM) {
        if (listen(fd, 64) < 0) {
            printf("listen %s: %s\n", spec, ename(errno));
            return -1;
        }
        if (O.listen_twice && listen(fd, 64) < 0) {
            printf("listen again %s: %s\n", spec, ename(errno));
            return -1;
        }
    }
    int fdfl = fcntl(fd, F_GETFD), fl = fcntl(fd, F_GETFL), nd = 0, rb = 0;
    socklen_t ol = sizeof nd;
    if (ss.ss_family != AF_UNIX && type == SOCK_STREAM)
        (void)getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nd, &ol);
    ol = sizeof rb;
    (void)getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rb, &ol);
    printf("bound %s fd=%d cloexec=%d nonblock=%d nodelay=%d rcvbuf=%d\n", spec, fd, (fdfl & FD_CLOEXEC) ? 1 : 0,
           (fl & O_NONBLOCK) ? 1 : 0, nd ? 1 : 0, rb);
    l->fd = fd;
    l->type = type;
    if (g_nfds < 32) {
        g_fds[g_nfds] = fd;
        g_nfds = g_nfds + 1;
    }
    snprintf(l->spec, sizeof l->spec, "%s", spec);
    return 0;
}

static void answer(int fd, int type)
{
    char msg[64];
    int n = snprintf(msg, sizeof msg, "pid %ld\n", (long)getpid());

    if (O.slow_ms) {
        struct timespec ts = {O.slow_ms / 1000, (long)(O.slow_ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !g_stop) {
        }
    }
    if (type == SOCK_DGRAM) {
        char buf[512];
        struct sockaddr_storage from;
        socklen_t fl = sizeof from;
        if (recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl) >= 0)
            (void)sendto(fd, msg, (size_t)n, 0, (struct sockaddr *)&from, fl);
        return;
    }
    int c = O.blocking ? accept(fd, NULL, NULL) : accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0)
        return;
    if (!O.blocking) {
        int fl = fcntl(c, F_GETFL), fdfl = fcntl(c, F_GETFD);
        if (!(fl & O_NONBLOCK) || !(fdfl & FD_CLOEXEC))
            n = snprintf(msg, sizeof msg, "bad accept4 flags\n");
        fcntl(c, F_SETFL, fl & ~O_NONBLOCK);
    }
    (void)!write(c, msg, (size_t)n);
    (void)close(c);
}

static void serve(struct lsn *ls, int n)
{
    int ep = -1, served = 0;

    if (O.epoll_before) {
        ep = g_ep; /* registered before bind(), never again */
    } else if (!O.use_select && !O.accept_only) {
        ep = epoll_create1(EPOLL_CLOEXEC);
        for (int i = 0; i < n; i++) {
            struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls[i].fd};
            (void)epoll_ctl(ep, EPOLL_CTL_ADD, ls[i].fd, &ev);
        }
    }
    printf("listening\n");
    fflush(stdout);
    if (O.spawn) {
        pid_t p = fork();
        if (p == 0) {
            char *argv[32], *save = NULL, *cmd = strdup(O.spawn);
            int k = 0;
            if (!O.spawn_direct || !cmd)
                execl("/bin/sh", "sh", "-c", O.spawn, (char *)NULL);
            for (char *w = strtok_r(cmd, " ", &save); w && k < 31; w = strtok_r(NULL, " ", &save))
                argv[k++] = w;
            argv[k] = NULL;
            execv(argv[0], argv);
            _exit(127);
        }
        printf("spawned %ld\n", (long)p);
        fflush(stdout);
        int st;
        while (waitpid(p, &st, 0) < 0 && errno == EINTR) {
        }
        printf("spawn exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
        fflush(stdout);
    }
    struct timespec stop_at = {0, 0};
    int accept_errors = 0;
    while (O.accept_only && !g_stop && !(O.exit_after && served >= O.exit_after)) {
        int c;
        do
            c = accept(ls[0].fd, NULL, NULL);
        while (c < 0 && errno == EINTR);
        if (c < 0) {
            accept_errors++;
            continue;
        }
        char msg[64];
        int len = snprintf(msg, sizeof msg, "pid %ld\n", (long)getpid());
        (void)!write(c, msg, (size_t)len);
        (void)close(c);
        served++;
    }
    for (; !O.accept_only;) {
        if (O.exit_after && served >= O.exit_after)
            break;
        if (g_stop) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (!stop_at.tv_sec) {
                stop_at = now;
                printf("stopping, lingering %d ms\n", O.linger_ms);
                fflush(stdout);
            }
            if ((now.tv_sec - stop_at.tv_sec) * 1000 + (now.tv_nsec - stop_at.tv_nsec) / 1000000 >= O.linger_ms)
                break;
        }
        if (O.use_select) {
            fd_set r;
            int top = 0;
            struct timeval tv = {0, 200000};
            FD_ZERO(&r);
            for (int i = 0; i < n; i++) {
                FD_SET(ls[i].fd, &r);
                top = ls[i].fd > top ? ls[i].fd : top;
            }
            if (select(top + 1, &r, NULL, NULL, &tv) <= 0)
                continue;
            for (int i = 0; i < n; i++)
                if (FD_ISSET(ls[i].fd, &r)) {
                    answer(ls[i].fd, ls[i].type);
                    served++;
                }
        } else {
            struct epoll_event evs[8];
            int k = epoll_wait(ep, evs, 8, 200);
            for (int j = 0; j < k; j++) {
                int i = 0;
                while (i < n && ls[i].fd != evs[j].data.fd)
                    i++;
                if (i == n)
                    continue;
                answer(ls[i].fd, ls[i].type);
                served++;
            }
        }
    }
    for (int i = 0; i < n && !O.shutdown_handler; i++) {
        if (O.shutdown_exit)
            (void)shutdown(ls[i].fd, SHUT_RDWR);
        (void)close(ls[i].fd);
        if (O.unlink_ && ls[i].path[0])
            (void)unlink(ls[i].path);
    }
    if (O.accept_only)
        printf("accept errors %d\n", accept_errors);
    printf("stopped after %d connections\n", served);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    struct lsn ls[MAXL];
    int n = 0, i;

    setvbuf(stdout, NULL, _IOLBF, 0);
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
#define FLAG(s, f) else if (strcmp(a, s) == 0) O.f = true
        if (0) {
        }
        FLAG("--cloexec-nonblock", cloexec_nonblock);
        FLAG("--reuseaddr", reuseaddr);
        FLAG("--reuseport", reuseport);
        FLAG("--nodelay", nodelay);
        FLAG("--close-all", close_all);
        FLAG("--closefrom", closefrom_);
        FLAG("--close-range", close_range_);
        FLAG("--epoll-before-bind", epoll_before);
        FLAG("--bind-twice", bind_twice);
        FLAG("--twice", twice);
        FLAG("--listen-twice", listen_twice);
        FLAG("--unlink", unlink_);
        FLAG("--shutdown-on-exit", shutdown_exit);
        FLAG("--shutdown-in-handler", shutdown_handler);
        FLAG("--spawn-direct", spawn_direct);
        FLAG("--fork", fork_);
        FLAG("--daemonize", daemonize);
        FLAG("--exec-self", exec_self);
        FLAG("--blocking-accept", blocking);
        FLAG("--select", use_select);
        FLAG("--accept-only", accept_only);
        FLAG("--sa-restart", sa_restart);
        else if (strcmp(a, "--v6only") == 0 && i + 1 < argc) O.v6only = atoi(argv[++i]);
        else if (strcmp(a, "--rcvbuf") == 0 && i + 1 < argc) O.rcvbuf = atoi(argv[++i]);
        else if (strcmp(a, "--exit-after") == 0 && i + 1 < argc) O.exit_after = atoi(argv[++i]);
        else if (strcmp(a, "--slow") == 0 && i + 1 < argc) O.slow_ms = atoi(argv[++i]);
        else if (strcmp(a, "--linger") == 0 && i + 1 < argc) O.linger_ms = atoi(argv[++i]);
        else if (strcmp(a, "--spawn") == 0 && i + 1 < argc) O.spawn = argv[++i];
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
#undef FLAG
    }
    struct sigaction sa = {.sa_handler = on_term, .sa_flags = O.sa_restart ? SA_RESTART : 0};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (O.exec_self) {
        /* The same argv without --exec-self, same pid. */
        char **nv = calloc((size_t)argc + 1, sizeof *nv);
        int k = 0;
        for (int j = 0; j < argc; j++)
            if (strcmp(argv[j], "--exec-self") != 0)
                nv[k++] = argv[j];
        printf("exec-self %ld\n", (long)getpid());
        fflush(stdout);
        execv("/proc/self/exe", nv);
        return 127;
    }
    if (O.close_all)
        for (int fd = 3; fd < 1024; fd++)
            (void)close(fd);
    if (O.closefrom_)
        closefrom(3);
    if (O.close_range_)
        (void)syscall(SYS_close_range, 3U, ~0U, 0U);
    if (O.daemonize) {
        if (fork() > 0)
            _exit(0);
        (void)setsid();
        if (fork() > 0)
            _exit(0);
        printf("daemon %ld\n", (long)getpid());
    }
    if (O.fork_) {
        pid_t p = fork();
        if (p > 0) {
            int st;
            while (waitpid(p, &st, 0) < 0 && errno == EINTR) {
                if (g_stop)
                    (void)kill(p, SIGTERM);
            }
            return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
        }
        printf("child %ld\n", (long)getpid());
    }
    for (; i < argc && n < MAXL; i++) {
        if (open_one(argv[i], &ls[n]) == 0)
            n++;
        if (O.twice && n < MAXL && open_one(argv[i], &ls[n]) == 0)
            n++;
    }
    if (n == 0)
        return 1;
    serve(ls, n);
    return 0;
}

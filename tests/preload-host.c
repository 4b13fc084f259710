/*
 * preload-host.c - a minimal stand-in for `handoff run --preload`, so that
 * the shim (src/preload/shim.c) is tested on its own: it opens sockets
 * and the broker, runs one command with the shim preloaded, answers the
 * shim's requests, and exits with the command's status.
 * tests/it-preload.py drives it.
 *
 *   preload-host --lib PATH [--depth N] [--no-ready] [--log N] [--stop-signal N]
 *                [--listen SPEC[,v6only|,dualstack]]... -- CMD [ARGS...]
 *
 * In CMD and ARGS, "{P0}", "{P1}", ... become the port of socket 0, 1, ...
 * (so that --listen 127.0.0.1:0 gives the server a free port to bind).
 * On stdout, before the command starts: "listen I ADDR" for every socket
 * (port 0 resolved), then "start PID"; while it runs: "ready PID accepting
 * on ADDR..." for every readiness report of the shim; at the end: "exit
 * CODE". Broker messages go to stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "handoff.h"
#include "preload.h"

extern char **environ;

static pid_t g_child;

static pid_t parent_of(pid_t pid)
{
    char path[64], buf[512], *p;
    ssize_t n;
    int fd;

    (void)snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof buf - 1);
    (void)close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    p = strrchr(buf, ')'); /* the name may hold spaces and parentheses */
    if (!p)
        return 0;
    return (pid_t)strtol(p + 4, NULL, 10); /* ") S PPID" */
}

static pid_t owner(pid_t pid, void *ud)
{
    (void)ud;
    for (int i = 0; i < 64 && pid > 1; i++) {
        if (pid == g_child)
            return g_child;
        pid = parent_of(pid);
    }
    return 0;
}

static void log_cb(int level, const char *msg, void *ud)
{
    (void)ud;
    fprintf(stderr, "host[%d]: %s\n", level, msg);
}

static struct pl_broker *g_b;

static void ready_cb(pid_t own, pid_t pid, uint64_t mask, void *ud)
{
    size_t n;
    const struct pl_sock *h = pl_broker_held(g_b, &n);
    (void)ud;
    (void)own;
    printf("ready %ld accepting on", (long)pid);
    for (size_t i = 0; i < n; i++)
        if (mask >> i & 1) {
            char f[200];
            (void)pl_sock_format(&h[i], f, sizeof f);
            printf(" %s", f);
        }
    printf("\n");
    fflush(stdout);
}

static int open_listener(const char *arg)
{
    char spec[256], err[256];
    handoff_addr a;
    int v6 = -1, fd, one = 1;
    char *comma;

    (void)snprintf(spec, sizeof spec, "%s", arg);
    comma = strrchr(spec, ',');
    if (comma && strcmp(comma, ",v6only") == 0) {
        v6 = 1;
        *comma = '\0';
    } else if (comma && strcmp(comma, ",dualstack") == 0) {
        v6 = 0;
        *comma = '\0';
    }
    if (handoff_addr_parse(spec, &a, err, sizeof err) < 0) {
        fprintf(stderr, "host: %s: %s\n", spec, err);
        return -1;
    }
    fd = socket(a.family, a.socktype | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (a.family != AF_UNIX && a.socktype == SOCK_STREAM) /* as libhandoff does */
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (a.family == AF_INET6 && v6 >= 0)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6, sizeof v6);
    if (a.family == AF_UNIX && a.sa.raw[offsetof(struct sockaddr_un, sun_path)] != '\0')
        (void)unlink((const char *)a.sa.raw + offsetof(struct sockaddr_un, sun_path));
    if (bind(fd, (struct sockaddr *)a.sa.raw, a.len) < 0 ||
        (a.socktype != SOCK_DGRAM && listen(fd, 128) < 0)) {
        fprintf(stderr, "host: bind %s: %s\n", spec, strerror(errno));
        (void)close(fd);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    const char *lib = NULL, *listens[PL_MAX_HELD];
    int nl = 0, depth = 0, log = 1, stop = SIGTERM, fds[PL_MAX_HELD], sfd, i;
    bool ready = true;
    struct pl_broker *b;
    char addr[108], *ld, *hp, **envp;
    size_t ne = 0;
    sigset_t mask;
    int status = 0;

    for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--lib") == 0 && i + 1 < argc)
            lib = argv[++i];
        else if (strcmp(argv[i], "--depth") == 0 && i + 1 < argc)
            depth = atoi(argv[++i]);
        else if (strcmp(argv[i], "--log") == 0 && i + 1 < argc)
            log = atoi(argv[++i]);
        else if (strcmp(argv[i], "--stop-signal") == 0 && i + 1 < argc)
            stop = atoi(argv[++i]);
        else if (strcmp(argv[i], "--no-ready") == 0)
            ready = false;
        else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc && nl < PL_MAX_HELD)
            listens[nl++] = argv[++i];
        else {
            fprintf(stderr, "usage: preload-host --lib PATH [--depth N] [--no-ready] [--log N] "
                            "[--listen SPEC]... -- CMD [ARGS...]\n");
            return 2;
        }
    }
    if (!lib || i + 1 >= argc)
        return 2;
    for (int k = 0; k < nl; k++) {
        fds[k] = open_listener(listens[k]);
        if (fds[k] < 0)
            return 1;
    }
    if (pl_broker_open(fds, (size_t)nl, &b, addr, sizeof addr) < 0) {
        fprintf(stderr, "host: broker: %s\n", strerror(errno));
        return 1;
    }
    {
        size_t n;
        const struct pl_sock *h = pl_broker_held(b, &n);
        for (size_t k = 0; k < n; k++) {
            char f[200];
            (void)pl_sock_format(&h[k], f, sizeof f);
            printf("listen %zu %s\n", k, f);
        }
    }
    /* {Pk} -> the port of socket k. */
    for (int k = i + 1; k < argc; k++) {
        char *at = strstr(argv[k], "{P");
        size_t n;
        const struct pl_sock *h = pl_broker_held(b, &n);
        if (!at || at[2] < '0' || at[2] > '9' || at[3] != '}' || (size_t)(at[2] - '0') >= n)
            continue;
        char *nv = malloc(strlen(argv[k]) + 8);
        if (!nv)
            return 1;
        sprintf(nv, "%.*s%u%s", (int)(at - argv[k]), argv[k], h[at[2] - '0'].port, at + 4);
        argv[k] = nv;
    }
    if (pl_broker_worker_env(b, lib, getenv("LD_PRELOAD"), depth, ready, log, stop, &ld, &hp) < 0) {
        fprintf(stderr, "host: cannot build the environment\n");
        return 1;
    }
    for (char **e = environ; *e; e++)
        ne++;
    envp = calloc(ne + 4, sizeof *envp);
    if (!envp)
        return 1;
    ne = 0;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "LD_PRELOAD=", 11) && strncmp(*e, "HANDOFF_PRELOAD=", 16))
            envp[ne++] = *e;
    envp[ne++] = ld;
    envp[ne++] = hp;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    (void)sigprocmask(SIG_BLOCK, &mask, NULL);
    sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    g_child = fork();
    if (g_child == 0) {
        sigset_t none;
        sigemptyset(&none);
        (void)sigprocmask(SIG_SETMASK, &none, NULL);
        pl_put_pid(hp + strlen(hp) - PL_PID_DIGITS, (long)getpid());
        environ = envp;
        execvp(argv[i + 1], argv + i + 1);
        fprintf(stderr, "host: exec %s: %s\n", argv[i + 1], strerror(errno));
        _exit(127);
    }
    printf("start %ld\n", (long)g_child);
    fflush(stdout);
    g_b = b;
    struct pl_broker_ops ops = {.owner = owner, .ready = ready_cb, .log = log_cb};
    for (;;) {
        struct pollfd p[2] = {{pl_broker_fd(b), POLLIN, 0}, {sfd, POLLIN, 0}};
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[0].revents)
            pl_broker_on_event(b, &ops);
        if (p[1].revents) {
            struct signalfd_siginfo si;
            bool done = false;
            while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
                    (void)kill(g_child, (int)si.ssi_signo);
            }
            /* Reap everything; the command's own status ends the run. */
            for (;;) {
                int st;
                pid_t w = waitpid(-1, &st, WNOHANG);
                if (w <= 0)
                    break;
                if (w == g_child) {
                    status = st;
                    done = true;
                }
            }
            if (done)
                break;
        }
    }
    /* Late requests (a server's child still binding) are not served. */
    pl_broker_close(b);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    printf("exit %d\n", code);
    fflush(stdout);
    return 0;
}

/*
 * spawn.c - starting workers and readiness checks.
 *
 * A worker gets the listening sockets at fds 3.. described twice, in the
 * two protocols unmodified servers speak: systemd's LISTEN_FDS/LISTEN_PID/
 * LISTEN_FDNAMES and Server::Starter's SERVER_STARTER_PORT. LISTEN_PID must
 * be the worker's own pid, so the parent builds the whole environment with
 * room for the digits and the child fills them in between fork() and
 * execve(), where only async-signal-safe calls are allowed.
 *
 * Every fd of the supervisor is close-on-exec; the child dup2()s exactly
 * the listeners into place (dup2 clears FD_CLOEXEC on the copy only).
 * Each child runs in its own process group, so that a terminal's Ctrl-C
 * reaches only the supervisor (which then stops everyone gracefully) and
 * so that SIGKILL can take down a worker together with its own children.
 */
#include "tool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

extern char **environ;

static sigset_t g_orig_mask;

void spawn_init(void)
{
    (void)sigprocmask(SIG_BLOCK, NULL, &g_orig_mask);
}

bool env_is_private(const char *kv)
{
    static const char *const names[] = {
        "LISTEN_FDS=",          "LISTEN_PID=",    "LISTEN_FDNAMES=", "LISTEN_PIDFDID=",
        "NOTIFY_SOCKET=",       "WATCHDOG_USEC=", "WATCHDOG_PID=",   "SERVER_STARTER_PORT=",
        "SERVER_STARTER_GENERATION=",
    };
    if (strncmp(kv, "HANDOFF_", 8) == 0)
        return true;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strncmp(kv, names[i], strlen(names[i])) == 0)
            return true;
    return false;
}

static bool executable_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* argv[0] resolved at every spawn, so a deploy that swaps a binary or a
 * symlink in PATH is honoured by the next generation. NULL with errno
 * ENOENT (not found) or ENOMEM. */
static char *resolve_exe(const char *a0)
{
    const char *path;
    char *buf;

    if (strchr(a0, '/')) {
        buf = strdup(a0);
        if (!buf)
            errno = ENOMEM;
        return buf;
    }
    path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchr(path, ':');
        size_t len = end ? (size_t)(end - path) : strlen(path);
        if (asprintf(&buf, "%.*s%s%s", (int)len, path, len ? "/" : "./", a0) < 0) {
            errno = ENOMEM;
            return NULL;
        }
        if (executable_file(buf))
            return buf;
        free(buf);
        path = end ? end + 1 : path + len;
    }
    errno = ENOENT;
    return NULL;
}

struct plan {
    char *exe;
    char *const *argv;
    char **envp;
    size_t nenv, cap;
    char *pid_digits;      /* inside the LISTEN_PID= entry, or NULL */
    int src[TOOL_MAX_LISTEN];
    int n;
    pid_t parent;
};

static void plan_free(struct plan *p)
{
    for (size_t i = 0; i < p->nenv; i++)
        free(p->envp[i]);
    free(p->envp);
    free(p->exe);
}

static int plan_env(struct plan *p, size_t extra)
{
    size_t n = 0;
    for (char **e = environ; e && *e; e++)
        n++;
    p->cap = n + extra + 1;
    p->envp = calloc(p->cap, sizeof *p->envp);
    if (!p->envp)
        return -ENOMEM;
    for (char **e = environ; e && *e; e++) {
        if (env_is_private(*e))
            continue;
        if (!(p->envp[p->nenv] = strdup(*e)))
            return -ENOMEM;
        p->nenv++;
    }
    return 0;
}

__attribute__((format(printf, 2, 3))) static int plan_push(struct plan *p, const char *fmt, ...)
{
    va_list ap;
    int r;

    if (p->nenv + 1 >= p->cap)
        return -ENOMEM;
    va_start(ap, fmt);
    r = vasprintf(&p->envp[p->nenv], fmt, ap);
    va_end(ap);
    if (r < 0) {
        p->envp[p->nenv] = NULL;
        return -ENOMEM;
    }
    p->nenv++;
    return 0;
}

/* Async-signal-safe decimal formatting into a slot of 20 digits. */
static void put_pid(char *dst, long v)
{
    char tmp[24];
    int i = 0;
    do {
        tmp[i++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    while (i > 0)
        *dst++ = tmp[--i];
    *dst = '\0';
}

/* Between fork and exec: async-signal-safe calls only. */
__attribute__((noreturn)) static void child_exec(struct plan *p, int errfd)
{
    int top = HANDOFF_LISTEN_FDS_START + p->n;
    int err;

    (void)setpgid(0, 0);
    /* If the supervisor dies (SIGKILL, crash), its workers are told to
     * stop instead of serving on unsupervised. */
    (void)prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != p->parent)
        _exit(127);
    /* Move every source above the target range first, so that the dup2()s
     * below cannot clobber a source not copied yet. */
    errfd = fcntl(errfd, F_DUPFD_CLOEXEC, top);
    if (errfd < 0)
        _exit(127);
    for (int i = 0; i < p->n; i++) {
        p->src[i] = fcntl(p->src[i], F_DUPFD_CLOEXEC, top);
        if (p->src[i] < 0)
            goto fail;
    }
    for (int i = 0; i < p->n; i++)
        if (dup2(p->src[i], HANDOFF_LISTEN_FDS_START + i) < 0)
            goto fail;
    /* Nothing else reaches the command, not even an fd the supervisor
     * itself inherited without O_CLOEXEC. */
    (void)syscall(SYS_close_range, (unsigned)top, ~0U, CLOSE_RANGE_CLOEXEC);
    if (p->pid_digits)
        put_pid(p->pid_digits, (long)getpid());
    (void)sigprocmask(SIG_SETMASK, &g_orig_mask, NULL);
    execve(p->exe, p->argv, p->envp);
fail:
    err = errno;
    (void)!write(errfd, &err, sizeof err);
    _exit(127);
}

static pid_t plan_run(struct plan *p, char *err, size_t errlen)
{
    int ep[2], e = 0;
    sigset_t all, old;
    ssize_t n;
    pid_t pid;

    if (pipe2(ep, O_CLOEXEC) < 0) {
        e = errno;
        (void)snprintf(err, errlen, "pipe: %s", strerror(e));
        return -e;
    }
    p->parent = getpid();
    /* Nothing may run in the child before its mask is restored. */
    sigfillset(&all);
    (void)sigprocmask(SIG_SETMASK, &all, &old);
    pid = fork();
    if (pid == 0)
        child_exec(p, ep[1]);
    e = errno;
    (void)sigprocmask(SIG_SETMASK, &old, NULL);
    (void)close(ep[1]);
    if (pid < 0) {
        (void)close(ep[0]);
        (void)snprintf(err, errlen, "fork: %s", strerror(e));
        return -e;
    }
    /* EOF: execve() worked (the pipe is close-on-exec). Four bytes: the
     * errno of the failed step; the child is reaped here. */
    do {
        n = read(ep[0], &e, sizeof e);
    } while (n < 0 && errno == EINTR);
    (void)close(ep[0]);
    if (n == (ssize_t)sizeof e) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        (void)snprintf(err, errlen, "cannot execute %s: %s", p->exe, strerror(e));
        return -e;
    }
    return pid;
}

pid_t spawn_worker(char *const *argv, const struct listener *ls, int n, const char *notify_path,
                   unsigned gen, char *err, size_t errlen)
{
    struct plan p;
    pid_t pid;
    size_t names = 32, starter = 32;
    char *buf = NULL, *q;

    memset(&p, 0, sizeof p);
    p.argv = argv;
    p.n = n;
    p.exe = resolve_exe(argv[0]);
    if (!p.exe) {
        int e = errno == ENOENT ? ENOENT : ENOMEM;
        if (e == ENOMEM)
            (void)snprintf(err, errlen, "out of memory");
        else
            (void)snprintf(err, errlen, "cannot find \"%s\" in PATH: %s", argv[0], strerror(e));
        return -e;
    }
    for (int i = 0; i < n; i++) {
        p.src[i] = ls[i].fd;
        names += strlen(ls[i].name) + 1;
        starter += strlen(ls[i].starter) + 8;
    }
    if (plan_env(&p, 9) < 0 || !(buf = malloc(names + starter)))
        goto oom;
    if (n > 0) {
        q = buf;
        for (int i = 0; i < n; i++)
            q += sprintf(q, "%s%s", i ? ":" : "", ls[i].name);
        if (plan_push(&p, "LISTEN_FDS=%d", n) < 0 || plan_push(&p, "LISTEN_FDNAMES=%s", buf) < 0 ||
            plan_push(&p, "LISTEN_PID=%s", "00000000000000000000") < 0)
            goto oom;
        p.pid_digits = p.envp[p.nenv - 1] + strlen("LISTEN_PID=");
    }
    /* Server::Starter's format: "host:port=fd;/path=fd" (empty if none). */
    q = buf;
    *q = '\0';
    for (int i = 0; i < n; i++)
        if (ls[i].starter[0])
            q += sprintf(q, "%s%s=%d", q > buf ? ";" : "", ls[i].starter, HANDOFF_LISTEN_FDS_START + i);
    /* The generation number twice: Server::Starter's variable, and
     * libhandoff's, so that a libhandoff server reports it (STATUS=). */
    if (plan_push(&p, "SERVER_STARTER_PORT=%s", buf) < 0 ||
        plan_push(&p, "SERVER_STARTER_GENERATION=%u", gen) < 0 ||
        plan_push(&p, "HANDOFF_GENERATION=%u", gen) < 0)
        goto oom;
    if (notify_path && plan_push(&p, "NOTIFY_SOCKET=%s", notify_path) < 0)
        goto oom;
    free(buf);
    pid = plan_run(&p, err, errlen);
    plan_free(&p);
    return pid;
oom:
    free(buf);
    plan_free(&p);
    (void)snprintf(err, errlen, "out of memory");
    return -ENOMEM;
}

pid_t spawn_check(const char *cmd, pid_t worker, unsigned gen, int slot)
{
    char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
    char err[256];
    struct plan p;
    pid_t pid;

    memset(&p, 0, sizeof p);
    p.argv = argv;
    p.exe = strdup("/bin/sh");
    if (!p.exe || plan_env(&p, 4) < 0 || plan_push(&p, "HANDOFF_PID=%ld", (long)worker) < 0 ||
        plan_push(&p, "HANDOFF_GENERATION=%u", gen) < 0 ||
        plan_push(&p, "HANDOFF_WORKER=%d", slot) < 0) {
        plan_free(&p);
        log_err("--ready-command: out of memory (tried again in --ready-interval)");
        return -ENOMEM;
    }
    pid = plan_run(&p, err, sizeof err);
    if (pid < 0)
        log_err("--ready-command: %s", err);
    plan_free(&p);
    return pid;
}

/*
 * spawn.c - the upgrade: fork+exec of the new binary with the registered
 * fds at 3.., the readiness handshake, and reaping.
 *
 * Between fork() and execve() the child runs only async-signal-safe code:
 * everything it needs (the environment, the path, the fd plan) is built by
 * the parent beforehand, and LISTEN_PID - which must be the child's own
 * pid - is written into a preallocated slot with a hand-rolled itoa.
 *
 * Handshake: the parent keeps one end of an AF_UNIX SOCK_SEQPACKET
 * socketpair with SO_PASSCRED; the child gets the other end as
 * HANDOFF_READY_FD and sends "READY=1". The kernel attaches the sender's
 * real pid to the message, so only the child itself (not a grandchild that
 * somehow got the fd, nor any unrelated process, which cannot reach an
 * unnamed socketpair) can declare readiness.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

extern char **environ;

static bool is_protocol_var(const char *kv)
{
    for (size_t i = 0; handoff__protocol_vars[i]; i++) {
        size_t n = strlen(handoff__protocol_vars[i]);
        if (strncmp(kv, handoff__protocol_vars[i], n) == 0 && kv[n] == '=')
            return true;
    }
    return false;
}

static bool executable_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* argv[0] resolved now, at upgrade time: a path with a slash is taken
 * relative to the start-up working directory (the child chdirs there);
 * a bare name is looked up in PATH. Symlinks are not resolved, so a
 * "current -> release-N" switch by a deploy is honoured. */
char *handoff__resolve_exe(handoff_t *h, int *err)
{
    const char *a0 = h->argv[0];
    const char *path;
    char *buf;

    *err = 0;
    if (strchr(a0, '/')) {
        if (a0[0] == '/')
            return strdup(a0);
        if (asprintf(&buf, "%s/%s", h->cwd, a0) < 0)
            return NULL;
        return buf;
    }
    path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchr(path, ':');
        size_t len = end ? (size_t)(end - path) : strlen(path);
        if (asprintf(&buf, "%.*s%s%s", (int)len, len ? path : "", len ? "/" : "", a0) < 0)
            return NULL;
        if (len == 0) {
            free(buf);
            if (asprintf(&buf, "%s/%s", h->cwd, a0) < 0)
                return NULL;
        }
        if (executable_file(buf))
            return buf;
        free(buf);
        path = end ? end + 1 : path + len;
    }
    *err = -ENOENT;
    return NULL;
}

/* Async-signal-safe decimal formatting. */
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

struct spawn_plan {
    char *exe;
    char **envp;
    size_t nenv;
    char *listen_pid;      /* the LISTEN_PID=... entry, digits filled in child */
    int *src;              /* registered fds, in order */
    size_t n;
};

static void plan_free(struct spawn_plan *p)
{
    if (p->envp) {
        for (size_t i = 0; i < p->nenv; i++)
            free(p->envp[i]);
        free(p->envp);
    }
    free(p->exe);
    free(p->src);
}

static int env_push(struct spawn_plan *p, char *kv)
{
    if (!kv)
        return -ENOMEM;
    p->envp[p->nenv++] = kv;
    return 0;
}

static int plan_build(handoff_t *h, struct spawn_plan *p)
{
    size_t nenv = 0, nameslen = 1;
    char *names, *kv;
    int err = 0;

    memset(p, 0, sizeof *p);
    p->exe = handoff__resolve_exe(h, &err);
    if (!p->exe)
        return handoff__fail(h, err ? err : -ENOMEM, "upgrade: cannot find \"%s\" in PATH",
                             h->argv[0]);
    p->n = h->nregs;
    p->src = calloc(p->n + 1, sizeof *p->src);
    for (char **e = environ; e && *e; e++)
        nenv++;
    p->envp = calloc(nenv + 8, sizeof *p->envp);
    if (!p->src || !p->envp)
        return -ENOMEM;
    for (char **e = environ; e && *e; e++)
        if (!is_protocol_var(*e) && env_push(p, strdup(*e)) < 0)
            return -ENOMEM;
    for (size_t i = 0; i < p->n; i++) {
        p->src[i] = h->regs[i].fd;
        nameslen += strlen(h->regs[i].name) + 1;
    }
    if (asprintf(&kv, "%s=%zu", HF_ENV_LISTEN_FDS, p->n) < 0 || env_push(p, kv) < 0)
        return -ENOMEM;
    if (p->n > 0) {
        names = malloc(nameslen + sizeof HF_ENV_LISTEN_FDNAMES);
        if (!names)
            return -ENOMEM;
        strcpy(names, HF_ENV_LISTEN_FDNAMES "=");
        for (size_t i = 0; i < p->n; i++) {
            if (i)
                strcat(names, ":");
            strcat(names, h->regs[i].name);
        }
        if (env_push(p, names) < 0)
            return -ENOMEM;
    }
    /* Room for any pid; the child writes its own. */
    if (asprintf(&kv, "%s=%s", HF_ENV_LISTEN_PID, "00000000000000000000") < 0 ||
        env_push(p, kv) < 0)
        return -ENOMEM;
    p->listen_pid = kv + strlen(HF_ENV_LISTEN_PID) + 1;
    if (asprintf(&kv, "%s=%zu", HF_ENV_READY_FD, HANDOFF_LISTEN_FDS_START + p->n) < 0 ||
        env_push(p, kv) < 0)
        return -ENOMEM;
    if (asprintf(&kv, "%s=%u", HF_ENV_GENERATION, h->generation + 1) < 0 || env_push(p, kv) < 0)
        return -ENOMEM;
    if (asprintf(&kv, "%s=%ld", HF_ENV_PARENT_PID, (long)getpid()) < 0 || env_push(p, kv) < 0)
        return -ENOMEM;
    if (h->notify_socket &&
        (asprintf(&kv, "%s=%s", HF_ENV_NOTIFY_SOCKET, h->notify_socket) < 0 ||
         env_push(p, kv) < 0))
        return -ENOMEM;
    p->envp[p->nenv] = NULL;
    return 0;
}

/* The child between fork and exec. Async-signal-safe calls only. */
__attribute__((noreturn)) static void child_exec(handoff_t *h, struct spawn_plan *p, int sock,
                                                 int errfd)
{
    int top = HANDOFF_LISTEN_FDS_START + (int)p->n + 1;
    int err;

    /* Dispositions as they were before handoff_new(): ignored stays
     * ignored, everything else is default (handlers die with exec anyway).
     * All signals are still blocked here, so nothing runs in between. */
    for (int s = 1; s < HF_NSIG; s++) {
        struct sigaction sa;
        if (s == SIGKILL || s == SIGSTOP)
            continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = h->orig_ignored[s] ? SIG_IGN : SIG_DFL;
        (void)sigaction(s, &sa, NULL);
    }
    /* Move every source above the target range first, so that the dup2()s
     * below cannot overwrite a source that has not been copied yet. */
    errfd = fcntl(errfd, F_DUPFD_CLOEXEC, top);
    if (errfd < 0)
        _exit(127);
    for (size_t i = 0; i < p->n; i++) {
        p->src[i] = fcntl(p->src[i], F_DUPFD_CLOEXEC, top);
        if (p->src[i] < 0)
            goto fail;
    }
    sock = fcntl(sock, F_DUPFD_CLOEXEC, top);
    if (sock < 0)
        goto fail;
    /* dup2() gives copies without FD_CLOEXEC: exactly the fds handed on. */
    for (size_t i = 0; i < p->n; i++)
        if (dup2(p->src[i], HANDOFF_LISTEN_FDS_START + (int)i) < 0)
            goto fail;
    if (dup2(sock, HANDOFF_LISTEN_FDS_START + (int)p->n) < 0)
        goto fail;
    /* Anything else the application left without O_CLOEXEC must not leak
     * into the new generation (Linux >= 5.11; harmless if unsupported). */
    (void)syscall(SYS_close_range, (unsigned)top, ~0U, CLOSE_RANGE_CLOEXEC);
    put_pid(p->listen_pid, (long)getpid());
    if (chdir(h->cwd) < 0)
        goto fail;
    (void)sigprocmask(SIG_SETMASK, &h->orig_mask, NULL);
    execve(p->exe, h->argv, p->envp);
fail:
    err = errno;
    (void)!write(errfd, &err, sizeof err);
    _exit(127);
}

int handoff__spawn(handoff_t *h)
{
    struct spawn_plan plan;
    int sv[2] = {-1, -1}, ep[2] = {-1, -1};
    int one = 1, r, err = 0;
    sigset_t all, old;
    pid_t pid;
    ssize_t n;

    r = plan_build(h, &plan);
    if (r < 0) {
        if (r == -ENOMEM)
            handoff__fail(h, r, "upgrade: out of memory");
        goto out;
    }
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0 ||
        pipe2(ep, O_CLOEXEC) < 0) {
        r = handoff__fail(h, -errno, "upgrade: socketpair/pipe: %s", strerror(errno));
        goto out;
    }
    if (setsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) {
        r = handoff__fail(h, -errno, "upgrade: SO_PASSCRED: %s", strerror(errno));
        goto out;
    }
    /* Block everything across fork so that no application handler runs in
     * the child before its dispositions are reset. */
    sigfillset(&all);
    (void)pthread_sigmask(SIG_SETMASK, &all, &old);
    h->child_start = handoff_now_usec();
    pid = fork();
    if (pid == 0)
        child_exec(h, &plan, sv[1], ep[1]);
    err = errno;
    (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        r = handoff__fail(h, -err, "upgrade: fork: %s", strerror(err));
        goto out;
    }
    (void)close(sv[1]);
    sv[1] = -1;
    (void)close(ep[1]);
    ep[1] = -1;
    /* EOF means execve() succeeded (the pipe is close-on-exec); four bytes
     * are the errno of the failed step. */
    do {
        n = read(ep[0], &err, sizeof err);
    } while (n < 0 && errno == EINTR);
    if (n == (ssize_t)sizeof err) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        r = handoff__fail(h, -err, "upgrade: cannot execute %s: %s", plan.exe, strerror(err));
        goto out;
    }
    h->child_pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (h->child_pidfd < 0) {
        r = -errno;
        (void)kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        r = handoff__fail(h, r, "upgrade: pidfd_open: %s (Linux >= 5.3 is required)",
                          strerror(-r));
        goto out;
    }
    h->child_pid = pid;
    h->child_sock = sv[0];
    sv[0] = -1;
    if ((r = handoff__epoll_add(h, h->child_sock, HF_TAG_CHILD_SOCK)) < 0 ||
        (r = handoff__epoll_add(h, h->child_pidfd, HF_TAG_CHILD_PIDFD)) < 0 ||
        (r = handoff__timer_arm(h, HF_TIMER_UPGRADE, h->upgrade_timeout)) < 0) {
        (void)handoff__child_reap(h, true, r, "the event loop could not watch it");
        goto out;
    }
    handoff__notify(h, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=Upgrading: generation %u starting (pid %ld)",
                    (unsigned long long)h->child_start, h->generation + 1, (long)pid);
    {
        handoff_event ev = {.type = HANDOFF_EVENT_UPGRADE_STARTED, .pid = pid};
        handoff__push_event(h, &ev, "generation %u starting: pid %ld, %s", h->generation + 1,
                            (long)pid, plan.exe);
    }
    handoff__log(h, HANDOFF_LOG_INFO, "upgrade: started generation %u as pid %ld (%s)",
                 h->generation + 1, (long)pid, plan.exe);
    r = 0;
out:
    for (int i = 0; i < 2; i++) {
        if (sv[i] >= 0)
            (void)close(sv[i]);
        if (ep[i] >= 0)
            (void)close(ep[i]);
    }
    plan_free(&plan);
    return r;
}

static void child_forget(handoff_t *h)
{
    handoff__epoll_del(h, h->child_sock);
    handoff__epoll_del(h, h->child_pidfd);
    if (h->child_sock >= 0)
        (void)close(h->child_sock);
    if (h->child_pidfd >= 0)
        (void)close(h->child_pidfd);
    h->child_sock = h->child_pidfd = -1;
    h->child_pid = 0;
    if (h->timer == HF_TIMER_UPGRADE)
        (void)handoff__timer_arm(h, HF_TIMER_NONE, 0);
}

static void describe_status(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        (void)snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        (void)snprintf(buf, len, "was killed by signal %d (%s)%s", WTERMSIG(status),
                       strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
    else
        (void)snprintf(buf, len, "ended with status 0x%x", (unsigned)status);
}

/* Ends an upgrade that failed: kills the child if asked, reaps it, reports
 * HANDOFF_EVENT_UPGRADE_FAILED and tells systemd the old generation is
 * still the one serving. Returns 1 if reaped, 0 if not exited yet. */
int handoff__child_reap(handoff_t *h, bool kill_first, int err, const char *why)
{
    handoff_event ev = {.type = HANDOFF_EVENT_UPGRADE_FAILED, .error = err};
    char st[128];
    pid_t pid = h->child_pid, w;
    int status = 0;

    if (pid <= 0)
        return 0;
    if (kill_first)
        (void)kill(pid, SIGKILL);
    do {
        w = waitpid(pid, &status, kill_first ? 0 : WNOHANG);
    } while (w < 0 && errno == EINTR);
    if (w == 0)
        return 0;
    ev.pid = pid;
    ev.status = status;
    ev.elapsed_usec = handoff_now_usec() - h->child_start;
    child_forget(h);
    if (w < 0)
        (void)snprintf(st, sizeof st, "its exit status is unknown (%s: reaped elsewhere?)",
                       strerror(errno));
    else
        describe_status(status, st, sizeof st);
    handoff__push_event(h, &ev, "generation %u (pid %ld) failed: %s; %s; still serving",
                        h->generation + 1, (long)pid, why ? why : "it exited before ready",
                        st);
    handoff__log(h, HANDOFF_LOG_ERR, "upgrade failed: generation %u (pid %ld): %s; %s",
                 h->generation + 1, (long)pid, why ? why : "it exited before ready", st);
    handoff__notify(h, "READY=1\nSTATUS=Upgrade failed (pid %ld %s); generation %u still serving",
                    (long)pid, st, h->generation);
    return 1;
}

static void handover(handoff_t *h)
{
    pid_t pid = h->child_pid;
    uint64_t elapsed = handoff_now_usec() - h->child_start;

    /* Keep the pidfd: the successor is our child until we exit, and if it
     * dies while we drain we must reap it. */
    h->succ_pid = pid;
    h->succ_pidfd = h->child_pidfd;
    h->child_pidfd = -1;
    handoff__epoll_del(h, h->succ_pidfd);
    (void)handoff__epoll_add(h, h->succ_pidfd, HF_TAG_SUCC_PIDFD);
    child_forget(h);
    h->handed_over = true;
    h->handover_at = handoff_now_usec();
    h->window_over = false;
    /* systemd first, then the pid file: whoever sees the new pid in the
     * pid file (and signals it) acts after systemd already knows it. */
    handoff__notify(h, "MAINPID=%ld\nREADY=1\nSTATUS=Generation %u (pid %ld) serving",
                    (long)pid, h->generation + 1, (long)pid);
    handoff__pidfile_update(h, pid);
    handoff__log(h, HANDOFF_LOG_INFO, "generation %u (pid %ld) ready in %llu ms; draining %lu connections",
                 h->generation + 1, (long)pid, (unsigned long long)(elapsed / 1000),
                 (unsigned long)atomic_load(&h->conns));
    handoff__begin_drain(h, HANDOFF_DRAIN_UPGRADE, pid);
    /* begin_drain pushed the DRAIN event; record the upgrade latency. */
    if (h->evlen > 0)
        h->evq[(h->evhead + h->evlen - 1) % HF_EVQ].elapsed_usec = elapsed;
}

int handoff__child_sock_read(handoff_t *h)
{
    char buf[64];
    union {
        struct cmsghdr hdr;
        char space[CMSG_SPACE(sizeof(struct ucred))];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf - 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl,
                         .msg_controllen = sizeof ctl};
    struct ucred cred = {0};
    bool have_cred = false;
    ssize_t n;

    do {
        n = recvmsg(h->child_sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN ? 0 : -errno;
    if (n == 0) {
        /* The child closed its end (it exited, or exec'd something that
         * dropped the fd): stop watching; its pidfd or the timeout will
         * finish the upgrade. */
        handoff__epoll_del(h, h->child_sock);
        return 0;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS &&
            c->cmsg_len == CMSG_LEN(sizeof cred)) {
            memcpy(&cred, CMSG_DATA(c), sizeof cred);
            have_cred = true;
        }
    }
    buf[n] = '\0';
    if (!have_cred || cred.pid != h->child_pid) {
        handoff__log(h, HANDOFF_LOG_WARNING,
                     "ignoring a readiness message from pid %ld (expected pid %ld)",
                     have_cred ? (long)cred.pid : -1L, (long)h->child_pid);
        return 0;
    }
    if (strcmp(buf, HF_READY_MSG) != 0) {
        handoff__log(h, HANDOFF_LOG_WARNING, "ignoring unknown handshake message from pid %ld",
                     (long)cred.pid);
        return 0;
    }
    handover(h);
    return 1;
}

void handoff__succ_reap(handoff_t *h)
{
    handoff_event ev = {.type = HANDOFF_EVENT_SUCCESSOR_EXITED};
    char st[128];
    int status = 0;
    pid_t w;

    if (h->succ_pid <= 0)
        return;
    do {
        w = waitpid(h->succ_pid, &status, WNOHANG);
    } while (w < 0 && errno == EINTR);
    if (w == 0)
        return;
    if (w < 0)
        (void)snprintf(st, sizeof st, "exited (status unknown: %s)", strerror(errno));
    else
        describe_status(status, st, sizeof st);
    ev.pid = h->succ_pid;
    ev.status = status;
    handoff__epoll_del(h, h->succ_pidfd);
    (void)close(h->succ_pidfd);
    h->succ_pidfd = -1;
    h->succ_pid = 0;
    handoff__log(h, HANDOFF_LOG_WARNING, "successor pid %ld %s while we were draining",
                 (long)ev.pid, st);
    if (h->handed_over && h->resume_window && !h->window_over && h->state == HF_DRAINING &&
        !h->stop_pending && handoff_now_usec() < h->handover_at + h->resume_window) {
        /* Rollback: the new version died right after taking over. We still
         * hold the same listening sockets, so take the service back. */
        h->state = HF_SERVING;
        h->handed_over = false;
        h->drain_delivered = false;
        h->term_count = 0;
        atomic_store(&h->draining, false);
        (void)handoff__timer_arm(h, HF_TIMER_NONE, 0);
        handoff__notify(h, "MAINPID=%ld\nREADY=1\nSTATUS=Successor pid %ld %s; generation %u serving again",
                        (long)getpid(), (long)ev.pid, st, h->generation);
        handoff__pidfile_update(h, getpid());
        ev.type = HANDOFF_EVENT_RESUME;
        handoff__log(h, HANDOFF_LOG_WARNING, "generation %u resumes serving", h->generation);
        handoff__push_event(h, &ev, "successor pid %ld %s; serving again", (long)ev.pid, st);
        return;
    }
    handoff__push_event(h, &ev, "successor pid %ld %s", (long)ev.pid, st);
}

int handoff__send_ready_to_parent(handoff_t *h)
{
    ssize_t n;

    /* The receiver has SO_PASSCRED, so the kernel attaches our verified
     * pid/uid/gid to this message. */
    do {
        n = send(h->ready_fd, HF_READY_MSG, sizeof HF_READY_MSG - 1, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    return n == (ssize_t)(sizeof HF_READY_MSG - 1) ? 0 : -EIO;
}

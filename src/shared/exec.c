/*
 * shared/exec.c - the exec plan (see exec.h). The child side, from fork()
 * to execve(), is child_exec(): async-signal-safe calls only.
 */
#include "shared/exec.h"
#include "shared/protocol.h"
#include "shared/trace.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define HF_NSIG 65 /* signals 1..64 */

void handoff__exec_init(struct handoff__exec *p, char *const *argv)
{
    memset(p, 0, sizeof *p);
    p->argv = argv;
    p->pidfd = -1;
    (void)pthread_sigmask(SIG_BLOCK, NULL, &p->mask);
    sigemptyset(&p->ignored);
}

void handoff__exec_free(struct handoff__exec *p)
{
    if (p->envp) {
        for (size_t i = 0; i < p->nenv; i++)
            free(p->envp[i]);
        free(p->envp);
    }
    free(p->exe);
    free(p->fds);
    p->envp = NULL;
    p->exe = NULL;
    p->fds = NULL;
    p->nenv = p->envcap = p->nfds = p->fdcap = 0;
    p->pid_slot = NULL;
}

static bool executable_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

int handoff__exec_resolve(struct handoff__exec *p, const char *cwd)
{
    const char *a0 = p->argv[0], *path;
    char *buf;

    free(p->exe);
    p->exe = NULL;
    if (strchr(a0, '/')) {
        if (a0[0] == '/' || !cwd)
            p->exe = strdup(a0);
        else if (asprintf(&p->exe, "%s/%s", cwd, a0) < 0)
            p->exe = NULL;
        return p->exe ? 0 : -ENOMEM;
    }
    path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchr(path, ':');
        size_t len = end ? (size_t)(end - path) : strlen(path);
        int n;
        if (len > 0)
            n = asprintf(&buf, "%.*s/%s", (int)len, path, a0);
        else
            n = asprintf(&buf, "%s/%s", cwd ? cwd : ".", a0);
        if (n < 0)
            return -ENOMEM;
        if (executable_file(buf)) {
            p->exe = buf;
            return 0;
        }
        free(buf);
        path = end ? end + 1 : path + len;
    }
    return -ENOENT;
}

/* Takes ownership of kv (NULL: -ENOMEM). */
static int env_push(struct handoff__exec *p, char *kv)
{
    if (!kv)
        return -ENOMEM;
    if (p->nenv + 1 >= p->envcap) {
        size_t cap = p->envcap ? p->envcap * 2 : 16;
        char **n = realloc(p->envp, cap * sizeof *n);
        if (!n) {
            free(kv);
            return -ENOMEM;
        }
        p->envp = n;
        p->envcap = cap;
    }
    p->envp[p->nenv++] = kv;
    p->envp[p->nenv] = NULL;
    return 0;
}

int handoff__exec_env_inherit(struct handoff__exec *p, char *const *env)
{
    size_t n = 0;

    for (char *const *e = env; e && *e; e++)
        n++;
    /* Room for the inherited entries and what callers usually add. */
    if (p->nenv + n + 9 > p->envcap) {
        char **grown = realloc(p->envp, (p->nenv + n + 9) * sizeof *grown);
        if (!grown)
            return -ENOMEM;
        p->envp = grown;
        p->envcap = p->nenv + n + 9;
    }
    for (char *const *e = env; e && *e; e++)
        if (!handoff__env_is_protocol(*e) && env_push(p, strdup(*e)) < 0)
            return -ENOMEM;
    return 0;
}

int handoff__exec_env_add(struct handoff__exec *p, const char *fmt, ...)
{
    va_list ap;
    char *kv;
    int r;

    va_start(ap, fmt);
    r = vasprintf(&kv, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized): va_start above */
    va_end(ap);
    return env_push(p, r < 0 ? NULL : kv);
}

int handoff__exec_env_listen(struct handoff__exec *p, char *const *names, size_t n)
{
    size_t len = sizeof HF_ENV_LISTEN_FDNAMES + 1;
    char *kv, *q;
    int r;

    if ((r = handoff__exec_env_add(p, "%s=%zu", HF_ENV_LISTEN_FDS, n)) < 0)
        return r;
    if (n > 0) {
        for (size_t i = 0; i < n; i++)
            len += strlen(names[i]) + 1;
        kv = malloc(len);
        if (!kv)
            return -ENOMEM;
        q = kv + sprintf(kv, "%s=", HF_ENV_LISTEN_FDNAMES);
        for (size_t i = 0; i < n; i++) {
            size_t l = strlen(names[i]);
            if (i)
                *q++ = ':';
            memcpy(q, names[i], l);
            q += l;
        }
        *q = '\0';
        if ((r = env_push(p, kv)) < 0)
            return r;
    }
    /* Room for any pid; the child writes its own. */
    if ((r = handoff__exec_env_add(p, "%s=%s", HF_ENV_LISTEN_PID, "00000000000000000000")) < 0)
        return r;
    p->pid_slot = p->envp[p->nenv - 1] + sizeof HF_ENV_LISTEN_PID;
    return 0;
}

int handoff__exec_fd(struct handoff__exec *p, int fd)
{
    if (p->nfds == p->fdcap) {
        size_t cap = p->fdcap ? p->fdcap * 2 : 8;
        int *n = realloc(p->fds, cap * sizeof *n);
        if (!n)
            return -ENOMEM;
        p->fds = n;
        p->fdcap = cap;
    }
    p->fds[p->nfds++] = fd;
    return 0;
}

void handoff__put_pid(char *dst, long v)
{
    char tmp[24];
    int i = 0;

    do {
        tmp[i++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0 && i < 20);
    while (i > 0)
        *dst++ = tmp[--i];
    *dst = '\0';
}

/* The head of a getdents64 record. */
struct hf_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

static int cloexec_fd(int fd)
{
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0)
        return errno == EBADF ? 0 : -errno;
    if (!(fl & FD_CLOEXEC) && fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0)
        return -errno;
    return 0;
}

int handoff__cloexec_from(int from)
{
    union {
        struct hf_dirent64 d;
        char buf[4096];
    } u;
    struct rlimit rl;
    long n;
    int dfd, r = 0;

    if (syscall(SYS_close_range, (unsigned)from, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
        return 0;
    /* Linux before 5.11 (ENOSYS, or EINVAL for the flag), or a seccomp
     * filter: mark what is open, as listed by /proc/self/fd, read with
     * the raw system call (no allocation, no opendir). */
    dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        while (r == 0 && (n = syscall(SYS_getdents64, dfd, u.buf, sizeof u.buf)) > 0) {
            for (long off = 0; off < n;) {
                const struct hf_dirent64 *d = (const void *)(u.buf + off);
                int fd = 0, digits = 0;
                for (const char *c = d->d_name; *c >= '0' && *c <= '9' && digits < 10; c++, digits++)
                    fd = fd * 10 + (*c - '0');
                if (digits > 0 && d->d_name[digits] == '\0' && fd >= from && fd != dfd)
                    r = cloexec_fd(fd);
                off += d->d_reclen;
            }
        }
        if (r == 0 && n < 0)
            r = -errno;
        (void)close(dfd);
        return r;
    }
    /* No /proc either: every fd number up to the limit (fds above a
     * lowered soft limit can exist, hence the hard one, bounded by the
     * kernel's default fs.nr_open). */
    if (syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, &rl) < 0)
        return -errno;
    rlim_t top = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (1u << 20) ? (1u << 20) : rl.rlim_max;
    for (rlim_t fd = (rlim_t)from; fd < top && r == 0; fd++)
        r = cloexec_fd((int)fd);
    return r;
}

/* What the child gets. The plan is read only: with the vfork-style start
 * the child shares our memory, so whatever it writes we see. */
struct child_arg {
    const struct handoff__exec *p;
    int *moved; /* nfds slots the child may write (the plan's fds stay) */
    int errfd;  /* write end of the error pipe (close-on-exec) */
    bool shared_vm;
};

/* The child between fork and exec. Async-signal-safe calls only (and with
 * the vfork-style start, nothing that takes a lock or allocates: another
 * thread of ours may hold it). A failed step's errno goes through errfd. */
__attribute__((noreturn)) static void child_exec(const struct child_arg *a)
{
    const struct handoff__exec *p = a->p;
    int top = 3 + (int)p->nfds;
    int err, errfd;

    if (p->flags & HANDOFF__EXEC_SETPGID)
        (void)setpgid(0, 0);
    if (p->flags & HANDOFF__EXEC_PDEATHSIG) {
        (void)prctl(PR_SET_PDEATHSIG, p->pdeathsig);
        if (getppid() != p->parent)
            _exit(127);
    }
    /* Every signal is still blocked here, so nothing runs in between;
     * handlers would not survive exec anyway. */
    if (p->flags & HANDOFF__EXEC_RESET_SIGNALS) {
        for (int s = 1; s < HF_NSIG; s++) {
            struct sigaction sa;
            if (s == SIGKILL || s == SIGSTOP)
                continue;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = sigismember(&p->ignored, s) == 1 ? SIG_IGN : SIG_DFL;
            (void)sigaction(s, &sa, NULL);
        }
    } else if (a->shared_vm) {
        /* A signal that p->mask unblocks could arrive between the unblock
         * and execve(): an application handler must not run then in a
         * child that shares our memory. Such signals get SIG_DFL (handlers
         * do not survive execve() anyway; SIG_IGN does and stays). */
        for (int s = 1; s < HF_NSIG; s++) {
            struct sigaction sa;
            if (s == SIGKILL || s == SIGSTOP || sigismember(&p->mask, s) == 1 ||
                sigaction(s, NULL, &sa) < 0 || sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN)
                continue;
            memset(&sa, 0, sizeof sa);
            sa.sa_handler = SIG_DFL;
            (void)sigaction(s, &sa, NULL);
        }
    }
    /* Move every source above the target range first, so that the dup2()s
     * below cannot overwrite a source that has not been copied yet. */
    errfd = fcntl(a->errfd, F_DUPFD_CLOEXEC, top);
    if (errfd < 0)
        _exit(127);
    for (size_t i = 0; i < p->nfds; i++) {
        a->moved[i] = fcntl(p->fds[i], F_DUPFD_CLOEXEC, top);
        if (a->moved[i] < 0)
            goto fail;
    }
    /* dup2() gives copies without FD_CLOEXEC: exactly the fds handed on. */
    for (size_t i = 0; i < p->nfds; i++)
        if (dup2(a->moved[i], 3 + (int)i) < 0)
            goto fail;
    /* Anything else the process left without O_CLOEXEC must not leak into
     * the program: if that cannot be ensured, the start fails. */
    if ((err = handoff__cloexec_from(top)) < 0) {
        errno = -err;
        goto fail;
    }
    /* The slot is in the plan's memory: with the vfork-style start the
     * parent's copy shows the child's pid afterwards, which is harmless. */
    if (p->pid_slot)
        handoff__put_pid(p->pid_slot, (long)getpid());
    if (p->cwd && chdir(p->cwd) < 0)
        goto fail;
    (void)sigprocmask(SIG_SETMASK, &p->mask, NULL);
    execve(p->exe, p->argv, p->envp);
fail:
    err = errno ? errno : EIO;
    (void)!write(errfd, &err, sizeof err);
    _exit(127);
}

/* Sanitizer runtimes keep state in memory the vfork-style child would
 * share with us (their interceptors and stack poisoning): fork there. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define HF_SPAWN_VFORK 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define HF_SPAWN_VFORK 0
#endif
#endif
#ifndef HF_SPAWN_VFORK
#define HF_SPAWN_VFORK 1
#endif

/* The vfork-style child's stack: child_exec() needs about 5 KiB (the
 * getdents64 buffer of the close-on-exec fallback is 4 KiB). */
#define HF_CHILD_STACK ((size_t)64 * 1024)

static int vfork_child(void *arg)
{
    child_exec(arg);
}

/* clone(CLONE_VM | CLONE_VFORK), as posix_spawn() does: the child borrows
 * our address space until it execs, so nothing is copied - neither the
 * page tables at fork() nor their teardown at execve(), which in a large
 * or threaded server cost milliseconds (bench/upgrade-latency.py). Only
 * this thread waits meanwhile; the others run on, and the child touches
 * nothing of ours but the plan (read only), its own stack and the moved
 * slots. With pidfd, CLONE_PIDFD gives the pidfd with the pid, before
 * anyone could reap the child. Returns the pid or -errno. */
static pid_t spawn_vfork(struct child_arg *a, int *pidfd)
{
    long pg = sysconf(_SC_PAGESIZE);
    size_t guard = pg > 0 ? (size_t)pg : 4096, len = HF_CHILD_STACK + guard;
    char *stack;
    pid_t pid;
    int e;

    stack = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1,
                 0);
    if (stack == MAP_FAILED)
        return -errno;
    /* The stack grows down: a guard page below it. */
    (void)mprotect(stack, guard, PROT_NONE);
    a->shared_vm = true;
    pid = clone(vfork_child, stack + len, CLONE_VM | CLONE_VFORK | SIGCHLD | (pidfd ? CLONE_PIDFD : 0),
                a, pidfd);
    e = errno;
    (void)munmap(stack, len);
    return pid < 0 ? -e : pid;
}

static pid_t spawn_fork(struct child_arg *a, int *pidfd, int *pidfd_err)
{
    pid_t pid;

    a->shared_vm = false;
    pid = fork();
    if (pid == 0)
        child_exec(a);
    if (pid < 0)
        return -errno;
    /* Before anyone could reap it, unless another thread reaps every
     * child (then ESRCH once it exited). */
    if (pidfd && (*pidfd = (int)syscall(SYS_pidfd_open, pid, 0)) < 0)
        *pidfd_err = errno;
    return pid;
}

pid_t handoff__exec_start(struct handoff__exec *p)
{
    struct child_arg a = {.p = p};
    int ep[2], err = 0, pidfd = -1, pidfd_err = 0;
    int *want = (p->flags & HANDOFF__EXEC_PIDFD) ? &pidfd : NULL;
    sigset_t all, old;
    ssize_t n;
    pid_t pid;

    p->pidfd = -1;
    if (!p->exe || !p->argv)
        return -EINVAL;
    if (!p->envp) {
        /* An empty environment still needs its terminator. */
        p->envp = calloc(1, sizeof *p->envp);
        if (!p->envp)
            return -ENOMEM;
        p->envcap = 1;
    }
    a.moved = malloc((p->nfds ? p->nfds : 1) * sizeof *a.moved);
    if (!a.moved)
        return -ENOMEM;
    /* The error pipe also serves the vfork-style start: it is the one
     * channel that works when an emulator (valgrind) turns it into a
     * fork, and it costs microseconds. */
    if (pipe2(ep, O_CLOEXEC) < 0) {
        free(a.moved);
        return -errno;
    }
    a.errfd = ep[1];
    p->parent = getpid();
    /* Block everything across the start so that no application handler
     * runs in the child before its dispositions and mask are set. */
    sigfillset(&all);
    (void)pthread_sigmask(SIG_SETMASK, &all, &old);
#ifdef HANDOFF_TRACE
    /* The "before" side of bench/upgrade-latency.py --breakdown. */
    if (getenv("HFTRACE_FORK"))
        p->flags |= HANDOFF__EXEC_FORK;
#endif
    handoff__trace("P3a-fork");
    pid = -ENOSYS;
    if (HF_SPAWN_VFORK && !(p->flags & HANDOFF__EXEC_FORK))
        pid = spawn_vfork(&a, want);
    /* No vfork-style start here (a seccomp filter, an emulator refusing
     * the flags), or forced: fork. */
    if (pid == -ENOSYS || pid == -EINVAL || pid == -EPERM)
        pid = spawn_fork(&a, want, &pidfd_err);
    handoff__trace("P3b-forked");
    (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
    free(a.moved);
    (void)close(ep[1]);
    if (pid < 0) {
        (void)close(ep[0]);
        return pid;
    }
    /* EOF once execve() succeeded (the pipe is close-on-exec), or the
     * errno of the step that failed. */
    do {
        n = read(ep[0], &err, sizeof err);
    } while (n < 0 && errno == EINTR);
    (void)close(ep[0]);
    handoff__trace("P3c-exec-ok");
    if (n == (ssize_t)sizeof err || (want && pidfd < 0)) {
        if (n != (ssize_t)sizeof err) {
            /* No pidfd (EMFILE, ...): the start fails. ESRCH: it died at
             * once and another thread reaped it. */
            err = pidfd_err ? pidfd_err : EBADF;
            if (err != ESRCH)
                (void)kill(pid, SIGKILL);
        }
        if (err != ESRCH)
            while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
            }
        if (pidfd >= 0)
            (void)close(pidfd);
        return -(err > 0 ? err : EIO);
    }
    p->pidfd = pidfd;
    return pid;
}

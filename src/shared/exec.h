/*
 * shared/exec.h - the exec plan: starting a program with fds at 3.., an
 * environment built in advance and LISTEN_PID written by the child itself.
 *
 * Everything the child needs (the resolved path, argv, the whole
 * environment, the fds to place) is prepared by the parent; between fork()
 * and execve() the child runs only async-signal-safe code. LISTEN_PID must
 * be the child's own pid, which the parent cannot know, so the parent
 * reserves a slot of 20 digits in the LISTEN_PID= entry and the child
 * fills it with handoff__put_pid().
 *
 * The child lays the fds out without clobbering one with another: every
 * source is first moved above the target range with F_DUPFD_CLOEXEC, then
 * dup2()ed into place (dup2 gives a copy without FD_CLOEXEC, so exactly
 * these fds survive execve()). Every other fd is marked close-on-exec
 * (close_range(CLOSE_RANGE_CLOEXEC), or one by one where the kernel lacks
 * it), so an fd the process left inheritable never reaches the program.
 *
 * Used by the library's upgrade (src/spawn.c) and by `handoff run` for its
 * workers and readiness checks.
 */
#ifndef HANDOFF_SHARED_EXEC_H
#define HANDOFF_SHARED_EXEC_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

enum handoff__exec_flags {
    /* Reset every signal disposition before exec: the signals in
     * plan.ignored to SIG_IGN, all others to SIG_DFL. */
    HANDOFF__EXEC_RESET_SIGNALS = 1u << 0,
    /* setpgid(0, 0): the child leads its own process group. */
    HANDOFF__EXEC_SETPGID = 1u << 1,
    /* prctl(PR_SET_PDEATHSIG, plan.pdeathsig), and give up (exit 127) if
     * the parent already died before that. */
    HANDOFF__EXEC_PDEATHSIG = 1u << 2,
    /* Also return the child's pidfd in plan.pidfd (the caller owns it); a
     * start that cannot have one fails. */
    HANDOFF__EXEC_PIDFD = 1u << 3,
    /* fork() even where the vfork-style start is available (tests, and
     * the "before" side of bench/upgrade-latency.py). */
    HANDOFF__EXEC_FORK = 1u << 4
};

struct handoff__exec {
    char *exe;              /* resolved path (owned) */
    char *const *argv;      /* borrowed; must outlive handoff__exec_start() */
    char **envp;            /* owned, NULL-terminated */
    size_t nenv, envcap;
    char *pid_slot;         /* inside the LISTEN_PID= entry, or NULL */
    int *fds;               /* owned array of borrowed fds: fds[i] goes to 3+i */
    size_t nfds, fdcap;
    const char *cwd;        /* chdir() here before exec; NULL: stay */
    sigset_t mask;          /* the signal mask the program starts with */
    sigset_t ignored;       /* with HANDOFF__EXEC_RESET_SIGNALS */
    unsigned flags;         /* enum handoff__exec_flags */
    int pdeathsig;          /* with HANDOFF__EXEC_PDEATHSIG */
    pid_t parent;           /* set by handoff__exec_start() */
    int pidfd;              /* set by handoff__exec_start(): with
                             * HANDOFF__EXEC_PIDFD the child's pidfd, else -1 */
};

/* Zeroes *p, takes argv (borrowed), and sets mask to the calling thread's
 * current mask and ignored to empty. */
void handoff__exec_init(struct handoff__exec *p, char *const *argv);

/* Frees what the plan owns; the fds and argv stay the caller's. */
void handoff__exec_free(struct handoff__exec *p);

/* Resolves argv[0] into p->exe, now: a name with a slash is taken as is,
 * or relative to cwd when it is relative and cwd is not NULL; a bare name
 * is looked up in $PATH (default "/usr/local/bin:/usr/bin:/bin"; an empty
 * entry means cwd, or "."). Symlinks are not resolved, so a "current ->
 * release-N" link swapped by a deploy is honoured. Returns 0, -ENOENT (not
 * found in PATH) or -ENOMEM. */
int handoff__exec_resolve(struct handoff__exec *p, const char *cwd);

/* Copies env (for example environ) into the plan, leaving out every
 * protocol variable (shared/protocol.h). Returns 0 or -ENOMEM. */
int handoff__exec_env_inherit(struct handoff__exec *p, char *const *env);

/* Appends one "NAME=value" entry, printf-style. 0 or -ENOMEM. */
int handoff__exec_env_add(struct handoff__exec *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Appends LISTEN_FDS=n, LISTEN_FDNAMES=names[0]:names[1]:... (if n > 0)
 * and LISTEN_PID with a slot the child fills with its own pid.
 * 0 or -ENOMEM. */
int handoff__exec_env_listen(struct handoff__exec *p, char *const *names, size_t n);

/* Appends fd to the fds placed at 3, 4, ... in the child, in call order.
 * 0 or -ENOMEM. */
int handoff__exec_fd(struct handoff__exec *p, int fd);

/* Starts the plan: clone(CLONE_VM | CLONE_VFORK), as posix_spawn() does
 * (the child borrows our memory until it execs and this thread waits for
 * that, so no page table is copied), or fork() in sanitizer builds, with
 * HANDOFF__EXEC_FORK, or where the clone is refused (seccomp, emulators).
 * All signals are blocked in the calling thread meanwhile, so that no
 * handler of the application runs in the child; in the vfork-style child
 * a signal that plan.mask unblocks and that has a handler is set to
 * SIG_DFL first (handlers do not survive execve() anyway). Returns the
 * child's pid once execve() succeeded (with HANDOFF__EXEC_PIDFD its pidfd
 * in p->pidfd), or -errno of the step that failed (the child has then been
 * reaped): -EAGAIN (fork), execve()'s -ENOENT, -EACCES, -ENOEXEC, ..., or
 * with HANDOFF__EXEC_PIDFD -EMFILE and the like (no pidfd; the child was
 * killed and reaped) or -ESRCH (it exited at once and another thread
 * reaped it). Thread-safe: yes, if p is not shared. */
pid_t handoff__exec_start(struct handoff__exec *p);

/* Async-signal-safe decimal formatting of v >= 0 into dst (at most 20
 * digits and a NUL). */
void handoff__put_pid(char *dst, long v);

/* Marks every fd >= from close-on-exec: close_range(CLOSE_RANGE_CLOEXEC)
 * (Linux >= 5.11), else one by one (those listed in /proc/self/fd, or
 * without /proc every number up to RLIMIT_NOFILE's hard limit, at most
 * 2^20). Async-signal-safe: yes (raw system calls only, no allocation).
 * Returns 0 or -errno; the child of handoff__exec_start() fails the start
 * with that errno rather than let an fd leak. */
int handoff__cloexec_from(int from);

#endif

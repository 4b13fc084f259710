/*
 * supervisor.c - `handoff run`: the stable process that owns the sockets
 * and runs the server command as generations.
 *
 * Model. There are --workers slots. Each slot has a current process
 * (`cur`, serving or starting after a crash) and, during a reload, a next
 * one (`next`). A reload starts generation N+1 in every slot (or, with
 * --rolling, in one slot at a time); a slot commits when its next process
 * is ready: next becomes cur and the old cur gets the stop signal and
 * drains until --drain-timeout, then SIGKILL to its process group. A next
 * process that exits or times out before it is ready fails the reload: the
 * new generation is killed and reaped, the current one never stopped
 * serving, and `handoff reload` reports why.
 *
 * Every process the supervisor starts leads its own process group (pgid =
 * pid). Once a leader has exited, what is left of its group (a server's
 * own workers, orphaned) is tracked until it is gone, stopped within the
 * drain timeout like any draining process.
 *
 * The supervisor is a child subreaper: it reaps every orphan below it with
 * a waitpid(-1) loop on SIGCHLD, so it is a good PID 1 in a container.
 *
 * All waiting is on one epoll set: a signalfd, the notify socket, the
 * control socket; timeouts come from the earliest deadline of the state.
 */
#include "supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define TAG_SIGNAL ((uint64_t)1 << 32)
#define TAG_NOTIFY ((uint64_t)2 << 32)
#define TAG_CTL_LISTEN ((uint64_t)3 << 32)
#define TAG_CTL_CONN ((uint64_t)4 << 32)

struct supervisor S;

uint64_t deadline_after(uint64_t now, uint64_t timeout)
{
    return timeout == HANDOFF_NO_TIMEOUT || now > UINT64_MAX - timeout ? UINT64_MAX : now + timeout;
}

struct gen_info *gen_info(unsigned id)
{
    return &S.gens[id % NGEN];
}

const char *dur(uint64_t usec, char *buf, size_t len)
{
    return fmt_duration(usec, buf, len);
}

/* To systemd's NOTIFY_SOCKET, never blocking. The first failure of a
 * kind is a warning; repeats (e.g. WATCHDOG=1) are logged with -v only. */
void notify_systemd(const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    int r;

    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof msg, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
    va_end(ap);
    r = sd_send(msg);
    if (r < 0) {
        S.sd_lost++;
        if (r != S.sd_err)
            log_warn("sd_notify to %s failed: %s%s; the supervisor carries on (repeats are logged with -v)",
                     S.sd_path, strerror(-r), r == -EAGAIN ? " (its receiver is not reading)" : "");
        else
            log_debug("sd_notify to %s failed: %s", S.sd_path, strerror(-r));
        S.sd_err = r;
    } else if (r > 0 && S.sd_err) {
        log_info("sd_notify to %s works again (%u message%s lost)", S.sd_path, S.sd_lost,
                 S.sd_lost == 1 ? "" : "s");
        S.sd_err = 0;
        S.sd_lost = 0;
    }
}

/* ---- the process table ---- */

struct proc *proc_add(int kind, pid_t pid, unsigned gen, int slot)
{
    struct proc *p;

    if (S.nprocs == S.cap) {
        size_t cap = S.cap ? S.cap * 2 : 16;
        struct proc **n = realloc(S.procs, cap * sizeof(struct proc *));
        if (!n)
            return NULL;
        S.procs = n;
        S.cap = cap;
    }
    p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->kind = kind;
    p->pid = pid;
    p->gen = gen;
    p->slot = slot;
    p->alive = true;
    p->started = handoff_now_usec();
    p->deadline = UINT64_MAX;
    S.procs[S.nprocs++] = p;
    return p;
}

static void proc_remove(struct proc *p)
{
    for (size_t i = 0; i < S.nprocs; i++) {
        if (S.procs[i] == p) {
            S.procs[i] = S.procs[--S.nprocs];
            break;
        }
    }
    for (size_t i = 0; i < S.nprocs; i++)
        if (S.procs[i]->owner == p)
            S.procs[i]->owner = NULL;
    free(p);
}

static struct proc *proc_by_pid(pid_t pid)
{
    for (size_t i = 0; i < S.nprocs; i++)
        if (S.procs[i]->alive && S.procs[i]->pid == pid)
            return S.procs[i];
    return NULL;
}

static bool group_alive(pid_t pgid)
{
    return kill(-pgid, 0) == 0 || errno == EPERM;
}

void kill_check(struct proc *p)
{
    if (p->check) {
        (void)kill(-p->check->pid, SIGKILL);
        p->check->owner = NULL;
        p->check = NULL;
    }
}

void proc_stop(struct proc *p, uint64_t now)
{
    if (p->state != PS_STARTING && p->state != PS_READY)
        return;
    kill_check(p);
    (void)kill(p->pid, S.cfg->stop_signal);
    p->state = PS_STOPPING;
    p->stop_at = now;
    p->deadline = deadline_after(now, S.cfg->drain_timeout);
}

void proc_kill(struct proc *p)
{
    p->killed = true;
    kill_check(p);
    (void)kill(-p->pid, SIGKILL);
    if (p->alive)
        (void)kill(p->pid, SIGKILL); /* in case it left its group */
    if (p->state != PS_GONE)
        p->state = PS_KILLED;
    p->deadline = UINT64_MAX;
}

const char *wname(const struct proc *p, char *buf, size_t len)
{
    if (S.cfg->workers > 1)
        (void)snprintf(buf, len, "generation %u worker %d (pid %ld)", p->gen, p->slot, (long)p->pid);
    else
        (void)snprintf(buf, len, "generation %u (pid %ld)", p->gen, (long)p->pid);
    return buf;
}

/* The same without the generation, for messages that already name it. */
const char *wshort(const struct proc *p, char *buf, size_t len)
{
    if (S.cfg->workers > 1)
        (void)snprintf(buf, len, "worker %d (pid %ld)", p->slot, (long)p->pid);
    else
        (void)snprintf(buf, len, "pid %ld", (long)p->pid);
    return buf;
}

/* ---- starting workers ---- */

struct proc *start_worker(int slot, unsigned gen, char *err, size_t errlen)
{
    uint64_t now = handoff_now_usec();
    pid_t pid = spawn_worker(S.cfg->argv, S.ls, S.nls, S.notify.path, gen, err, errlen);
    struct proc *p;

    if (pid < 0)
        return NULL;
    p = proc_add(PK_WORKER, pid, gen, slot);
    if (!p) {
        (void)kill(-pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        (void)snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->started = now;
    p->state = PS_STARTING;
    p->deadline = now + S.cfg->ready_timeout;
    if (S.cfg->ready_mode == READY_DELAY)
        p->next_check = now + S.cfg->ready_delay;
    else if (S.cfg->ready_mode == READY_COMMAND)
        p->next_check = now + S.cfg->ready_interval;
    log_debug("started generation %u worker %d: pid %ld", gen, slot, (long)pid);
    return p;
}

static void schedule_respawn(struct slot *s, unsigned gen, uint64_t now)
{
    uint64_t delay = s->backoff;

    s->backoff = s->backoff * 2 > S.cfg->backoff_max ? S.cfg->backoff_max : s->backoff * 2;
    s->streak++;
    s->restarts++;
    s->respawn_at = now + delay;
    s->respawn_gen = gen;
}

static void respawn(int i, uint64_t now)
{
    struct slot *s = &S.slots[i];
    char err[200];

    s->respawn_at = 0;
    s->cur = start_worker(i, s->respawn_gen, err, sizeof err);
    if (!s->cur) {
        char d[32];
        (void)snprintf(s->last_failure, sizeof s->last_failure, "%s", err);
        schedule_respawn(s, s->respawn_gen, now);
        log_err("generation %u worker %d: %s; next try in %s", s->respawn_gen, i, err,
                dur(s->respawn_at - now, d, sizeof d));
    }
}

bool all_cur_ready(void)
{
    for (int i = 0; i < S.cfg->workers; i++)
        if (!S.slots[i].cur || S.slots[i].cur->state != PS_READY)
            return false;
    return true;
}


/* ---- exits ---- */

static void on_worker_crash(struct proc *p, int status, uint64_t now)
{
    struct slot *s = &S.slots[p->slot];
    char st[96], d[32], d2[32], nm[96];
    uint64_t up = now - p->started;
    bool started = p->state == PS_READY;

    s->cur = NULL;
    if (up >= S.cfg->backoff_reset) {
        s->streak = 0;
        s->backoff = S.cfg->backoff_min;
    }
    schedule_respawn(s, p->gen, now);
    (void)snprintf(s->last_failure, sizeof s->last_failure, "pid %ld %s after %s%s", (long)p->pid,
                   describe_status(status, st, sizeof st), dur(up, d, sizeof d),
                   started ? "" : ", before it was ready");
    (void)snprintf(S.last_failure, sizeof S.last_failure, "generation %u worker %d: %s", p->gen,
                   p->slot, s->last_failure);
    log_warn("%s %s after %s%s; restart %u in %s%s", wname(p, nm, sizeof nm), st, d,
             started ? "" : " (never ready)", s->restarts, dur(s->respawn_at - now, d2, sizeof d2),
             s->streak >= 3 ? " (crash loop)" : "");
    if (S.ready_sent)
        notify_systemd("STATUS=worker %d %s; restart %u in %s", p->slot, st, s->restarts, d2);
}

static void on_proc_exit(struct proc *p, int status, uint64_t now)
{
    char st[96], d[32], nm[96];

    p->alive = false;
    describe_status(status, st, sizeof st);
    if (p->kind == PK_CHECK) {
        struct proc *w = p->owner;
        if (w) {
            w->check = NULL;
            if (w->state == PS_STARTING) {
                if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
                    char how[64];
                    (void)snprintf(how, sizeof how, "--ready-command succeeded (try %u)", w->checks);
                    proc_ready(w, now, how);
                } else {
                    w->next_check = now + S.cfg->ready_interval;
                    log_debug("%s: --ready-command %s (try %u)", wname(w, nm, sizeof nm), st, w->checks);
                }
            }
        }
        (void)kill(-p->pid, SIGKILL);
        proc_remove(p);
        return;
    }
    struct slot *s = &S.slots[p->slot];
    if (p->counts && status_exit_code(status) != 0 && S.exit_code == 0)
        S.exit_code = status_exit_code(status);
    if (p->failing) {
        log_debug("%s %s (killed: its reload failed)", wname(p, nm, sizeof nm), st);
        if (S.failing > 0 && --S.failing == 0)
            reload_finish(false, S.fail_msg);
    } else if (s->next == p) {
        reload_fail("%s %s after %s, before it was ready", wshort(p, nm, sizeof nm), st,
                    dur(now - p->started, d, sizeof d));
    } else if (s->cur == p && !S.stopping) {
        on_worker_crash(p, status, now);
    } else if (p->state == PS_STOPPING || p->state == PS_KILLED || S.stopping) {
        log_info("%s %s after %s%s", wname(p, nm, sizeof nm), st,
                 dur(now - (p->stop_at ? p->stop_at : p->started), d, sizeof d),
                 p->stop_at ? " of draining" : "");
        if (s->cur == p)
            s->cur = NULL;
    }
    kill_check(p);
    if (group_alive(p->pid)) {
        /* The leader is gone but some of its group runs on (a server's
         * own workers): drain them like the leader, then SIGKILL. */
        if (p->state == PS_STARTING || p->state == PS_READY) {
            (void)kill(-p->pid, S.cfg->stop_signal);
            p->stop_at = now;
            p->deadline = deadline_after(now, S.cfg->drain_timeout);
        }
        if (p->killed)
            (void)kill(-p->pid, SIGKILL);
        p->state = PS_GONE;
        log_info("%s: its process group still has processes; %s", wname(p, nm, sizeof nm),
                 p->deadline == UINT64_MAX ? "killed" : "waiting for them to exit");
        return;
    }
    proc_remove(p);
}

static void reap_all(uint64_t now)
{
    int status;
    pid_t pid;

    for (int n = 0; n < 4096; n++) {
        do {
            pid = waitpid(-1, &status, WNOHANG);
        } while (pid < 0 && errno == EINTR);
        if (pid <= 0)
            break;
        struct proc *p = proc_by_pid(pid);
        if (p) {
            on_proc_exit(p, status, now);
        } else {
            char st[96];
            log_debug("reaped orphan pid %ld (%s)", (long)pid, describe_status(status, st, sizeof st));
        }
    }
    /* Groups whose leader is gone: finished once the group is empty. */
    for (size_t i = 0; i < S.nprocs;) {
        struct proc *p = S.procs[i];
        if (p->state == PS_GONE && !group_alive(p->pid)) {
            proc_remove(p);
            continue;
        }
        i++;
    }
}

/* Blocks until every process in the table is reaped (they were sent
 * SIGKILL), without losing an exit status to a bare waitpid(). */
static void reap_until_empty(void)
{
    for (int n = 0; S.nprocs > 0 && n < 100000; n++) {
        siginfo_t si;
        reap_all(handoff_now_usec());
        if (S.nprocs == 0)
            break;
        memset(&si, 0, sizeof si);
        if (waitid(P_ALL, 0, &si, WEXITED | WNOWAIT) < 0 && errno != EINTR)
            break; /* ECHILD: nothing left to wait for */
    }
}

/* The pid file is removed at exit only if it still names this process:
 * someone may have replaced it (another instance, a deploy). */
static void pidfile_remove(const char *path)
{
    char buf[32];
    ssize_t n = -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd >= 0) {
        n = read(fd, buf, sizeof buf - 1);
        (void)close(fd);
    }
    if (n <= 0) {
        log_warn("--pid-file %s: %s at exit; left as is", path, n < 0 ? strerror(errno) : "empty");
        return;
    }
    buf[n] = '\0';
    if (strtol(buf, NULL, 10) != (long)getpid()) {
        log_warn("--pid-file %s names another process at exit; left as is", path);
        return;
    }
    if (unlink(path) < 0)
        log_warn("--pid-file %s: cannot remove it: %s", path, strerror(errno));
}

/* ---- stop ---- */

static void begin_stop(int signo, uint64_t now)
{
    unsigned n = 0;
    char d[32];

    S.term_count++;
    if (S.stopping) {
        if (S.term_count >= 2 && signo) {
            log_warn("second SIG%s: killing every process now", signal_name(signo));
            for (size_t i = 0; i < S.nprocs; i++)
                proc_kill(S.procs[i]);
        }
        return;
    }
    S.stopping = true;
    notify_systemd("STOPPING=1\nSTATUS=stopping");
    if (S.reload_pending) {
        S.reload_pending = false;
        control_reload_done(S.ctl, S.next_seq, false, "the supervisor is stopping");
    }
    if (S.reloading && S.failing == 0)
        reload_fail("the supervisor is stopping");
    for (int i = 0; i < S.cfg->workers; i++) {
        struct slot *s = &S.slots[i];
        s->respawn_at = 0;
        if (s->cur) {
            s->cur->counts = true;
            if (s->cur->state == PS_STARTING || s->cur->state == PS_READY)
                n++;
            proc_stop(s->cur, now);
        }
    }
    for (size_t i = 0; i < S.nprocs; i++)
        if (S.procs[i]->kind == PK_WORKER)
            proc_stop(S.procs[i], now);
    log_info("stopping%s%s: SIG%s sent to %u process%s; SIGKILL after %s", signo ? " on SIG" : "",
             signo ? signal_name(signo) : "", signal_name(S.cfg->stop_signal), n, n == 1 ? "" : "es",
             S.cfg->drain_timeout == HANDOFF_NO_TIMEOUT ? "never"
                                                        : dur(S.cfg->drain_timeout, d, sizeof d));
}

void sup_request_stop(void)
{
    begin_stop(0, handoff_now_usec());
}

uint64_t sup_request_reload(const char **why)
{
    if (S.stopping) {
        *why = "the supervisor is stopping";
        return 0;
    }
    S.reload_pending = true;
    return S.next_seq;
}

/* ---- signals ---- */

/* Signals whose default action is to be ignored: forwarding them can
 * never hurt a worker. */
static bool default_ignored(int signo)
{
    return signo == SIGCHLD || signo == SIGCONT || signo == SIGURG || signo == SIGWINCH;
}

/* A forwarded signal goes to every current worker that handles it
 * (catches, ignores or blocks it: /proc), never to one that would take its
 * default action and die (or stop) of it: `kill -USR1 <supervisor>` must
 * not take the service down. */
static void forward_signal(int signo, pid_t from)
{
    unsigned sent = 0, skipped = 0;
    char nm[96];

    for (int j = 0; j < S.cfg->workers; j++) {
        struct proc *p = S.slots[j].cur;
        if (!p || !p->alive)
            continue;
        if (!default_ignored(signo) && !proc_handles_signal(p->pid, signo)) {
            skipped++;
            log_warn("not forwarding SIG%s to %s: it does not handle it and would %s", signal_name(signo),
                     wname(p, nm, sizeof nm),
                     signo == SIGTSTP || signo == SIGTTIN || signo == SIGTTOU ? "stop" : "die");
            continue;
        }
        if (kill(p->pid, signo) == 0)
            sent++;
    }
    log_info("SIG%s from pid %ld: forwarded to %u process%s%s", signal_name(signo), (long)from, sent,
             sent == 1 ? "" : "es", skipped ? " (not to those that do not handle it)" : "");
}

/* Signals whose default action would end (or core-dump) the supervisor
 * and that only ever come from someone's kill: read from the signalfd
 * and logged, never fatal. (Faults - SEGV, BUS, ILL, FPE, ABRT, TRAP, SYS
 * - keep their default action.) */
static const int stray_signals[] = {
    SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGXCPU, SIGXFSZ, SIGWINCH,
#ifdef SIGSTKFLT
    SIGSTKFLT,
#endif
};

static void on_signals(uint64_t now)
{
    struct signalfd_siginfo si[16];
    ssize_t n;

    while ((n = read(S.sigfd, si, sizeof si)) > 0) {
        for (size_t i = 0; i < (size_t)n / sizeof si[0]; i++) {
            int signo = (int)si[i].ssi_signo;
            if (signo == SIGCHLD) {
                reap_all(now);
            } else if (signo == SIGHUP) {
                const char *why = NULL;
                log_info("SIGHUP from pid %ld: reload%s", (long)si[i].ssi_pid,
                         S.reloading ? " (queued after the one in progress)" : "");
                if (!sup_request_reload(&why))
                    log_warn("SIGHUP ignored: %s", why);
            } else if (signo == SIGTERM || signo == SIGINT || signo == SIGQUIT) {
                begin_stop(signo, now);
            } else if (signo < 64 && (S.cfg->forward & ((uint64_t)1 << signo))) {
                forward_signal(signo, (pid_t)si[i].ssi_pid);
            } else {
                log_info("SIG%s from pid %ld ignored (not forwarded: see --forward)", signal_name(signo),
                         (long)si[i].ssi_pid);
            }
        }
    }
}

static int signals_setup(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGQUIT);
    sigaddset(&set, SIGCHLD);
    for (size_t i = 0; i < sizeof stray_signals / sizeof stray_signals[0]; i++)
        sigaddset(&set, stray_signals[i]);
    for (int s = SIGRTMIN; s <= SIGRTMAX; s++)
        sigaddset(&set, s);
    for (int s = 1; s < 64; s++)
        if (S.cfg->forward & ((uint64_t)1 << s))
            sigaddset(&set, s);
    S.sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (S.sigfd < 0)
        return -errno;
    /* SIGPIPE is blocked, not ignored: a closed control client must not
     * kill us, and blocking (unlike SIG_IGN) is not inherited by exec. */
    sigaddset(&set, SIGPIPE);
    return sigprocmask(SIG_BLOCK, &set, NULL) < 0 ? -errno : 0;
}

/* ---- timers ---- */

static uint64_t next_deadline(void)
{
    uint64_t d = control_deadline(S.ctl);

    if (reload_wait_deadline() < d)
        d = reload_wait_deadline();
    if (S.watchdog_usec && S.watchdog_next < d)
        d = S.watchdog_next;

    for (size_t i = 0; i < S.nprocs; i++) {
        struct proc *p = S.procs[i];
        if (p->deadline < d)
            d = p->deadline;
        if (p->kind == PK_WORKER && p->state == PS_STARTING && p->next_check && !p->check &&
            p->next_check < d)
            d = p->next_check;
    }
    for (int i = 0; i < S.cfg->workers; i++)
        if (S.slots[i].respawn_at && S.slots[i].respawn_at < d)
            d = S.slots[i].respawn_at;
    return d;
}

static void on_timers(uint64_t now)
{
    char d[32], nm[96];

    control_on_timer(S.ctl, now);
    if (S.watchdog_usec && now >= S.watchdog_next) {
        notify_systemd("WATCHDOG=1");
        S.watchdog_next = now + S.watchdog_usec / 2;
    }
    for (size_t i = 0; i < S.nprocs; i++) {
        struct proc *p = S.procs[i];
        if (p->kind != PK_WORKER)
            continue;
        if (p->state == PS_STARTING && now >= p->deadline) {
            struct slot *s = &S.slots[p->slot];
            (void)snprintf(nm, sizeof nm, "it did not become ready within %s",
                           dur(S.cfg->ready_timeout, d, sizeof d));
            if (s->next == p) {
                char w[96];
                reload_fail("%s: %s", wshort(p, w, sizeof w), nm);
            } else {
                /* A restart that never gets ready counts as a crash. */
                char w[96];
                log_warn("%s: %s; killing it", wname(p, w, sizeof w), nm);
                proc_kill(p); /* on_proc_exit() then takes it as a crash */
            }
        } else if (p->state == PS_STARTING && p->next_check && now >= p->next_check && !p->check) {
            if (S.cfg->ready_mode == READY_DELAY) {
                proc_ready(p, now, "--ready-delay elapsed");
            } else if (S.cfg->ready_mode == READY_COMMAND) {
                pid_t c = spawn_check(S.cfg->ready_command, p->pid, p->gen, p->slot);
                p->checks++;
                p->next_check = now + S.cfg->ready_interval;
                if (c > 0) {
                    struct proc *k = proc_add(PK_CHECK, c, p->gen, p->slot);
                    if (k) {
                        k->owner = p;
                        p->check = k;
                    } else {
                        (void)kill(-c, SIGKILL);
                        while (waitpid(c, NULL, 0) < 0 && errno == EINTR) {
                        }
                        log_err("--ready-command: out of memory (tried again in --ready-interval)");
                    }
                }
            }
        } else if ((p->state == PS_STOPPING || p->state == PS_GONE) && now >= p->deadline) {
            log_warn("%s still running %s after SIG%s: SIGKILL", wname(p, nm, sizeof nm),
                     dur(now - p->stop_at, d, sizeof d), signal_name(S.cfg->stop_signal));
            proc_kill(p);
        }
    }
    for (int i = 0; i < S.cfg->workers; i++)
        if (S.slots[i].respawn_at && now >= S.slots[i].respawn_at && !S.stopping)
            respawn(i, now);
}

/* ---- set-up ---- */

static void lib_log(void *userdata, int level, const char *msg)
{
    (void)userdata;
    tool_log(level <= HANDOFF_LOG_ERR ? LOG_ERR_ : level == HANDOFF_LOG_WARNING ? LOG_WARN_ : LOG_DEBUG_,
             "%s", msg);
}

static void loop(void)
{
    while (!S.stopping || S.nprocs > 0) {
        struct epoll_event evs[32];
        uint64_t now = handoff_now_usec(), d;
        int timeout = -1, n;

        if (S.reload_pending && !S.reloading && !S.stopping && reload_may_start(now))
            reload_start(now);
        d = next_deadline();
        if (d != UINT64_MAX)
            timeout = d <= now ? 0 : (int)((d - now + 999) / 1000 > 3600000 ? 3600000 : (d - now + 999) / 1000);
        n = epoll_wait(S.epfd, evs, 32, timeout);
        if (n < 0 && errno != EINTR) {
            log_err("epoll_wait: %s", strerror(errno));
            break;
        }
        now = handoff_now_usec();
        for (int i = 0; i < n; i++) {
            uint64_t v = evs[i].data.u64;
            uint64_t tag = v & ~(uint64_t)0xffffffffu;
            if (tag == TAG_SIGNAL)
                on_signals(now);
            else if (tag == TAG_NOTIFY)
                on_notify(now);
            else if (tag == TAG_CTL_LISTEN || tag == TAG_CTL_CONN)
                control_on_event(S.ctl, (int)(uint32_t)v);
        }
        on_timers(now);
    }
}

int sup_run(struct config *cfg)
{
    handoff_options o = HANDOFF_OPTIONS_INIT;
    char err[300];
    struct epoll_event e;
    int r, code = EXIT_FAILED;

    S.cfg = cfg;
    S.epfd = S.sigfd = S.notify.fd = -1;
    S.next_seq = 1;
    S.start_time = handoff_now_usec();
    spawn_init();

    /* systemd's watchdog, if it is meant for this process (sd_watchdog_enabled's
     * rule); the variables are never passed to workers. */
    {
        const char *u = getenv("WATCHDOG_USEC"), *wp = getenv("WATCHDOG_PID");
        if (u && (!wp || strtol(wp, NULL, 10) == (long)getpid())) {
            S.watchdog_usec = strtoull(u, NULL, 10);
            S.watchdog_next = S.start_time;
        }
    }
    /* systemd's NOTIFY_SOCKET: spoken to by notify_systemd(), not by the
     * library, whose sd_notify blocks when the receiver does not read. */
    {
        const char *ns = getenv("NOTIFY_SOCKET");
        if (ns && *ns) {
            (void)snprintf(S.sd_path, sizeof S.sd_path, "%s", ns);
            if ((r = sd_open(ns)) < 0)
                log_warn("NOTIFY_SOCKET=%s: %s; systemd will not be notified", S.sd_path, strerror(-r));
        }
    }
    o.flags = HANDOFF_NO_SIGNALS | HANDOFF_NO_NOTIFY;
    o.argv = cfg->argv;
    o.log = lib_log;
    o.log_level = cfg->verbosity >= 2 ? HANDOFF_LOG_DEBUG : HANDOFF_LOG_WARNING;
    r = handoff_new(&o, &S.h);
    if (r < 0) {
        log_err("handoff_new: %s", strerror(-r));
        goto out;
    }
    if (open_listeners(cfg->nonblock) < 0)
        goto out;
    if (cfg->control) {
        (void)snprintf(S.control_path, sizeof S.control_path, "%s", cfg->control);
    } else if ((r = default_control_path(cfg->name, S.control_path, sizeof S.control_path, true)) < 0) {
        log_err("cannot set up the control socket directory for \"%s\": %s (use --control)", cfg->name,
                strerror(-r));
        goto out;
    }
    if (control_open(S.control_path, &S.ctl, err, sizeof err) < 0) {
        log_err("%s", err);
        goto out;
    }
    if ((r = notify_open(&S.notify)) < 0) {
        log_err("cannot create the workers' notify socket: %s (set XDG_RUNTIME_DIR to a directory of yours)",
                strerror(-r));
        goto out;
    }
    /* Written once, atomically (temporary file + rename); a pid file that
     * cannot be written is a deploy error: nothing has started yet. */
    if (cfg->pid_file) {
        if ((r = handoff_pidfile_write(cfg->pid_file, getpid())) < 0) {
            log_err("--pid-file %s: cannot write it: %s; not starting", cfg->pid_file, strerror(-r));
            goto out;
        }
        S.pidfile_written = true;
    }
    if ((r = signals_setup()) < 0) {
        log_err("signals: %s", strerror(-r));
        goto out;
    }
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        log_warn("PR_SET_CHILD_SUBREAPER: %s (orphans will not be reaped here)", strerror(errno));
    S.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (S.epfd < 0) {
        log_err("epoll_create1: %s", strerror(errno));
        goto out;
    }
    e = (struct epoll_event){.events = EPOLLIN, .data.u64 = TAG_SIGNAL};
    (void)epoll_ctl(S.epfd, EPOLL_CTL_ADD, S.sigfd, &e);
    e = (struct epoll_event){.events = EPOLLIN, .data.u64 = TAG_NOTIFY};
    (void)epoll_ctl(S.epfd, EPOLL_CTL_ADD, S.notify.fd, &e);
    control_set_epoll(S.ctl, S.epfd, TAG_CTL_LISTEN, TAG_CTL_CONN);

    S.slots = calloc((size_t)cfg->workers, sizeof *S.slots);
    if (!S.slots) {
        log_err("out of memory");
        goto out;
    }
    S.gen_last = 1;
    *gen_info(1) = (struct gen_info){.id = 1, .started = S.start_time};
    for (int i = 0; i < cfg->workers; i++) {
        S.slots[i].backoff = cfg->backoff_min;
        S.slots[i].cur = start_worker(i, 1, err, sizeof err);
        if (!S.slots[i].cur) {
            /* A command that cannot be executed at all is a usage error,
             * not a crash to retry. */
            log_err("%s", err);
            S.stopping = true;
            for (int k = 0; k < i; k++)
                proc_kill(S.slots[k].cur);
            reap_until_empty();
            goto out;
        }
    }
    {
        char d[32];
        log_info("started generation 1: %d worker%s (pid %ld%s), %d socket%s, ready=%s, control %s",
                 cfg->workers, cfg->workers > 1 ? "s" : "", S.slots[0].cur ? (long)S.slots[0].cur->pid : 0L,
                 cfg->workers > 1 ? ", ..." : "", S.nls, S.nls == 1 ? "" : "s",
                 cfg->ready_mode == READY_NOTIFY    ? "notify"
                 : cfg->ready_mode == READY_COMMAND ? "command"
                                                    : dur(cfg->ready_delay, d, sizeof d),
                 S.control_path);
    }
    loop();
    code = S.exit_code;
    log_info("exiting with status %d", code);
out:
    if (S.ctl)
        control_close(S.ctl);
    if (S.pidfile_written)
        pidfile_remove(cfg->pid_file);
    for (size_t i = 0; i < S.nprocs; i++)
        free(S.procs[i]);
    free(S.procs);
    free(S.slots);
    for (int i = 0; i < S.nls; i++)
        if (S.ls[i].owned)
            (void)close(S.ls[i].fd);
    (void)handoff_free(S.h); /* closes the --listen sockets */
    notify_close(&S.notify);
    if (S.sigfd >= 0)
        (void)close(S.sigfd);
    if (S.epfd >= 0)
        (void)close(S.epfd);
    sd_close();
    return code;
}

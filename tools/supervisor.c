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
#include "tool.h"

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

enum pstate {
    PS_STARTING, /* spawned, not ready yet */
    PS_READY,    /* serving */
    PS_STOPPING, /* stop signal sent; SIGKILL at deadline */
    PS_KILLED,   /* SIGKILL sent to its process group */
    PS_GONE      /* leader reaped; the rest of its group is still running */
};

enum pkind { PK_WORKER, PK_CHECK };

struct proc {
    int kind;
    pid_t pid;           /* leader pid, also the process group id */
    unsigned gen;
    int slot;
    int state;
    bool alive;          /* leader not reaped yet */
    bool counts;         /* its exit status becomes the supervisor's */
    bool failing;        /* killed because its reload failed */
    uint64_t started, ready_at, stop_at;
    uint64_t deadline;   /* STARTING: ready timeout; later: SIGKILL time */
    uint64_t next_check; /* delay mode: ready time; command mode: next try */
    struct proc *check;  /* running --ready-command */
    struct proc *owner;  /* PK_CHECK: the worker it checks */
    unsigned checks;
    char status[160];    /* last STATUS= it sent */
};

struct slot {
    struct proc *cur, *next;
    unsigned restarts;   /* crash restarts since the slot's last reload */
    unsigned streak;     /* crashes in a row without a long enough run */
    uint64_t backoff;
    uint64_t respawn_at; /* 0: no restart pending */
    unsigned respawn_gen;
    char last_failure[256];
};

struct gen_info {
    unsigned id;
    uint64_t started, ready_at, drain_at;
};

#define NGEN 64

static struct {
    struct config *cfg;
    handoff_t *h;
    int epfd, sigfd, notifyfd;
    char notify_path[108];
    struct control *ctl;
    char control_path[108];
    struct listener ls[TOOL_MAX_LISTEN];
    int nls;
    struct proc **procs;
    size_t nprocs, cap;
    struct slot *slots;
    struct gen_info gens[NGEN];
    unsigned gen_last;
    uint64_t start_time;
    bool ready_sent;
    /* reloads: requests coalesce into the next one to start */
    bool reloading, reload_pending;
    uint64_t reload_seq, next_seq;
    unsigned reload_gen;
    uint64_t reload_started;
    int roll_slot;
    int failing;          /* processes of a failed reload not reaped yet */
    char fail_msg[512];
    unsigned reloads_ok, reloads_failed;
    char last_failure[512];
    /* stop */
    bool stopping;
    unsigned term_count;
    int exit_code;
} S;

static struct gen_info *gen_info(unsigned id)
{
    return &S.gens[id % NGEN];
}

static const char *dur(uint64_t usec, char *buf, size_t len)
{
    return fmt_duration(usec, buf, len);
}

__attribute__((format(printf, 1, 2))) static void notify_systemd(const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    (void)handoff_notify(S.h, msg);
}

/* ---- the process table ---- */

static struct proc *proc_add(int kind, pid_t pid, unsigned gen, int slot)
{
    struct proc *p;

    if (S.nprocs == S.cap) {
        size_t cap = S.cap ? S.cap * 2 : 16;
        struct proc **n = realloc(S.procs, cap * sizeof *n);
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

static void kill_check(struct proc *p)
{
    if (p->check) {
        (void)kill(-p->check->pid, SIGKILL);
        p->check->owner = NULL;
        p->check = NULL;
    }
}

static void proc_stop(struct proc *p, uint64_t now)
{
    if (p->state != PS_STARTING && p->state != PS_READY)
        return;
    kill_check(p);
    (void)kill(p->pid, S.cfg->stop_signal);
    p->state = PS_STOPPING;
    p->stop_at = now;
    p->deadline = S.cfg->drain_timeout == HANDOFF_NO_TIMEOUT ? UINT64_MAX : now + S.cfg->drain_timeout;
}

static void proc_kill(struct proc *p)
{
    kill_check(p);
    (void)kill(-p->pid, SIGKILL);
    if (p->alive)
        (void)kill(p->pid, SIGKILL); /* in case it left its group */
    if (p->state != PS_GONE)
        p->state = PS_KILLED;
    p->deadline = UINT64_MAX;
}

static const char *wname(const struct proc *p, char *buf, size_t len)
{
    if (S.cfg->workers > 1)
        (void)snprintf(buf, len, "generation %u worker %d (pid %ld)", p->gen, p->slot, (long)p->pid);
    else
        (void)snprintf(buf, len, "generation %u (pid %ld)", p->gen, (long)p->pid);
    return buf;
}

/* The same without the generation, for messages that already name it. */
static const char *wshort(const struct proc *p, char *buf, size_t len)
{
    if (S.cfg->workers > 1)
        (void)snprintf(buf, len, "worker %d (pid %ld)", p->slot, (long)p->pid);
    else
        (void)snprintf(buf, len, "pid %ld", (long)p->pid);
    return buf;
}

/* ---- starting workers ---- */

static struct proc *start_worker(int slot, unsigned gen, char *err, size_t errlen)
{
    uint64_t now = handoff_now_usec();
    pid_t pid = spawn_worker(S.cfg->argv, S.ls, S.nls, S.notify_path, gen, err, errlen);
    struct proc *p;

    if (pid < 0)
        return NULL;
    p = proc_add(PK_WORKER, pid, gen, slot);
    if (!p) {
        (void)kill(-pid, SIGKILL);
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

static bool all_cur_ready(void)
{
    for (int i = 0; i < S.cfg->workers; i++)
        if (!S.slots[i].cur || S.slots[i].cur->state != PS_READY)
            return false;
    return true;
}

static void first_ready_check(uint64_t now);

/* ---- reloads ---- */

static void reload_finish(bool ok, const char *msg)
{
    S.reloading = false;
    control_reload_done(S.ctl, S.reload_seq, ok, msg);
    if (S.ready_sent)
        notify_systemd("READY=1\nSTATUS=%s%s", ok ? "" : "reload failed: ", msg);
}

/* Kills the new generation's processes; the answer goes out once they are
 * all reaped (see on_proc_exit()). */
static void reload_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reload_fail(const char *fmt, ...)
{
    char why[400];
    int replaced = 0;
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    for (int i = 0; i < S.cfg->workers; i++) {
        struct slot *s = &S.slots[i];
        if (s->cur && s->cur->gen == S.reload_gen)
            replaced++;
        if (!s->next)
            continue;
        s->next->failing = true;
        proc_kill(s->next);
        if (s->next->alive)
            S.failing++;
        s->next = NULL;
    }
    if (replaced > 0)
        (void)snprintf(S.fail_msg, sizeof S.fail_msg,
                       "generation %u failed: %s; %d of %d workers had been replaced (rolling)",
                       S.reload_gen, why, replaced, S.cfg->workers);
    else
        (void)snprintf(S.fail_msg, sizeof S.fail_msg, "generation %u failed: %s; %s", S.reload_gen,
                       why, S.stopping ? "stopping" : "the current generation keeps serving");
    (void)snprintf(S.last_failure, sizeof S.last_failure, "%s", S.fail_msg);
    S.reloads_failed++;
    log_err("reload: %s", S.fail_msg);
    if (S.failing == 0)
        reload_finish(false, S.fail_msg);
}

static void enforce_max_draining(uint64_t now)
{
    for (;;) {
        unsigned oldest = 0, count = 0, seen[64];
        for (size_t i = 0; i < S.nprocs; i++) {
            struct proc *p = S.procs[i];
            bool dup = false;
            if (p->kind != PK_WORKER || (p->state != PS_STOPPING && p->state != PS_GONE))
                continue;
            for (unsigned k = 0; k < count; k++)
                dup |= seen[k] == p->gen;
            if (!dup && count < 64)
                seen[count++] = p->gen;
            if (!oldest || p->gen < oldest)
                oldest = p->gen;
        }
        if ((int)count <= S.cfg->max_draining)
            return;
        char d[32];
        log_warn("%u generations draining (--max-draining %d): killing generation %u after %s",
                 count, S.cfg->max_draining, oldest,
                 dur(now - gen_info(oldest)->drain_at, d, sizeof d));
        for (size_t i = 0; i < S.nprocs; i++) {
            struct proc *p = S.procs[i];
            if (p->kind == PK_WORKER && p->gen == oldest && (p->state == PS_STOPPING || p->state == PS_GONE))
                proc_kill(p);
        }
    }
}

/* Slot i's next process is ready: it becomes current; the old one drains. */
static void commit_slot(int i, uint64_t now)
{
    struct slot *s = &S.slots[i];
    struct proc *old = s->cur;

    s->cur = s->next;
    s->next = NULL;
    s->respawn_at = 0;
    s->streak = 0;
    s->restarts = 0;
    s->backoff = S.cfg->backoff_min;
    s->last_failure[0] = '\0';
    if (old) {
        gen_info(old->gen)->drain_at = now;
        proc_stop(old, now);
    }
}

static void reload_succeeded(uint64_t now)
{
    struct gen_info *g = gen_info(S.reload_gen);
    char d[32], msg[256], old[64] = "";
    unsigned prev = 0;

    g->ready_at = now;
    for (size_t i = 0; i < S.nprocs; i++)
        if (S.procs[i]->kind == PK_WORKER && S.procs[i]->state == PS_STOPPING &&
            S.procs[i]->stop_at == now && S.procs[i]->gen > prev)
            prev = S.procs[i]->gen;
    if (prev)
        (void)snprintf(old, sizeof old, "; generation %u draining", prev);
    (void)snprintf(msg, sizeof msg, "generation %u ready in %s", S.reload_gen,
                   dur(now - S.reload_started, d, sizeof d));
    log_info("%s%s", msg, old);
    S.reloads_ok++;
    enforce_max_draining(now);
    first_ready_check(now); /* a reload may end the first start-up */
    reload_finish(true, msg);
}

static void reload_start(uint64_t now)
{
    char err[300];
    int first = 0, last = S.cfg->workers;

    S.reload_pending = false;
    S.reloading = true;
    S.reload_seq = S.next_seq++;
    S.reload_gen = ++S.gen_last;
    S.reload_started = now;
    S.fail_msg[0] = '\0';
    *gen_info(S.reload_gen) = (struct gen_info){.id = S.reload_gen, .started = now};
    if (S.ready_sent)
        notify_systemd("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading: starting generation %u",
                       (unsigned long long)now, S.reload_gen);
    log_info("reload: starting generation %u%s", S.reload_gen, S.cfg->rolling ? " (rolling)" : "");
    if (S.cfg->rolling) {
        S.roll_slot = 0;
        last = 1;
    }
    for (int i = first; i < last; i++) {
        S.slots[i].next = start_worker(i, S.reload_gen, err, sizeof err);
        if (!S.slots[i].next) {
            reload_fail("%s", err);
            return;
        }
    }
}

/* ---- readiness ---- */

static void first_ready_check(uint64_t now)
{
    char d[32];
    if (S.ready_sent || !all_cur_ready())
        return;
    S.ready_sent = true;
    unsigned g = S.slots[0].cur->gen;
    gen_info(g)->ready_at = now;
    log_info("generation %u ready in %s (%d worker%s); supervisor ready", g,
             dur(now - S.start_time, d, sizeof d), S.cfg->workers, S.cfg->workers > 1 ? "s" : "");
    notify_systemd("READY=1\nSTATUS=generation %u serving", g);
}

static void proc_ready(struct proc *p, uint64_t now, const char *how)
{
    struct slot *s = &S.slots[p->slot];
    char d[32], nm[96];

    p->state = PS_READY;
    p->ready_at = now;
    p->deadline = UINT64_MAX;
    kill_check(p);
    log_debug("%s ready (%s) in %s", wname(p, nm, sizeof nm), how, dur(now - p->started, d, sizeof d));
    if (s->next == p) {
        if (S.cfg->rolling) {
            commit_slot(p->slot, now);
            log_info("generation %u worker %d ready in %s (rolling %d/%d)", p->gen, p->slot,
                     dur(now - p->started, d, sizeof d), p->slot + 1, S.cfg->workers);
            if (++S.roll_slot < S.cfg->workers) {
                char err[300];
                struct slot *n = &S.slots[S.roll_slot];
                n->next = start_worker(S.roll_slot, S.reload_gen, err, sizeof err);
                if (!n->next)
                    reload_fail("%s", err);
                return;
            }
            reload_succeeded(now);
            return;
        }
        for (int i = 0; i < S.cfg->workers; i++)
            if (!S.slots[i].next || S.slots[i].next->state != PS_READY)
                return;
        for (int i = 0; i < S.cfg->workers; i++)
            commit_slot(i, now);
        reload_succeeded(now);
        return;
    }
    if (s->cur == p && s->restarts > 0 && S.ready_sent) {
        log_info("%s is back (restart %u) and ready in %s", wname(p, nm, sizeof nm), s->restarts,
                 dur(now - p->started, d, sizeof d));
        if (all_cur_ready() && !S.reloading)
            notify_systemd("STATUS=generation %u serving", p->gen);
    }
    first_ready_check(now);
}

static void on_notify(uint64_t now)
{
    struct notify_msg m;
    int r;

    for (int n = 0; n < 64 && (r = notify_read(S.notifyfd, &m)) > 0; n++) {
        struct proc *w = NULL;
        for (size_t i = 0; i < S.nprocs && !w; i++) {
            struct proc *p = S.procs[i];
            if (p->kind == PK_WORKER && p->alive && p->pid == m.pid)
                w = p;
        }
        for (size_t i = 0; i < S.nprocs && !w; i++) {
            struct proc *p = S.procs[i];
            if (p->kind == PK_WORKER && p->alive && pid_descends_from(m.pid, p->pid))
                w = p;
        }
        if (!w) {
            log_debug("ignoring a notification from pid %ld (not a worker)", (long)m.pid);
            continue;
        }
        if (m.has_status)
            (void)snprintf(w->status, sizeof w->status, "%s", m.status);
        if (m.extend_usec && w->state == PS_STARTING && now + m.extend_usec > w->deadline)
            w->deadline = now + m.extend_usec;
        if (m.ready && w->state == PS_STARTING && S.cfg->ready_mode == READY_NOTIFY) {
            char how[64];
            (void)snprintf(how, sizeof how, "READY=1 from pid %ld", (long)m.pid);
            proc_ready(w, now, how);
        }
    }
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
            p->deadline = now + S.cfg->drain_timeout;
        }
        if (p->state == PS_KILLED)
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
            } else {
                unsigned k = 0;
                for (int j = 0; j < S.cfg->workers; j++) {
                    struct proc *p = S.slots[j].cur;
                    if (p && p->alive && kill(p->pid, signo) == 0)
                        k++;
                }
                log_info("forwarded SIG%s to %u process%s", signal_name(signo), k, k == 1 ? "" : "es");
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

/* ---- status ---- */

__attribute__((format(printf, 4, 5))) static size_t put(char *buf, size_t len, size_t off,
                                                        const char *fmt, ...)
{
    va_list ap;
    int n;

    if (off >= len)
        return off;
    va_start(ap, fmt);
    n = vsnprintf(buf + off, len - off, fmt, ap);
    va_end(ap);
    if (n < 0)
        return off;
    return off + (size_t)n >= len ? len - 1 : off + (size_t)n;
}

static const char *state_name(const struct proc *p)
{
    switch (p->state) {
    case PS_STARTING: return "starting";
    case PS_READY: return "ready";
    case PS_STOPPING: return "draining";
    case PS_KILLED: return "killed";
    default: return "leftovers";
    }
}

size_t sup_status(char *buf, size_t len)
{
    uint64_t now = handoff_now_usec();
    unsigned gens[128], ng = 0;
    char d[32], d2[32];
    size_t o = 0;

    o = put(buf, len, o, "supervisor: pid %ld, up %s, %s\n", (long)getpid(),
            dur(now - S.start_time, d, sizeof d),
            S.stopping ? "stopping" : S.reloading ? "reloading" : S.ready_sent ? "ready" : "starting");
    o = put(buf, len, o, "command:");
    for (char **a = S.cfg->argv; *a; a++)
        o = put(buf, len, o, " %s", *a);
    o = put(buf, len, o, "\n");
    for (int i = 0; i < S.nls; i++)
        o = put(buf, len, o, "listen: fd %d %s %s\n", HANDOFF_LISTEN_FDS_START + i, S.ls[i].name,
                S.ls[i].spec);
    /* Generations, newest first: those of any process or pending restart. */
    for (size_t i = 0; i < S.nprocs; i++)
        if (S.procs[i]->kind == PK_WORKER && ng < 128)
            gens[ng++] = S.procs[i]->gen;
    for (int i = 0; i < S.cfg->workers; i++)
        if (S.slots[i].respawn_at && ng < 128)
            gens[ng++] = S.slots[i].respawn_gen;
    for (unsigned pass = 0; pass < ng; pass++) {
        unsigned g = 0;
        for (unsigned k = 0; k < ng; k++)
            if (gens[k] > g)
                g = gens[k];
        if (!g)
            break;
        for (unsigned k = 0; k < ng; k++)
            if (gens[k] == g)
                gens[k] = 0;
        struct gen_info *gi = gen_info(g);
        bool active = false, draining = false, starting = S.reloading && g == S.reload_gen;
        for (int i = 0; i < S.cfg->workers; i++)
            active |= (S.slots[i].cur && S.slots[i].cur->gen == g) ||
                      (S.slots[i].respawn_at && S.slots[i].respawn_gen == g);
        for (size_t i = 0; i < S.nprocs; i++)
            draining |= S.procs[i]->kind == PK_WORKER && S.procs[i]->gen == g &&
                        S.procs[i]->state >= PS_STOPPING;
        o = put(buf, len, o, "generation %u: %s%s%s, started %s ago", g,
                starting ? "starting" : active ? "active" : draining ? "draining" : "failed",
                active && draining ? "+draining" : "", starting && active ? "+active" : "",
                dur(now - gi->started, d, sizeof d));
        if (gi->ready_at)
            o = put(buf, len, o, ", ready in %s", dur(gi->ready_at - gi->started, d, sizeof d));
        o = put(buf, len, o, "\n");
        for (int i = 0; i < S.cfg->workers; i++) {
            struct slot *s = &S.slots[i];
            if (s->respawn_at && s->respawn_gen == g)
                o = put(buf, len, o, "  worker %d: no process, restart %u in %s (%u crash%s in a row)\n",
                        i, s->restarts, dur(s->respawn_at > now ? s->respawn_at - now : 0, d, sizeof d),
                        s->streak, s->streak == 1 ? "" : "es");
        }
        for (size_t i = 0; i < S.nprocs; i++) {
            struct proc *p = S.procs[i];
            if (p->kind != PK_WORKER || p->gen != g)
                continue;
            struct slot *s = &S.slots[p->slot];
            o = put(buf, len, o, "  worker %d: pid %ld, %s, up %s", p->slot, (long)p->pid,
                    state_name(p), dur(now - p->started, d, sizeof d));
            if (p->state >= PS_STOPPING && p->stop_at)
                o = put(buf, len, o, ", draining for %s", dur(now - p->stop_at, d, sizeof d));
            if (p->deadline != UINT64_MAX && p->deadline > now)
                o = put(buf, len, o, ", %s in %s", p->state == PS_STARTING ? "ready timeout" : "SIGKILL",
                        dur(p->deadline - now, d2, sizeof d2));
            if (s->cur == p)
                o = put(buf, len, o, ", restarts %u", s->restarts);
            if (p->status[0])
                o = put(buf, len, o, ", status \"%s\"", p->status);
            o = put(buf, len, o, "\n");
            if (s->cur == p && s->last_failure[0])
                o = put(buf, len, o, "    last failure: %s\n", s->last_failure);
        }
    }
    o = put(buf, len, o, "reloads: %u ok, %u failed%s\n", S.reloads_ok, S.reloads_failed,
            S.reloading ? ", one in progress" : "");
    if (S.last_failure[0])
        o = put(buf, len, o, "last failure: %s\n", S.last_failure);
    return o;
}

/* ---- set-up ---- */

static void lib_log(void *userdata, int level, const char *msg)
{
    (void)userdata;
    tool_log(level <= HANDOFF_LOG_ERR ? LOG_ERR_ : level == HANDOFF_LOG_WARNING ? LOG_WARN_ : LOG_DEBUG_,
             "%s", msg);
}

/* NAME=SPEC when NAME is a plain word; otherwise the whole text is SPEC. */
static void split_listen(const char *arg, char *name, size_t nlen, const char **spec)
{
    const char *eq = strchr(arg, '=');
    size_t n = eq ? (size_t)(eq - arg) : 0;
    bool word = n > 0 && n < nlen;

    for (size_t i = 0; word && i < n; i++) {
        char c = arg[i];
        word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '-' || c == '.';
    }
    if (word && strncmp(arg, "tcp", n) != 0 && strncmp(arg, "udp", n) != 0 && strncmp(arg, "unix", n) != 0) {
        memcpy(name, arg, n);
        name[n] = '\0';
        *spec = eq + 1;
        return;
    }
    /* The library's default name: the spec with ':' and blanks as '_'. */
    size_t i = 0;
    for (; arg[i] && i < nlen - 1; i++)
        name[i] = (arg[i] == ':' || (unsigned char)arg[i] <= 0x20 || (unsigned char)arg[i] >= 0x7f) ? '_' : arg[i];
    name[i] = '\0';
    *spec = arg;
}

static void describe_listener(struct listener *l)
{
    struct sockaddr_storage ss;
    socklen_t slen = sizeof ss;
    int type = 0;
    socklen_t tlen = sizeof type;
    handoff_addr a;

    (void)snprintf(l->spec, sizeof l->spec, "(not a socket)");
    l->starter[0] = '\0';
    if (getsockopt(l->fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0 ||
        getsockname(l->fd, (struct sockaddr *)&ss, &slen) < 0 || slen > sizeof a.sa.raw)
        return;
    memset(&a, 0, sizeof a);
    memcpy(a.sa.raw, &ss, slen);
    a.len = slen;
    a.family = ss.ss_family;
    a.socktype = type;
    a.kind = ss.ss_family == AF_UNIX ? HANDOFF_ADDR_UNIX : type == SOCK_DGRAM ? HANDOFF_ADDR_UDP : HANDOFF_ADDR_TCP;
    if (handoff_addr_format(&a, l->spec, sizeof l->spec) < 0) {
        (void)snprintf(l->spec, sizeof l->spec, "(family %d)", ss.ss_family);
        return;
    }
    /* Server::Starter keys: "host:port", "[v6]:port", "/path". */
    const char *k = l->spec;
    if (strncmp(k, "udp://", 6) == 0)
        k += 6;
    else if (strncmp(k, "unix:", 5) == 0)
        k += 5;
    (void)snprintf(l->starter, sizeof l->starter, "%s", k);
}

static int open_listeners(bool nonblock)
{
    handoff_listen_options o = HANDOFF_LISTEN_OPTIONS_INIT;
    handoff_inherited_info inh[TOOL_MAX_LISTEN];
    int n;

    if (!nonblock)
        o.flags |= HANDOFF_LISTEN_BLOCKING;
    for (int i = 0; i < S.cfg->nlisten; i++) {
        struct listener *l = &S.ls[S.nls];
        const char *spec;
        split_listen(S.cfg->listen[i], l->name, sizeof l->name, &spec);
        l->fd = handoff_listen(S.h, l->name, spec, &o);
        if (l->fd < 0) {
            log_err("--listen %s: %s", S.cfg->listen[i], handoff_errmsg(S.h));
            return -1;
        }
        describe_listener(l);
        S.nls++;
    }
    /* Sockets systemd passed that no --listen claimed are passed on too,
     * in their order, under their names. */
    n = handoff_inherited(S.h, inh, TOOL_MAX_LISTEN);
    for (int i = 0; i < n && i < TOOL_MAX_LISTEN; i++) {
        if (inh[i].claimed || inh[i].fd < 0)
            continue;
        if (S.nls == TOOL_MAX_LISTEN) {
            log_err("more than %d sockets", TOOL_MAX_LISTEN);
            return -1;
        }
        struct listener *l = &S.ls[S.nls];
        (void)snprintf(l->name, sizeof l->name, "%s", inh[i].name);
        l->fd = handoff_take_fd(S.h, inh[i].name);
        if (l->fd < 0)
            continue;
        l->owned = true;
        describe_listener(l);
        log_info("adopted inherited fd as %s (%s)", l->name, l->spec);
        S.nls++;
    }
    return 0;
}

static void loop(void)
{
    while (!S.stopping || S.nprocs > 0) {
        struct epoll_event evs[32];
        uint64_t now = handoff_now_usec(), d;
        int timeout = -1, n;

        if (S.reload_pending && !S.reloading && !S.stopping)
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
    S.epfd = S.sigfd = S.notifyfd = -1;
    S.next_seq = 1;
    S.start_time = handoff_now_usec();
    spawn_init();

    o.flags = HANDOFF_NO_SIGNALS;
    o.argv = cfg->argv;
    o.log = lib_log;
    o.log_level = cfg->verbosity >= 2 ? HANDOFF_LOG_DEBUG : HANDOFF_LOG_WARNING;
    r = handoff_new(&o, &S.h);
    if (r < 0) {
        log_err("handoff_new: %s", strerror(-r));
        return EXIT_FAILED;
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
    if ((r = control_open(S.control_path, &S.ctl, err, sizeof err)) < 0) {
        log_err("%s", err);
        goto out;
    }
    S.notifyfd = notify_open(S.notify_path, sizeof S.notify_path);
    if (S.notifyfd < 0) {
        log_err("notify socket: %s", strerror(-S.notifyfd));
        goto out;
    }
    if (cfg->pid_file && (r = handoff_pidfile_write(cfg->pid_file, getpid())) < 0) {
        log_err("--pid-file %s: %s", cfg->pid_file, strerror(-r));
        goto out;
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
    (void)epoll_ctl(S.epfd, EPOLL_CTL_ADD, S.notifyfd, &e);
    control_set_epoll(S.ctl, S.epfd, TAG_CTL_LISTEN, TAG_CTL_CONN);

    S.slots = calloc((size_t)cfg->workers, sizeof *S.slots);
    if (!S.slots)
        goto out;
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
            while (S.nprocs > 0 && waitpid(-1, NULL, 0) > 0)
                reap_all(handoff_now_usec());
            goto out;
        }
    }
    {
        char d[32];
        log_info("started generation 1: %d worker%s (pid %ld%s), %d socket%s, ready=%s, control %s",
                 cfg->workers, cfg->workers > 1 ? "s" : "", (long)S.slots[0].cur->pid,
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
    if (cfg->pid_file)
        (void)unlink(cfg->pid_file);
    for (size_t i = 0; i < S.nprocs; i++)
        free(S.procs[i]);
    free(S.procs);
    free(S.slots);
    for (int i = 0; i < S.nls; i++)
        if (S.ls[i].owned)
            (void)close(S.ls[i].fd);
    (void)handoff_free(S.h); /* closes the --listen sockets */
    if (S.notifyfd >= 0)
        (void)close(S.notifyfd);
    if (S.sigfd >= 0)
        (void)close(S.sigfd);
    if (S.epfd >= 0)
        (void)close(S.epfd);
    return code;
}

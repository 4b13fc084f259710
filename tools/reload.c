/*
 * reload.c - reloads and readiness for `handoff run`.
 *
 * A reload starts generation N+1 next to the current one (all slots, or
 * one slot at a time with --rolling). A slot commits when its new process
 * is ready: it becomes current and the old one gets the stop signal. A new
 * process that exits or times out before it is ready fails the reload: the
 * new generation is killed, and the answer goes out once it is reaped.
 * Reload requests that arrive while one runs share the next reload.
 *
 * --max-draining is enforced with back-pressure: a reload that would leave
 * more generations draining than allowed first waits for one of them to
 * finish (a second at most), and only then kills the oldest. Without the
 * wait, a burst of reloads killed generations a few milliseconds into
 * their drain, with requests in flight.
 */
#include "supervisor.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static void first_ready_check(uint64_t now);

void reload_finish(bool ok, const char *msg)
{
    S.reloading = false;
    control_reload_done(S.ctl, S.reload_seq, ok, msg);
    if (S.ready_sent)
        notify_systemd("READY=1\nSTATUS=%s%s", ok ? "" : "reload failed: ", msg);
}

/* Kills the new generation's processes; the answer goes out once they are
 * all reaped (see on_proc_exit()). */
void reload_fail(const char *fmt, ...)
{
    char why[400];
    int replaced = 0;
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(why, sizeof why, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
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

#define MAX_DRAINING_WAIT (1 * HANDOFF_USEC_PER_SEC)

/* The generations draining (stop signal sent, or leftovers of their
 * process groups) and not killed yet: their count, and the oldest. */
static unsigned draining_generations(unsigned *oldest)
{
    unsigned count = 0, seen[TOOL_MAX_WORKERS > 64 ? TOOL_MAX_WORKERS : 64];

    *oldest = 0;
    for (size_t i = 0; i < S.nprocs; i++) {
        struct proc *p = S.procs[i];
        bool dup = false;
        if (p->kind != PK_WORKER || p->killed || (p->state != PS_STOPPING && p->state != PS_GONE))
            continue;
        for (unsigned k = 0; k < count; k++)
            dup |= seen[k] == p->gen;
        if (!dup && count < sizeof seen / sizeof seen[0])
            seen[count++] = p->gen;
        if (!*oldest || p->gen < *oldest)
            *oldest = p->gen;
    }
    return count;
}

static void kill_generation(unsigned gen)
{
    for (size_t i = 0; i < S.nprocs; i++) {
        struct proc *p = S.procs[i];
        if (p->kind == PK_WORKER && p->gen == gen && !p->killed &&
            (p->state == PS_STOPPING || p->state == PS_GONE))
            proc_kill(p);
    }
}

/* Kills the oldest draining generations until at most `keep` drain. */
static void kill_draining_beyond(unsigned keep, uint64_t now, const char *why)
{
    unsigned oldest, count;
    char d[32];

    while ((count = draining_generations(&oldest)) > keep && oldest) {
        log_warn("%u generation%s draining (--max-draining %d): killing generation %u after %s%s", count,
                 count == 1 ? "" : "s", S.cfg->max_draining, oldest,
                 dur(now - gen_info(oldest)->drain_at, d, sizeof d), why);
        kill_generation(oldest);
    }
}

static uint64_t max_draining_wait(void)
{
    return S.cfg->drain_timeout < MAX_DRAINING_WAIT ? S.cfg->drain_timeout : MAX_DRAINING_WAIT;
}

bool reload_may_start(uint64_t now)
{
    unsigned oldest, count = draining_generations(&oldest);

    /* The reload adds one draining generation when it commits. */
    if ((int)count < S.cfg->max_draining) {
        S.reload_wait_since = 0;
        return true;
    }
    if (!S.reload_wait_since) {
        S.reload_wait_since = now;
        log_debug("reload: waiting for one of %u draining generations to finish (--max-draining %d)", count,
                  S.cfg->max_draining);
        return false;
    }
    if (now - S.reload_wait_since < max_draining_wait())
        return false;
    S.reload_wait_since = 0;
    kill_draining_beyond((unsigned)S.cfg->max_draining - 1, now, ", for the reload waiting for it");
    return true;
}

uint64_t reload_wait_deadline(void)
{
    return S.reload_pending && S.reload_wait_since ? S.reload_wait_since + max_draining_wait() : UINT64_MAX;
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
    kill_draining_beyond((unsigned)S.cfg->max_draining, now, ""); /* a safety net: see reload_may_start() */
    first_ready_check(now); /* a reload may end the first start-up */
    reload_finish(true, msg);
}

void reload_start(uint64_t now)
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

void proc_ready(struct proc *p, uint64_t now, const char *how)
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

/* The worker a notification is from, or NULL. Its own pid is looked up
 * first, in the table; only with --notify-access all, and only for a
 * sender of our own uid, is the sender's ancestry read from /proc: a
 * flood from anyone else costs a table scan per datagram, nothing more. */
static struct proc *notify_sender(const struct notify_msg *m)
{
    for (size_t i = 0; i < S.nprocs; i++) {
        struct proc *p = S.procs[i];
        if (p->kind == PK_WORKER && p->alive && p->pid == m->pid)
            return p;
    }
    if (S.cfg->notify_access != NOTIFY_ALL || m->uid != geteuid())
        return NULL;
    for (size_t i = 0; i < S.nprocs; i++) {
        struct proc *p = S.procs[i];
        if (p->kind == PK_WORKER && p->alive && pid_descends_from(m->pid, p->pid))
            return p;
    }
    return NULL;
}

void on_notify(uint64_t now)
{
    struct notify_msg m;

    for (int n = 0; n < 64 && notify_read(S.notify.fd, &m) > 0; n++) {
        struct proc *w = notify_sender(&m);
        if (!w) {
            /* Logged at the 1st, 2nd, 4th, 8th... so a flood cannot fill the log. */
            unsigned long k = ++S.notify_ignored;
            if ((k & (k - 1)) == 0)
                log_warn("ignoring a notification from pid %ld (uid %ld): not a worker%s [%lu so far]",
                         (long)m.pid, (long)m.uid,
                         S.cfg->notify_access == NOTIFY_ALL
                             ? ""
                             : " (a process a worker started needs --notify-access all)",
                         k);
            continue;
        }
        if (m.has_status)
            (void)snprintf(w->status, sizeof w->status, "%s", m.status);
        if (m.extend_usec && w->state == PS_STARTING && deadline_after(now, m.extend_usec) > w->deadline)
            w->deadline = deadline_after(now, m.extend_usec);
        if (m.ready && w->state == PS_STARTING && S.cfg->ready_mode == READY_NOTIFY) {
            char how[64];
            (void)snprintf(how, sizeof how, "READY=1 from pid %ld", (long)m.pid);
            proc_ready(w, now, how);
        }
    }
}

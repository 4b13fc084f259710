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

static void first_ready_check(struct supervisor *sv, uint64_t now);

uint64_t request_reload(struct supervisor *sv, const char **why)
{
    if (sv->stopping) {
        *why = "the supervisor is stopping";
        return 0;
    }
    sv->reload_pending = true;
    return sv->next_seq;
}

void reload_finish(struct supervisor *sv, bool ok, const char *msg)
{
    sv->reloading = false;
    control_reload_done(sv->ctl, sv->reload_seq, ok, msg);
    if (sv->ready_sent)
        notify_systemd(sv, "READY=1\nSTATUS=%s%s", ok ? "" : "reload failed: ", msg);
}

/* Kills the new generation's processes; the answer goes out once they are
 * all reaped (see on_proc_exit()). */
void reload_fail(struct supervisor *sv, const char *fmt, ...)
{
    char why[400];
    int replaced = 0;
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(why, sizeof why, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
    va_end(ap);
    for (int i = 0; i < sv->cfg->workers; i++) {
        struct slot *s = &sv->slots[i];
        if (s->cur && s->cur->gen == sv->reload_gen)
            replaced++;
        if (!s->next)
            continue;
        s->next->failing = true;
        proc_kill(s->next);
        if (s->next->alive)
            sv->failing++;
        s->next = NULL;
    }
    if (replaced > 0)
        (void)snprintf(sv->fail_msg, sizeof sv->fail_msg,
                       "generation %u failed: %s; %d of %d workers had been replaced (rolling)",
                       sv->reload_gen, why, replaced, sv->cfg->workers);
    else
        (void)snprintf(sv->fail_msg, sizeof sv->fail_msg, "generation %u failed: %s; %s", sv->reload_gen,
                       why, sv->stopping ? "stopping" : "the current generation keeps serving");
    (void)snprintf(sv->last_failure, sizeof sv->last_failure, "%s", sv->fail_msg);
    sv->reloads_failed++;
    log_err("reload: %s", sv->fail_msg);
    if (sv->failing == 0)
        reload_finish(sv, false, sv->fail_msg);
}

#define MAX_DRAINING_WAIT (1 * HANDOFF_USEC_PER_SEC)

/* The generations draining (stop signal sent, or leftovers of their
 * process groups) and not killed yet: their count, and the oldest. */
static unsigned draining_generations(const struct supervisor *sv, unsigned *oldest)
{
    unsigned count = 0, seen[TOOL_MAX_WORKERS > 64 ? TOOL_MAX_WORKERS : 64];

    *oldest = 0;
    for (size_t i = 0; i < sv->nprocs; i++) {
        struct proc *p = sv->procs[i];
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

static void kill_generation(struct supervisor *sv, unsigned gen)
{
    for (size_t i = 0; i < sv->nprocs; i++) {
        struct proc *p = sv->procs[i];
        if (p->kind == PK_WORKER && p->gen == gen && !p->killed &&
            (p->state == PS_STOPPING || p->state == PS_GONE))
            proc_kill(p);
    }
}

/* Kills the oldest draining generations until at most `keep` drain. */
static void kill_draining_beyond(struct supervisor *sv, unsigned keep, uint64_t now, const char *why)
{
    unsigned oldest, count;
    char d[32];

    while ((count = draining_generations(sv, &oldest)) > keep && oldest) {
        log_warn("%u generation%s draining (--max-draining %d): killing generation %u after %s%s", count,
                 count == 1 ? "" : "s", sv->cfg->max_draining, oldest,
                 dur(now - gen_info(sv, oldest)->drain_at, d, sizeof d), why);
        kill_generation(sv, oldest);
    }
}

static uint64_t max_draining_wait(const struct supervisor *sv)
{
    return sv->cfg->drain_timeout < MAX_DRAINING_WAIT ? sv->cfg->drain_timeout : MAX_DRAINING_WAIT;
}

bool reload_may_start(struct supervisor *sv, uint64_t now)
{
    unsigned oldest, count = draining_generations(sv, &oldest);

    /* The reload adds one draining generation when it commits. */
    if ((int)count < sv->cfg->max_draining) {
        sv->reload_wait_since = 0;
        return true;
    }
    if (!sv->reload_wait_since) {
        sv->reload_wait_since = now;
        log_debug("reload: waiting for one of %u draining generations to finish (--max-draining %d)", count,
                  sv->cfg->max_draining);
        return false;
    }
    if (now - sv->reload_wait_since < max_draining_wait(sv))
        return false;
    sv->reload_wait_since = 0;
    kill_draining_beyond(sv, (unsigned)sv->cfg->max_draining - 1, now, ", for the reload waiting for it");
    return true;
}

uint64_t reload_wait_deadline(const struct supervisor *sv)
{
    return sv->reload_pending && sv->reload_wait_since ? sv->reload_wait_since + max_draining_wait(sv) : UINT64_MAX;
}

/* Slot i's next process is ready: it becomes current; the old one drains. */
static void commit_slot(struct supervisor *sv, int i, uint64_t now)
{
    struct slot *s = &sv->slots[i];
    struct proc *old = s->cur;

    s->cur = s->next;
    s->next = NULL;
    s->respawn_at = 0;
    s->streak = 0;
    s->restarts = 0;
    s->backoff = sv->cfg->backoff_min;
    s->last_failure[0] = '\0';
    if (old) {
        gen_info(sv, old->gen)->drain_at = now;
        proc_stop(sv, old, now);
    }
}

static void reload_succeeded(struct supervisor *sv, uint64_t now)
{
    struct gen_info *g = gen_info(sv, sv->reload_gen);
    char d[32], msg[256], old[64] = "";
    unsigned prev = 0;

    g->ready_at = now;
    for (size_t i = 0; i < sv->nprocs; i++)
        if (sv->procs[i]->kind == PK_WORKER && sv->procs[i]->state == PS_STOPPING &&
            sv->procs[i]->stop_at == now && sv->procs[i]->gen > prev)
            prev = sv->procs[i]->gen;
    if (prev)
        (void)snprintf(old, sizeof old, "; generation %u draining", prev);
    (void)snprintf(msg, sizeof msg, "generation %u ready in %s", sv->reload_gen,
                   dur(now - sv->reload_started, d, sizeof d));
    log_info("%s%s", msg, old);
    sv->reloads_ok++;
    kill_draining_beyond(sv, (unsigned)sv->cfg->max_draining, now, ""); /* a safety net: see reload_may_start() */
    first_ready_check(sv, now); /* a reload may end the first start-up */
    reload_finish(sv, true, msg);
}

void reload_start(struct supervisor *sv, uint64_t now)
{
    char err[300];
    int first = 0, last = sv->cfg->workers;

    sv->reload_pending = false;
    sv->reloading = true;
    sv->reload_seq = sv->next_seq++;
    sv->reload_gen = ++sv->gen_last;
    sv->reload_started = now;
    sv->fail_msg[0] = '\0';
    *gen_info(sv, sv->reload_gen) = (struct gen_info){.id = sv->reload_gen, .started = now};
    if (sv->ready_sent)
        notify_systemd(sv, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading: starting generation %u",
                       (unsigned long long)now, sv->reload_gen);
    log_info("reload: starting generation %u%s", sv->reload_gen, sv->cfg->rolling ? " (rolling)" : "");
    if (sv->cfg->rolling) {
        sv->roll_slot = 0;
        last = 1;
    }
    for (int i = first; i < last; i++) {
        sv->slots[i].next = start_worker(sv, i, sv->reload_gen, err, sizeof err);
        if (!sv->slots[i].next) {
            reload_fail(sv, "%s", err);
            return;
        }
    }
}

/* ---- readiness ---- */

static void first_ready_check(struct supervisor *sv, uint64_t now)
{
    char d[32];
    if (sv->ready_sent || !all_cur_ready(sv))
        return;
    sv->ready_sent = true;
    unsigned g = sv->slots[0].cur->gen;
    gen_info(sv, g)->ready_at = now;
    log_info("generation %u ready in %s (%d worker%s); supervisor ready", g,
             dur(now - sv->start_time, d, sizeof d), sv->cfg->workers, sv->cfg->workers > 1 ? "s" : "");
    notify_systemd(sv, "READY=1\nSTATUS=generation %u serving", g);
}

void proc_ready(struct supervisor *sv, struct proc *p, uint64_t now, const char *how)
{
    struct slot *s = &sv->slots[p->slot];
    char d[32], nm[96];

    p->state = PS_READY;
    p->ready_at = now;
    p->deadline = UINT64_MAX;
    kill_check(p);
    log_debug("%s ready (%s) in %s", wname(sv, p, nm, sizeof nm), how, dur(now - p->started, d, sizeof d));
    if (s->next == p) {
        if (sv->cfg->rolling) {
            commit_slot(sv, p->slot, now);
            log_info("generation %u worker %d ready in %s (rolling %d/%d)", p->gen, p->slot,
                     dur(now - p->started, d, sizeof d), p->slot + 1, sv->cfg->workers);
            if (++sv->roll_slot < sv->cfg->workers) {
                char err[300];
                struct slot *n = &sv->slots[sv->roll_slot];
                n->next = start_worker(sv, sv->roll_slot, sv->reload_gen, err, sizeof err);
                if (!n->next)
                    reload_fail(sv, "%s", err);
                return;
            }
            reload_succeeded(sv, now);
            return;
        }
        for (int i = 0; i < sv->cfg->workers; i++)
            if (!sv->slots[i].next || sv->slots[i].next->state != PS_READY)
                return;
        for (int i = 0; i < sv->cfg->workers; i++)
            commit_slot(sv, i, now);
        reload_succeeded(sv, now);
        return;
    }
    if (s->cur == p && s->restarts > 0 && sv->ready_sent) {
        log_info("%s is back (restart %u) and ready in %s", wname(sv, p, nm, sizeof nm), s->restarts,
                 dur(now - p->started, d, sizeof d));
        if (all_cur_ready(sv) && !sv->reloading)
            notify_systemd(sv, "STATUS=generation %u serving", p->gen);
    }
    first_ready_check(sv, now);
}

/* The worker a notification is from, or NULL. Its own pid is looked up
 * first, in the table; only with --notify-access all, and only for a
 * sender of our own uid, is the sender's ancestry read from /proc: a
 * flood from anyone else costs a table scan per datagram, nothing more. */
static struct proc *notify_sender(struct supervisor *sv, const struct notify_msg *m)
{
    for (size_t i = 0; i < sv->nprocs; i++) {
        struct proc *p = sv->procs[i];
        if (p->kind == PK_WORKER && p->alive && p->pid == m->pid)
            return p;
    }
    if (sv->cfg->notify_access != NOTIFY_ALL || m->uid != geteuid())
        return NULL;
    for (size_t i = 0; i < sv->nprocs; i++) {
        struct proc *p = sv->procs[i];
        if (p->kind == PK_WORKER && p->alive && pid_descends_from(m->pid, p->pid))
            return p;
    }
    return NULL;
}

void on_notify(struct supervisor *sv, uint64_t now)
{
    struct notify_msg m;

    for (int n = 0; n < 64 && notify_read(sv->notify.fd, &m) > 0; n++) {
        struct proc *w = notify_sender(sv, &m);
        if (!w) {
            /* Logged at the 1st, 2nd, 4th, 8th... so a flood cannot fill the log. */
            unsigned long k = ++sv->notify_ignored;
            if ((k & (k - 1)) == 0)
                log_warn("ignoring a notification from pid %ld (uid %ld): not a worker%s [%lu so far]",
                         (long)m.pid, (long)m.uid,
                         sv->cfg->notify_access == NOTIFY_ALL
                             ? ""
                             : " (a process a worker started needs --notify-access all)",
                         k);
            continue;
        }
        if (m.has_status)
            (void)snprintf(w->status, sizeof w->status, "%s", m.status);
        if (m.extend_usec && w->state == PS_STARTING && deadline_after(now, m.extend_usec) > w->deadline)
            w->deadline = deadline_after(now, m.extend_usec);
        if (m.ready && w->state == PS_STARTING && sv->cfg->ready_mode == READY_NOTIFY) {
            char how[64];
            (void)snprintf(how, sizeof how, "READY=1 from pid %ld", (long)m.pid);
            proc_ready(sv, w, now, how);
        }
    }
}

/*
 * exits.c - what a process's end means: a crash of a serving worker (it
 * is restarted, with a backoff), a new generation that exits before it
 * is ready (the reload fails), a draining one that finished, a readiness
 * check's verdict, or an orphan to reap.
 *
 * The supervisor is a child subreaper: every orphan below it is reparented
 * to it and reaped here with a waitpid(-1) loop on SIGCHLD, so it is a good
 * PID 1 in a container.
 */
#include "supervisor.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "shared/status.h"

static bool group_alive(pid_t pgid)
{
    return kill(-pgid, 0) == 0 || errno == EPERM;
}

static void schedule_respawn(struct supervisor *sv, struct slot *s, unsigned gen, uint64_t now)
{
    uint64_t delay = s->backoff;

    s->backoff = s->backoff * 2 > sv->cfg->backoff_max ? sv->cfg->backoff_max : s->backoff * 2;
    s->streak++;
    s->restarts++;
    s->respawn_at = now + delay;
    s->respawn_gen = gen;
}

void respawn_due(struct supervisor *sv, uint64_t now)
{
    for (int i = 0; i < sv->cfg->workers && !sv->stopping; i++) {
        struct slot *s = &sv->slots[i];
        char err[200], d[32];

        if (!s->respawn_at || now < s->respawn_at)
            continue;
        s->respawn_at = 0;
        s->cur = start_worker(sv, i, s->respawn_gen, err, sizeof err);
        if (!s->cur) {
            (void)snprintf(s->last_failure, sizeof s->last_failure, "%s", err);
            schedule_respawn(sv, s, s->respawn_gen, now);
            log_err("generation %u worker %d: %s; next try in %s", s->respawn_gen, i, err,
                    dur(s->respawn_at - now, d, sizeof d));
        }
    }
}

static void on_worker_crash(struct supervisor *sv, struct proc *p, int status, uint64_t now)
{
    struct slot *s = &sv->slots[p->slot];
    char st[96], d[32], d2[32], nm[96];
    uint64_t up = now - p->started;
    bool started = p->state == PS_READY;

    s->cur = NULL;
    if (up >= sv->cfg->backoff_reset) {
        s->streak = 0;
        s->backoff = sv->cfg->backoff_min;
    }
    schedule_respawn(sv, s, p->gen, now);
    (void)snprintf(s->last_failure, sizeof s->last_failure, "pid %ld %s after %s%s", (long)p->pid,
                   handoff__wait_status(status, st, sizeof st), dur(up, d, sizeof d),
                   started ? "" : ", before it was ready");
    (void)snprintf(sv->last_failure, sizeof sv->last_failure, "generation %u worker %d: %s", p->gen,
                   p->slot, s->last_failure);
    log_warn("%s %s after %s%s%s; restart %u in %s%s", wname(sv, p, nm, sizeof nm), st, d,
             started ? "" : " (never ready)", started ? "" : PRELOAD_HINT(sv, p), s->restarts,
             dur(s->respawn_at - now, d2, sizeof d2), s->streak >= 3 ? " (crash loop)" : "");
    if (sv->ready_sent)
        notify_systemd(sv, "STATUS=worker %d %s; restart %u in %s", p->slot, st, s->restarts, d2);
}

/* A --ready-command run ended: its worker is ready if it exited 0. */
static void on_check_exit(struct supervisor *sv, struct proc *p, int status, const char *st, uint64_t now)
{
    struct proc *w = p->owner;
    char nm[96];

    if (w) {
        w->check = NULL;
        if (w->state == PS_STARTING) {
            if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
                char how[64];
                (void)snprintf(how, sizeof how, "--ready-command succeeded (try %u)", w->checks);
                proc_ready(sv, w, now, how);
            } else {
                w->next_check = now + sv->cfg->ready_interval;
                log_debug("%s: --ready-command %s (try %u)", wname(sv, w, nm, sizeof nm), st, w->checks);
            }
        }
    }
    (void)kill(-p->pid, SIGKILL);
    proc_remove(sv, p);
}

static void on_proc_exit(struct supervisor *sv, struct proc *p, int status, uint64_t now)
{
    char st[96], d[32], nm[96];

    p->alive = false;
    handoff__wait_status(status, st, sizeof st);
    if (p->kind == PK_CHECK) {
        on_check_exit(sv, p, status, st, now);
        return;
    }
    struct slot *s = &sv->slots[p->slot];
    if (p->counts && status_exit_code(status) != 0 && sv->exit_code == 0)
        sv->exit_code = status_exit_code(status);
    if (p->failing) {
        log_debug("%s %s (killed: its reload failed)", wname(sv, p, nm, sizeof nm), st);
        if (sv->failing > 0 && --sv->failing == 0)
            reload_finish(sv, false, sv->fail_msg);
    } else if (s->next == p) {
        reload_fail(sv, "%s %s after %s, before it was ready%s", wshort(sv, p, nm, sizeof nm), st,
                    dur(now - p->started, d, sizeof d), PRELOAD_HINT(sv, p));
    } else if (s->cur == p && !sv->stopping) {
        on_worker_crash(sv, p, status, now);
    } else if (p->state == PS_STOPPING || p->state == PS_KILLED || sv->stopping) {
        log_info("%s %s after %s%s", wname(sv, p, nm, sizeof nm), st,
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
            (void)kill(-p->pid, sv->cfg->stop_signal);
            p->stop_at = now;
            p->deadline = deadline_after(now, sv->cfg->drain_timeout);
        }
        if (p->killed)
            (void)kill(-p->pid, SIGKILL);
        p->state = PS_GONE;
        log_info("%s: its process group still has processes; %s", wname(sv, p, nm, sizeof nm),
                 p->deadline == UINT64_MAX ? "killed" : "waiting for them to exit");
        return;
    }
    proc_remove(sv, p);
}

void reap_all(struct supervisor *sv, uint64_t now)
{
    int status;
    pid_t pid;

    for (int n = 0; n < 4096; n++) {
        do {
            pid = waitpid(-1, &status, WNOHANG);
        } while (pid < 0 && errno == EINTR);
        if (pid <= 0)
            break;
        struct proc *p = proc_by_pid(sv, pid);
        if (p) {
            on_proc_exit(sv, p, status, now);
        } else {
            char st[96];
            log_debug("reaped orphan pid %ld (%s)", (long)pid, handoff__wait_status(status, st, sizeof st));
        }
    }
    /* Groups whose leader is gone: finished once the group is empty. */
    for (size_t i = 0; i < sv->nprocs;) {
        struct proc *p = sv->procs[i];
        if (p->state == PS_GONE && !group_alive(p->pid)) {
            proc_remove(sv, p);
            continue;
        }
        i++;
    }
}

void reap_until_empty(struct supervisor *sv)
{
    for (int n = 0; sv->nprocs > 0 && n < 100000; n++) {
        siginfo_t si;
        reap_all(sv, handoff_now_usec());
        if (sv->nprocs == 0)
            break;
        memset(&si, 0, sizeof si);
        if (waitid(P_ALL, 0, &si, WEXITED | WNOWAIT) < 0 && errno != EINTR)
            break; /* ECHILD: nothing left to wait for */
    }
}

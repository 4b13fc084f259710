/*
 * state.c - the supervisor's state and what every module above does with
 * it: the process table, starting and stopping processes, their names in
 * messages, generation records and notifications to systemd.
 */
#include "supervisor.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct gen_info *gen_info(struct supervisor *sv, unsigned id)
{
    return &sv->gens[id % NGEN];
}

/* To systemd's NOTIFY_SOCKET, never blocking. The first failure of a
 * kind is a warning; repeats (e.g. WATCHDOG=1) are logged with -v only. */
void notify_systemd(struct supervisor *sv, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    int r;

    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof msg, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
    va_end(ap);
    r = handoff__notifier_send(&sv->sd, msg, strlen(msg));
    if (r < 0) {
        sv->sd_lost++;
        if (r != sv->sd_err)
            log_warn("sd_notify to %s failed: %s%s; the supervisor carries on (repeats are logged with -v)",
                     sv->sd_path, strerror(-r), r == -EAGAIN ? " (its receiver is not reading)" : "");
        else
            log_debug("sd_notify to %s failed: %s", sv->sd_path, strerror(-r));
        sv->sd_err = r;
    } else if (r > 0 && sv->sd_err) {
        log_info("sd_notify to %s works again (%u message%s lost)", sv->sd_path, sv->sd_lost,
                 sv->sd_lost == 1 ? "" : "s");
        sv->sd_err = 0;
        sv->sd_lost = 0;
    }
}

/* ---- the process table ---- */

struct proc *proc_add(struct supervisor *sv, int kind, pid_t pid, unsigned gen, int slot)
{
    struct proc *p;

    if (sv->nprocs == sv->cap) {
        size_t cap = sv->cap ? sv->cap * 2 : 16;
        struct proc **n = realloc(sv->procs, cap * sizeof(struct proc *));
        if (!n)
            return NULL;
        sv->procs = n;
        sv->cap = cap;
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
    sv->procs[sv->nprocs++] = p;
    return p;
}

void proc_remove(struct supervisor *sv, struct proc *p)
{
    for (size_t i = 0; i < sv->nprocs; i++) {
        if (sv->procs[i] == p) {
            sv->procs[i] = sv->procs[--sv->nprocs];
            break;
        }
    }
    for (size_t i = 0; i < sv->nprocs; i++)
        if (sv->procs[i]->owner == p)
            sv->procs[i]->owner = NULL;
    free(p);
}

struct proc *proc_by_pid(struct supervisor *sv, pid_t pid)
{
    for (size_t i = 0; i < sv->nprocs; i++)
        if (sv->procs[i]->alive && sv->procs[i]->pid == pid)
            return sv->procs[i];
    return NULL;
}

void kill_check(struct proc *p)
{
    if (p->check) {
        (void)kill(-p->check->pid, SIGKILL);
        p->check->owner = NULL;
        p->check = NULL;
    }
}

void proc_stop(struct supervisor *sv, struct proc *p, uint64_t now)
{
    if (p->state != PS_STARTING && p->state != PS_READY)
        return;
    kill_check(p);
    (void)kill(p->pid, sv->cfg->stop_signal);
    p->state = PS_STOPPING;
    p->stop_at = now;
    p->deadline = deadline_after(now, sv->cfg->drain_timeout);
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

const char *wname(const struct supervisor *sv, const struct proc *p, char *buf, size_t len)
{
    if (sv->cfg->workers > 1)
        (void)snprintf(buf, len, "generation %u worker %d (pid %ld)", p->gen, p->slot, (long)p->pid);
    else
        (void)snprintf(buf, len, "generation %u (pid %ld)", p->gen, (long)p->pid);
    return buf;
}

const char *wshort(const struct supervisor *sv, const struct proc *p, char *buf, size_t len)
{
    if (sv->cfg->workers > 1)
        (void)snprintf(buf, len, "worker %d (pid %ld)", p->slot, (long)p->pid);
    else
        (void)snprintf(buf, len, "pid %ld", (long)p->pid);
    return buf;
}

bool all_cur_ready(const struct supervisor *sv)
{
    for (int i = 0; i < sv->cfg->workers; i++)
        if (!sv->slots[i].cur || sv->slots[i].cur->state != PS_READY)
            return false;
    return true;
}

/* ---- starting processes ---- */

/* A child we could not record: killed and reaped at once, so that no
 * process runs that the table does not know. */
static void unrecord(pid_t pid)
{
    (void)kill(-pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
}

struct proc *start_worker(struct supervisor *sv, int slot, unsigned gen, char *err, size_t errlen)
{
    const struct config *cfg = sv->cfg;
    uint64_t now = handoff_now_usec();
    pid_t pid = spawn_worker(cfg->argv, sv->ls, sv->nls, sv->notify.path, sv->spawn_preload, gen, &sv->orig_mask,
                             err, errlen);
    struct proc *p;

    if (pid < 0)
        return NULL;
    p = proc_add(sv, PK_WORKER, pid, gen, slot);
    if (!p) {
        unrecord(pid);
        (void)snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->started = now;
    p->state = PS_STARTING;
    p->deadline = deadline_after(now, cfg->ready_timeout);
    if (cfg->ready_mode == READY_DELAY)
        p->next_check = now + cfg->ready_delay;
    else if (cfg->ready_mode == READY_COMMAND)
        p->next_check = now + cfg->ready_interval;
    log_debug("started generation %u worker %d: pid %ld", gen, slot, (long)pid);
    return p;
}

void start_check(struct supervisor *sv, struct proc *p, uint64_t now)
{
    pid_t c = spawn_check(sv->cfg->ready_command, p->pid, p->gen, p->slot, &sv->orig_mask);
    struct proc *k;

    p->checks++;
    p->next_check = now + sv->cfg->ready_interval;
    if (c <= 0)
        return;
    k = proc_add(sv, PK_CHECK, c, p->gen, p->slot);
    if (!k) {
        unrecord(c);
        log_err("--ready-command: out of memory (tried again in --ready-interval)");
        return;
    }
    k->owner = p;
    p->check = k;
}

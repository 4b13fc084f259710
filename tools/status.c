/*
 * status.c - the text of `handoff status`.
 */
#include "supervisor.h"

#include <stdio.h>
#include <unistd.h>

static const char *state_name(const struct proc *p)
{
    switch (p->state) {
    case PS_STARTING: return "starting";
    case PS_READY: return "ready";
    case PS_STOPPING: return "draining";
    case PS_KILLED: return "killed";
    default: return p->killed ? "leftovers killed" : "leftovers draining";
    }
}

/* Each generation once: there are far fewer than processes (at most
 * --max-draining + 2 alive, plus pending restarts). */
static unsigned add_gen(unsigned *gens, unsigned ng, unsigned g)
{
    for (unsigned k = 0; k < ng; k++)
        if (gens[k] == g)
            return ng;
    if (ng < 128)
        gens[ng++] = g;
    return ng;
}

void sup_status(const struct supervisor *sv, struct sbuf *b)
{
    uint64_t now = handoff_now_usec();
    unsigned gens[128], ng = 0;
    char d[32], d2[32];

    sbuf_printf(b, "supervisor: pid %ld, up %s, %s\n", (long)getpid(),
            dur(now - sv->start_time, d, sizeof d),
            sv->stopping ? "stopping" : sv->reloading ? "reloading" : sv->ready_sent ? "ready" : "starting");
    /* What a worker, a command line or the environment gave us is escaped:
     * the text goes to a terminal. */
    sbuf_printf(b, "command:");
    for (char **a = sv->cfg->argv; *a; a++) {
        sbuf_printf(b, " ");
        sbuf_text(b, *a);
    }
    sbuf_printf(b, "\n");
    for (int i = 0; i < sv->nls; i++) {
        sbuf_printf(b, "listen: fd %d ", HANDOFF_LISTEN_FDS_START + i);
        sbuf_text(b, sv->ls[i].name);
        sbuf_printf(b, " ");
        sbuf_text(b, sv->ls[i].spec);
        sbuf_printf(b, "\n");
    }
    /* Generations, newest first: those of any process or pending restart. */
    for (size_t i = 0; i < sv->nprocs; i++)
        if (sv->procs[i]->kind == PK_WORKER)
            ng = add_gen(gens, ng, sv->procs[i]->gen);
    for (int i = 0; i < sv->cfg->workers; i++)
        if (sv->slots[i].respawn_at)
            ng = add_gen(gens, ng, sv->slots[i].respawn_gen);
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
        const struct gen_info *gi = &sv->gens[g % NGEN];
        bool active = false, draining = false, starting = sv->reloading && g == sv->reload_gen;
        for (int i = 0; i < sv->cfg->workers; i++)
            active |= (sv->slots[i].cur && sv->slots[i].cur->gen == g) ||
                      (sv->slots[i].respawn_at && sv->slots[i].respawn_gen == g);
        for (size_t i = 0; i < sv->nprocs; i++)
            draining |= sv->procs[i]->kind == PK_WORKER && sv->procs[i]->gen == g &&
                        sv->procs[i]->state >= PS_STOPPING;
        sbuf_printf(b, "generation %u: %s%s%s, started %s ago", g,
                starting ? "starting" : active ? "active" : draining ? "draining" : "failed",
                active && draining ? "+draining" : "", starting && active ? "+active" : "",
                dur(now - gi->started, d, sizeof d));
        if (gi->ready_at)
            sbuf_printf(b, ", ready in %s", dur(gi->ready_at - gi->started, d, sizeof d));
        sbuf_printf(b, "\n");
        for (int i = 0; i < sv->cfg->workers; i++) {
            const struct slot *s = &sv->slots[i];
            if (s->respawn_at && s->respawn_gen == g)
                sbuf_printf(b, "  worker %d: no process, restart %u in %s (%u crash%s in a row)\n",
                        i, s->restarts, dur(s->respawn_at > now ? s->respawn_at - now : 0, d, sizeof d),
                        s->streak, s->streak == 1 ? "" : "es");
        }
        for (size_t n = 0; n < sv->nprocs * (size_t)sv->cfg->workers; n++) {
            /* By slot, then in table order. */
            const struct proc *p = sv->procs[n % sv->nprocs];
            if (p->kind != PK_WORKER || p->gen != g || p->slot != (int)(n / sv->nprocs))
                continue;
            const struct slot *s = &sv->slots[p->slot];
            sbuf_printf(b, "  worker %d: pid %ld, %s, up %s", p->slot, (long)p->pid,
                    state_name(p), dur(now - p->started, d, sizeof d));
            if (p->state >= PS_STOPPING && p->stop_at)
                sbuf_printf(b, ", draining for %s", dur(now - p->stop_at, d, sizeof d));
            if (p->deadline != UINT64_MAX && p->deadline > now)
                sbuf_printf(b, ", %s in %s", p->state == PS_STARTING ? "ready timeout" : "SIGKILL",
                        dur(p->deadline - now, d2, sizeof d2));
            if (s->cur == p)
                sbuf_printf(b, ", restarts %u", s->restarts);
            if (p->status[0]) {
                sbuf_printf(b, ", status \"");
                sbuf_escaped(b, p->status);
                sbuf_printf(b, "\"");
            }
            sbuf_printf(b, "\n");
            if (s->cur == p && s->last_failure[0]) {
                sbuf_printf(b, "    last failure: ");
                sbuf_text(b, s->last_failure);
                sbuf_printf(b, "\n");
            }
        }
    }
    sbuf_printf(b, "reloads: %u ok, %u failed%s%s\n", sv->reloads_ok, sv->reloads_failed,
            sv->reloading ? ", one in progress" : "",
            sv->reload_pending && sv->reload_wait_since ? ", one waiting for a draining generation to finish"
                                                    : "");
    if (sv->last_failure[0]) {
        sbuf_printf(b, "last failure: ");
        sbuf_text(b, sv->last_failure);
        sbuf_printf(b, "\n");
    }
}


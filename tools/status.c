/*
 * status.c - the text of `handoff status`.
 */
#include "supervisor.h"

#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

__attribute__((format(printf, 4, 5))) static size_t put(char *buf, size_t len, size_t off,
                                                        const char *fmt, ...)
{
    va_list ap;
    int n;

    if (off >= len)
        return off;
    va_start(ap, fmt);
    n = vsnprintf(buf + off, len - off, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized) */
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
    default: return p->killed ? "leftovers killed" : "leftovers draining";
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
        for (size_t n = 0; n < S.nprocs * (size_t)S.cfg->workers; n++) {
            /* By slot, then in table order. */
            struct proc *p = S.procs[n % S.nprocs];
            if (p->kind != PK_WORKER || p->gen != g || p->slot != (int)(n / S.nprocs))
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
    o = put(buf, len, o, "reloads: %u ok, %u failed%s%s\n", S.reloads_ok, S.reloads_failed,
            S.reloading ? ", one in progress" : "",
            S.reload_pending && S.reload_wait_since ? ", one waiting for a draining generation to finish"
                                                    : "");
    if (S.last_failure[0])
        o = put(buf, len, o, "last failure: %s\n", S.last_failure);
    return o;
}


/*
 * preload.c - `handoff run --preload`: the supervisor's side of
 * libhandoff-preload.so (src/preload/ has the shim, the broker and the
 * matching rules; docs/guide-unmodified-servers.md the why).
 *
 * At start: find the library (relative to this executable, so that an
 * installed tree can move; $HANDOFF_PRELOAD_LIB overrides), check it, open
 * the broker over the --listen sockets, and build the two variables every
 * worker gets (spawn.c adds them, after checking that the library can work
 * in the command at all). In the loop: answer the shims (a socket, or a
 * refusal), and take a shim's report that the server accepts on its
 * sockets as the worker's readiness.
 */
#include "supervisor.h"

#include "preload.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct preload {
    struct supervisor *sv;
    struct pl_broker *b;
    char lib[PATH_MAX];
    char *ld_preload, *handoff_preload;
    struct spawn_preload spawn;
    uint64_t now;
};

/* The library next to this executable: where `cmake --install` puts it
 * (HANDOFF_PRELOAD_INSTALLED, relative to the bin directory), or, for the
 * executable in the build tree, where the build puts it. */
static int find_lib(char *buf, size_t len, char *err, size_t errlen)
{
    char exe[PATH_MAX], real[PATH_MAX], *slash;
    const char *env = getenv("HANDOFF_PRELOAD_LIB");
    ssize_t n;
    int w;

    if (env && *env) {
        w = snprintf(buf, len, "%s", env);
        return w < 0 || (size_t)w >= len ? -1 : 0;
    }
    n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        (void)snprintf(err, errlen, "cannot find libhandoff-preload.so: /proc/self/exe: %s (set HANDOFF_PRELOAD_LIB)",
                       strerror(errno));
        return -1;
    }
    exe[n] = '\0';
    slash = strrchr(exe, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    if (strcmp(exe, HANDOFF_PRELOAD_BUILD_BINDIR) == 0)
        w = snprintf(buf, len, "%s", HANDOFF_PRELOAD_BUILD_LIB);
    else
        w = snprintf(buf, len, "%s/%s", exe, HANDOFF_PRELOAD_INSTALLED);
    if (w < 0 || (size_t)w >= len) {
        (void)snprintf(err, errlen, "cannot find libhandoff-preload.so: path too long");
        return -1;
    }
    /* LD_PRELOAD wants a plain absolute path: no "..". A missing file is
     * reported by pl_lib_check(). */
    if (realpath(buf, real) && strlen(real) < len)
        memcpy(buf, real, strlen(real) + 1);
    return 0;
}

/* The worker whose tree pid is in: only those get the sockets. */
static pid_t owner_of(pid_t pid, void *ud)
{
    struct preload *pr = ud;
    struct supervisor *sv = pr->sv;
    struct proc *p = proc_by_pid(sv, pid);

    if (p && p->kind == PK_WORKER)
        return p->pid;
    for (size_t i = 0; i < sv->nprocs; i++) {
        p = sv->procs[i];
        if (p->kind == PK_WORKER && p->alive && pid_descends_from(pid, p->pid))
            return p->pid;
    }
    return 0;
}

static struct proc *worker(struct supervisor *sv, pid_t owner)
{
    struct proc *p = proc_by_pid(sv, owner);
    return p && p->kind == PK_WORKER ? p : NULL;
}

static void on_served(pid_t owner, pid_t pid, size_t index, void *ud)
{
    struct preload *pr = ud;
    struct proc *w = worker(pr->sv, owner);

    (void)pid;
    (void)index;
    if (w)
        w->sockets_taken++;
}

/* The shim reports that the server waits for connections on every socket
 * it bound: READY=1 for a server that cannot say it. */
static void on_ready(pid_t owner, pid_t pid, uint64_t mask, void *ud)
{
    struct preload *pr = ud;
    struct supervisor *sv = pr->sv;
    struct proc *w = worker(sv, owner);
    struct sbuf how = {0};
    size_t n;
    const struct pl_sock *h = pl_broker_held(pr->b, &n);

    if (!w || w->state != PS_STARTING || sv->cfg->ready_mode != READY_NOTIFY)
        return;
    sbuf_printf(&how, "pid %ld accepts on", (long)pid);
    for (size_t j = 0; j < n; j++)
        if (mask >> j & 1) {
            char a[200];
            (void)pl_sock_format(&h[j], a, sizeof a);
            sbuf_printf(&how, " %s", a);
        }
    proc_ready(sv, w, pr->now, how.p ? how.p : "the preload library");
    sbuf_free(&how);
}

static void on_log(int level, const char *msg, void *ud)
{
    (void)ud;
    tool_log(level == 0 ? LOG_ERR_ : level == 1 ? LOG_WARN_ : level == 2 ? LOG_INFO_ : LOG_DEBUG_, "%s", msg);
}

int preload_open(struct supervisor *sv)
{
    const struct config *cfg = sv->cfg;
    struct preload *pr;
    char err[600], addr[108];
    int fds[TOOL_MAX_LISTEN], r;

    if (!cfg->preload)
        return 0;
    pr = calloc(1, sizeof *pr);
    if (!pr) {
        log_err("--preload: out of memory");
        return -1;
    }
    sv->preload = pr;
    pr->sv = sv;
    err[0] = '\0';
    if (find_lib(pr->lib, sizeof pr->lib, err, sizeof err) < 0 || pl_lib_check(pr->lib, err, sizeof err) < 0) {
        log_err("--preload: %s", err[0] ? err : "cannot find libhandoff-preload.so");
        return -1;
    }
    for (int i = 0; i < sv->nls; i++)
        fds[i] = sv->ls[i].fd;
    if ((r = pl_broker_open(fds, (size_t)sv->nls, &pr->b, addr, sizeof addr)) < 0) {
        log_err("--preload: cannot open the socket broker: %s", strerror(-r));
        return -1;
    }
    r = pl_broker_worker_env(pr->b, pr->lib, getenv("LD_PRELOAD"), cfg->preload_depth,
                             cfg->ready_mode == READY_NOTIFY, cfg->verbosity >= 2 ? 2 : 1, cfg->stop_signal,
                             &pr->ld_preload, &pr->handoff_preload);
    if (r < 0) {
        log_err("--preload: %s", r == -EINVAL ? "the library's path cannot go into LD_PRELOAD" : strerror(-r));
        return -1;
    }
    pr->spawn = (struct spawn_preload){pr->lib, pr->ld_preload, pr->handoff_preload};
    sv->spawn_preload = &pr->spawn;
    log_debug("--preload: %s, broker %s", pr->lib, addr);
    return 0;
}

int preload_fd(const struct supervisor *sv)
{
    return sv->preload && sv->preload->b ? pl_broker_fd(sv->preload->b) : -1;
}

void preload_on_event(struct supervisor *sv, uint64_t now)
{
    struct preload *pr = sv->preload;
    struct pl_broker_ops ops = {.owner = owner_of, .served = on_served, .ready = on_ready, .log = on_log,
                                .ud = pr};

    if (!pr || !pr->b)
        return;
    pr->now = now;
    pl_broker_on_event(pr->b, &ops);
}

void preload_close(struct supervisor *sv)
{
    struct preload *pr = sv->preload;

    if (!pr)
        return;
    pl_broker_close(pr->b);
    free(pr->ld_preload);
    free(pr->handoff_preload);
    free(pr);
    sv->preload = NULL;
    sv->spawn_preload = NULL;
}

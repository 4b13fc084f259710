/*
 * spawn.c - starting workers and readiness checks, with the exec plan the
 * library uses for its own upgrades (src/shared/exec.h): fds at 3.., the
 * environment built in advance without the protocol variables
 * (shared/protocol.h), LISTEN_PID written by the child itself, every other
 * fd close-on-exec.
 *
 * A worker gets the listening sockets described twice, in the two
 * protocols unmodified servers speak: systemd's LISTEN_FDS/LISTEN_PID/
 * LISTEN_FDNAMES and Server::Starter's SERVER_STARTER_PORT; or, with
 * --preload, none of them but libhandoff-preload.so in LD_PRELOAD and the
 * sockets described in HANDOFF_PRELOAD (src/preload/). Each child
 * leads its own process group, so that a terminal's Ctrl-C reaches only
 * the supervisor (which then stops everyone gracefully) and SIGKILL can
 * take down a worker together with its own children; and it gets SIGTERM
 * if the supervisor dies (PR_SET_PDEATHSIG) instead of serving on
 * unsupervised.
 */
#include "tool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preload.h"
#include "shared/exec.h"

extern char **environ;

/* The parts common to workers and checks: argv resolved now (so a deploy
 * that swaps a binary or a symlink in PATH is honoured by the next
 * generation), the environment without the protocol variables, the
 * process group, the parent-death signal and the mask. */
static int plan_init(struct handoff__exec *p, char *const *argv, const sigset_t *mask)
{
    int r;

    handoff__exec_init(p, argv);
    p->flags = HANDOFF__EXEC_SETPGID | HANDOFF__EXEC_PDEATHSIG;
    p->pdeathsig = SIGTERM;
    p->mask = *mask;
    if ((r = handoff__exec_resolve(p, NULL)) < 0)
        return r;
    return handoff__exec_env_inherit(p, environ);
}

/* --preload: the library's variables, LD_PRELOAD replacing the one the
 * plan inherited (the shim is appended to it already), and the pid slot
 * of HANDOFF_PRELOAD for the child to fill, as LISTEN_PID's would be. */
static int plan_preload(struct handoff__exec *p, const struct spawn_preload *pre)
{
    int r;

    for (size_t i = 0; i < p->nenv; i++)
        if (strncmp(p->envp[i], "LD_PRELOAD=", 11) == 0) {
            char *kv = strdup(pre->ld_preload);
            if (!kv)
                return -ENOMEM;
            free(p->envp[i]);
            p->envp[i] = kv;
            goto added;
        }
    if ((r = handoff__exec_env_add(p, "%s", pre->ld_preload)) < 0)
        return r;
added:
    if ((r = handoff__exec_env_add(p, "%s", pre->handoff_preload)) < 0)
        return r;
    p->pid_slot = p->envp[p->nenv - 1] + strlen(p->envp[p->nenv - 1]) - PL_PID_DIGITS;
    return 0;
}

pid_t spawn_worker(char *const *argv, const struct listener *ls, int n, const char *notify_path,
                   const struct spawn_preload *pre, unsigned gen, const sigset_t *mask, char *err,
                   size_t errlen)
{
    struct handoff__exec p;
    char *names[TOOL_MAX_LISTEN];
    struct sbuf starter = {0};
    pid_t pid;
    int r;

    if ((r = plan_init(&p, argv, mask)) < 0) {
        if (r == -ENOENT)
            (void)snprintf(err, errlen, "cannot find \"%s\" in PATH: %s", argv[0], strerror(ENOENT));
        goto fail;
    }
    if (pre) {
        /* The shim fetches what the server binds: no fds and no protocol
         * variables; and it must be able to work in this program. */
        char why[400];
        if (pl_exe_check(p.exe, why, sizeof why) < 0 || pl_lib_check(pre->lib, why, sizeof why) < 0) {
            (void)snprintf(err, errlen, "--preload cannot work: %s", why);
            handoff__exec_free(&p);
            return -ENOEXEC;
        }
        n = 0;
        if ((r = plan_preload(&p, pre)) < 0)
            goto fail;
    }
    for (int i = 0; i < n; i++) {
        names[i] = (char *)ls[i].name;
        if ((r = handoff__exec_fd(&p, ls[i].fd)) < 0)
            goto fail;
    }
    if (n > 0 && (r = handoff__exec_env_listen(&p, names, (size_t)n)) < 0)
        goto fail;
    /* Server::Starter's format: "host:port=fd;/path=fd" (empty if none). */
    for (int i = 0; i < n; i++)
        if (ls[i].starter[0])
            sbuf_printf(&starter, "%s%s=%d", starter.len ? ";" : "", ls[i].starter,
                        HANDOFF_LISTEN_FDS_START + i);
    r = starter.oom ? -ENOMEM : 0;
    /* The generation number twice: Server::Starter's variable, and
     * libhandoff's, so that a libhandoff server reports it (STATUS=).
     * With --preload, no Server::Starter variables (there is no fd). */
    if (r == 0 && !pre)
        r = handoff__exec_env_add(&p, "SERVER_STARTER_PORT=%s", starter.p ? starter.p : "");
    if (r == 0 && !pre)
        r = handoff__exec_env_add(&p, "SERVER_STARTER_GENERATION=%u", gen);
    if (r == 0)
        r = handoff__exec_env_add(&p, "HANDOFF_GENERATION=%u", gen);
    if (r == 0 && notify_path)
        r = handoff__exec_env_add(&p, "NOTIFY_SOCKET=%s", notify_path);
    sbuf_free(&starter);
    if (r < 0)
        goto fail;
    pid = handoff__exec_start(&p);
    if (pid < 0) {
        r = (int)pid;
        (void)snprintf(err, errlen, "cannot execute %s: %s", p.exe, strerror(-r));
        handoff__exec_free(&p);
        return r;
    }
    handoff__exec_free(&p);
    return pid;
fail:
    if (r == -ENOMEM)
        (void)snprintf(err, errlen, "out of memory");
    else if (r != -ENOENT)
        (void)snprintf(err, errlen, "cannot start \"%s\": %s", argv[0], strerror(-r));
    handoff__exec_free(&p);
    return r;
}

pid_t spawn_check(const char *cmd, pid_t worker, unsigned gen, int slot, const sigset_t *mask)
{
    char *argv[] = {"/bin/sh", "-c", (char *)cmd, NULL};
    struct handoff__exec p;
    pid_t pid;
    int r;

    if ((r = plan_init(&p, argv, mask)) < 0 ||
        (r = handoff__exec_env_add(&p, "HANDOFF_PID=%ld", (long)worker)) < 0 ||
        (r = handoff__exec_env_add(&p, "HANDOFF_GENERATION=%u", gen)) < 0 ||
        (r = handoff__exec_env_add(&p, "HANDOFF_WORKER=%d", slot)) < 0) {
        handoff__exec_free(&p);
        if (r == -ENOMEM)
            log_err("--ready-command: out of memory (tried again in --ready-interval)");
        else
            log_err("--ready-command: /bin/sh: %s", strerror(-r));
        return r;
    }
    pid = handoff__exec_start(&p);
    if (pid < 0)
        log_err("--ready-command: cannot execute /bin/sh: %s", strerror((int)-pid));
    handoff__exec_free(&p);
    return pid;
}

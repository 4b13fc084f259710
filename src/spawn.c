/*
 * spawn.c - the processes of an upgrade: fork+exec of the new binary with
 * the registered fds at 3.. (through the shared exec plan,
 * shared/exec.c), the readiness handshake, and reaping.
 *
 * Handshake (the messages are in handshake.c): the parent keeps one end
 * of an AF_UNIX SOCK_SEQPACKET socketpair with SO_PASSCRED, and queues
 * HELLO (the pidfds of the generations that will be draining) on it; the
 * child gets the other end as HANDOFF_READY_FD and sends "READY=1". The
 * kernel attaches the sender's real pid to the message, so only the child
 * itself (not a grandchild that somehow got the fd, nor any unrelated
 * process, which cannot reach an unnamed socketpair) can declare
 * readiness.
 *
 * It also keeps the pidfds of the draining generations before this one
 * (h->preds, from our own HELLO), which the state machine counts for
 * max_draining.
 *
 * What a READY or an exit means (hand over, roll back, report a failed
 * upgrade) is the state machine's business (machine.c); this file only
 * starts, watches, signals and reaps.
 */
#include "successor.h"
#include "handshake.h"
#include "log.h"
#include "loop.h"
#include "migrate.h"
#include "shared/exec.h"
#include "shared/protocol.h"
#include "shared/status.h"
#include "shared/trace.h"

#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int plan_build(handoff_t *h, struct handoff__exec *p)
{
    char **names = NULL, caps[64];
    int r;

    handoff__exec_init(p, h->argv);
    p->cwd = h->cwd;
    p->mask = h->sig.orig_mask;
    p->ignored = h->sig.orig_ignored;
    p->flags = HANDOFF__EXEC_RESET_SIGNALS | HANDOFF__EXEC_PIDFD;
    r = handoff__exec_resolve(p, h->cwd);
    if (r == -ENOENT)
        return handoff__fail(h, r, "upgrade: cannot find \"%s\" in PATH", h->argv[0]);
    if (r < 0)
        return r;
    if (h->nregs > 0) {
        names = calloc(h->nregs, sizeof *names);
        if (!names)
            return -ENOMEM;
    }
    for (size_t i = 0; i < h->nregs; i++) {
        names[i] = h->regs[i].name;
        if ((r = handoff__exec_fd(p, h->regs[i].fd)) < 0)
            goto out;
    }
    if ((r = handoff__exec_env_inherit(p, environ)) < 0 ||
        (r = handoff__exec_env_listen(p, names, h->nregs)) < 0 ||
        (r = handoff__exec_env_add(p, "%s=%zu", HF_ENV_READY_FD,
                                   HANDOFF_LISTEN_FDS_START + h->nregs)) < 0 ||
        (r = handoff__exec_env_add(p, "%s=%u", HF_ENV_GENERATION, h->generation + 1)) < 0 ||
        (r = handoff__exec_env_add(p, "%s=%ld", HF_ENV_PARENT_PID, (long)getpid())) < 0)
        goto out;
    /* What we read in the handshake: READY lines, and (with migration on)
     * an ADOPT line that opens the migration channel (docs/protocol.md 9.1). */
    if ((r = handoff__mig_caps_format(caps, sizeof caps, getpid(),
                                      HF_CAP_READY_LINES |
                                          (h->flags & HANDOFF_MIGRATE ? HF_CAP_MIGRATE1 : 0))) < 0 ||
        (r = handoff__exec_env_add(p, "%s=%s", HF_ENV_CAPS, caps)) < 0)
        goto out;
    if (h->notify_socket)
        r = handoff__exec_env_add(p, "%s=%s", HF_ENV_NOTIFY_SOCKET, h->notify_socket);
out:
    free(names);
    return r;
}

/* Queues HELLO for the child: the generations that will be draining once
 * it is ready - ours, still alive, and this process. A failure costs only
 * the child's view of them (it cannot cap draining generations). */
static void hello(handoff_t *h, int sock)
{
    struct hf_pred list[HF_HELLO_MAX];
    size_t n = 0, first;
    int self, r;

    (void)handoff__preds_live(h);
    self = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (self < 0) {
        handoff__log(h, HANDOFF_LOG_WARNING, "upgrade: pidfd_open(self): %s", strerror(errno));
        return;
    }
    /* The newest HF_HELLO_MAX - 1 predecessors (the limit is far above any
     * sane max_draining). */
    first = h->npreds > HF_HELLO_MAX - 1 ? h->npreds - (HF_HELLO_MAX - 1) : 0;
    for (size_t i = first; i < h->npreds; i++)
        list[n++] = h->preds[i];
    list[n].pidfd = self;
    list[n].pid = getpid();
    list[n].generation = h->generation;
    n++;
    r = handoff__hello_send(sock, list, n);
    if (r < 0)
        handoff__log(h, HANDOFF_LOG_WARNING, "upgrade: handshake hello: %s", strerror(-r));
    (void)close(self);
}

int handoff__spawn(handoff_t *h, char *exe, size_t exelen)
{
    struct handoff__exec plan;
    int sv[2] = {-1, -1};
    int one = 1, r;
    pid_t pid;

    r = plan_build(h, &plan);
    if (r < 0) {
        if (r == -ENOMEM)
            handoff__fail(h, r, "upgrade: out of memory");
        goto out;
    }
    handoff__trace("P2-plan");
    (void)snprintf(exe, exelen, "%s", plan.exe);
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        r = handoff__fail(h, -errno, "upgrade: socketpair: %s", strerror(errno));
        goto out;
    }
    if (setsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) {
        r = handoff__fail(h, -errno, "upgrade: SO_PASSCRED: %s", strerror(errno));
        goto out;
    }
    /* HELLO is queued before the child exists, so it is there when the
     * child's handoff_new() looks. */
    hello(h, sv[0]);
    /* The handshake socket goes right after the registered fds. */
    if ((r = handoff__exec_fd(&plan, sv[1])) < 0) {
        handoff__fail(h, r, "upgrade: out of memory");
        goto out;
    }
    h->child.start = handoff_now_usec();
    pid = handoff__exec_start(&plan);
    if (pid < 0) {
        r = (int)pid;
        if (r == -EAGAIN || r == -ENOMEM)
            handoff__fail(h, r, "upgrade: fork: %s", strerror(-r));
        else if (r == -ESRCH)
            /* It exited at once and another thread reaped it already. */
            r = handoff__fail(h, -ECHILD, "upgrade: %s exited at once (reaped elsewhere)",
                              plan.exe);
        else
            handoff__fail(h, r, "upgrade: cannot execute %s: %s", plan.exe, strerror(-r));
        goto out;
    }
    h->child.pidfd = plan.pidfd;
    h->child.pid = pid;
    h->child.sock = sv[0];
    sv[0] = -1;
    if ((r = handoff__loop_add(&h->loop, h->child.sock, HF_TAG_CHILD_SOCK)) < 0 ||
        (r = handoff__loop_add(&h->loop, h->child.pidfd, HF_TAG_CHILD_PIDFD)) < 0) {
        struct hf_exit ex;
        handoff__fail(h, r, "upgrade: the event loop cannot watch pid %ld: %s", (long)pid,
                      strerror(-r));
        (void)handoff__child_reap(h, true, &ex);
        goto out;
    }
    r = 0;
out:
    for (int i = 0; i < 2; i++)
        if (sv[i] >= 0)
            (void)close(sv[i]);
    handoff__exec_free(&plan);
    return r;
}

static void proc_forget(struct hf_loop *l, struct hf_proc *p)
{
    handoff__loop_del(l, p->sock);
    handoff__loop_del(l, p->pidfd);
    if (p->sock >= 0)
        (void)close(p->sock);
    if (p->pidfd >= 0)
        (void)close(p->pidfd);
    p->sock = p->pidfd = -1;
    p->pid = 0;
}

/* Waits for p through its pidfd (waitid(P_PIDFD), Linux >= 5.4), never by
 * pid: if the application reaped the child itself (waitpid(-1), SIGCHLD
 * ignored), its pid may already belong to another process, which a
 * waitpid(pid) would wait for. Fills *out; 1 reaped (or gone), 0 running. */
static int proc_reap(struct hf_proc *p, bool block, struct hf_exit *out)
{
    siginfo_t si;
    int r;

    memset(&si, 0, sizeof si);
    do {
        r = waitid((idtype_t)P_PIDFD, (id_t)p->pidfd, &si, WEXITED | (block ? 0 : WNOHANG));
    } while (r < 0 && errno == EINTR);
    if (r == 0 && si.si_pid == 0)
        return 0; /* WNOHANG: still running */
    memset(out, 0, sizeof *out);
    out->pid = p->pid;
    out->elapsed = handoff_now_usec() - p->start;
    if (r < 0) {
        (void)snprintf(out->how, sizeof out->how, "ended, status unknown (%s: reaped elsewhere?)",
                       strerror(errno));
        return 1;
    }
    /* Back to a waitpid() status, which the event reports. */
    if (si.si_code == CLD_EXITED)
        out->status = (si.si_status & 0xff) << 8;
    else
        out->status = (si.si_status & 0x7f) | (si.si_code == CLD_DUMPED ? 0x80 : 0);
    out->known = true;
    (void)handoff__wait_status(out->status, out->how, sizeof out->how);
    return 1;
}

/* SIGKILL through the pidfd, so that a pid the application reaped and the
 * kernel reused is never hit. A child that made itself the leader of its
 * own process group (setsid, setpgid: a wrapper that runs the server as
 * its child) takes its group down with it, so that no descendant keeps the
 * listeners; a child in our own group (the usual case) is killed alone:
 * see docs/protocol.md for why successors are not put in a group of their
 * own. */
static void proc_kill(const struct hf_proc *p)
{
    if (p->pidfd < 0)
        return;
    /* The group check only while the pidfd says the child is alive, so
     * that p->pid is still its pid; a group outlives its leader only while
     * it has members, which keeps its id from being reused. */
    if (syscall(SYS_pidfd_send_signal, p->pidfd, 0, NULL, 0) == 0 && getpgid(p->pid) == p->pid &&
        p->pid != getpgrp())
        (void)kill(-p->pid, SIGKILL);
    (void)syscall(SYS_pidfd_send_signal, p->pidfd, SIGKILL, NULL, 0);
}

int handoff__child_reap(handoff_t *h, bool kill_first, struct hf_exit *out)
{
    if (h->child.pid <= 0)
        return 0;
    if (kill_first)
        proc_kill(&h->child);
    if (!proc_reap(&h->child, kill_first, out))
        return 0;
    proc_forget(&h->loop, &h->child);
    return 1;
}

void handoff__child_to_succ(handoff_t *h)
{
    /* Keep the pidfd: the successor is our child until we exit, and if it
     * dies while we drain we must reap it. */
    h->succ = h->child;
    h->succ.sock = -1;
    h->child.pidfd = -1;
    handoff__loop_del(&h->loop, h->succ.pidfd);
    (void)handoff__loop_add(&h->loop, h->succ.pidfd, HF_TAG_SUCC_PIDFD);
    proc_forget(&h->loop, &h->child);
}

int handoff__succ_reap(handoff_t *h, struct hf_exit *out)
{
    if (h->succ.pid <= 0 || !proc_reap(&h->succ, false, out))
        return 0;
    proc_forget(&h->loop, &h->succ);
    return 1;
}

int handoff__child_read(handoff_t *h, unsigned *adopt)
{
    char buf[64];
    size_t len;
    pid_t who;
    int r;

    if (h->child.sock < 0)
        return 0;
    r = handoff__ready_recv(h->child.sock, h->child.pid, &who, buf, sizeof buf, &len);
    if (r == -EPIPE) {
        /* The child closed its end (it exited, or exec'd something that
         * dropped the fd): stop watching; its pidfd or the timeout will
         * finish the upgrade. */
        handoff__loop_del(&h->loop, h->child.sock);
        return 0;
    }
    if (r == 0 && who != 0) {
        handoff__log(h, HANDOFF_LOG_WARNING,
                     "ignoring a readiness message from pid %ld (expected pid %ld)", (long)who,
                     (long)h->child.pid);
        return 0;
    }
    if (r <= 0)
        return r;
    if (handoff__mig_ready_parse(buf, len, adopt) < 0) {
        handoff__log(h, HANDOFF_LOG_WARNING, "ignoring unknown handshake message from pid %ld",
                     (long)who);
        return 0;
    }
    return 1;
}

int handoff__send_ready_to_parent(handoff_t *h, const char *msg)
{
    return handoff__ready_send(h->ready_fd, msg);
}

size_t handoff__preds_live(handoff_t *h)
{
    size_t k = 0;

    for (size_t i = 0; i < h->npreds; i++) {
        struct pollfd p = {.fd = h->preds[i].pidfd, .events = POLLIN};
        /* A pidfd is readable once its process has exited. */
        if (poll(&p, 1, 0) == 1) {
            handoff__loop_del(&h->loop, h->preds[i].pidfd);
            (void)close(h->preds[i].pidfd);
            continue;
        }
        h->preds[k++] = h->preds[i];
    }
    h->npreds = k;
    return k;
}

void handoff__pred_kill(handoff_t *h, size_t i)
{
    (void)syscall(SYS_pidfd_send_signal, h->preds[i].pidfd, SIGKILL, NULL, 0);
    handoff__loop_del(&h->loop, h->preds[i].pidfd);
    (void)close(h->preds[i].pidfd);
    memmove(&h->preds[i], &h->preds[i + 1], (h->npreds - i - 1) * sizeof h->preds[0]);
    h->npreds--;
}

void handoff__preds_free(handoff_t *h)
{
    for (size_t i = 0; i < h->npreds; i++) {
        handoff__loop_del(&h->loop, h->preds[i].pidfd);
        (void)close(h->preds[i].pidfd);
    }
    free(h->preds);
    h->preds = NULL;
    h->npreds = 0;
}


/*
 * spawn.c - the processes of an upgrade: fork+exec of the new binary with
 * the registered fds at 3.. (through the shared exec plan,
 * shared/exec.c), the readiness handshake, and reaping.
 *
 * Handshake: the parent keeps one end of an AF_UNIX SOCK_SEQPACKET
 * socketpair with SO_PASSCRED; the child gets the other end as
 * HANDOFF_READY_FD and sends "READY=1". The kernel attaches the sender's
 * real pid to the message, so only the child itself (not a grandchild that
 * somehow got the fd, nor any unrelated process, which cannot reach an
 * unnamed socketpair) can declare readiness.
 *
 * What a READY or an exit means (hand over, roll back, report a failed
 * upgrade) is the state machine's business (machine.c); this file only
 * starts, watches, signals and reaps.
 */
#include "successor.h"
#include "log.h"
#include "loop.h"
#include "migrate.h"
#include "shared/exec.h"
#include "shared/protocol.h"
#include "shared/status.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* The readiness message a child sends over the handshake socket. */
#define HF_READY_MSG "READY=1"

extern char **environ;

static int plan_build(handoff_t *h, struct handoff__exec *p)
{
    char **names = NULL, caps[64];
    int r;

    handoff__exec_init(p, h->argv);
    p->cwd = h->cwd;
    p->mask = h->sig.orig_mask;
    p->ignored = h->sig.orig_ignored;
    p->flags = HANDOFF__EXEC_RESET_SIGNALS;
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
    (void)snprintf(exe, exelen, "%s", plan.exe);
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        r = handoff__fail(h, -errno, "upgrade: socketpair: %s", strerror(errno));
        goto out;
    }
    if (setsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) {
        r = handoff__fail(h, -errno, "upgrade: SO_PASSCRED: %s", strerror(errno));
        goto out;
    }
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
        else
            handoff__fail(h, r, "upgrade: cannot execute %s: %s", plan.exe, strerror(-r));
        goto out;
    }
    h->child.pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (h->child.pidfd < 0) {
        r = -errno;
        (void)kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        r = handoff__fail(h, r, "upgrade: pidfd_open: %s (Linux >= 5.3 is required)",
                          strerror(-r));
        goto out;
    }
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

/* waitpid() on p (blocking or not); fills *out. 1 reaped, 0 running. */
static int proc_reap(struct hf_proc *p, bool block, struct hf_exit *out)
{
    int status = 0;
    pid_t w;

    do {
        w = waitpid(p->pid, &status, block ? 0 : WNOHANG);
    } while (w < 0 && errno == EINTR);
    if (w == 0)
        return 0;
    memset(out, 0, sizeof *out);
    out->pid = p->pid;
    out->elapsed = handoff_now_usec() - p->start;
    if (w < 0) {
        (void)snprintf(out->how, sizeof out->how, "ended, status unknown (%s: reaped elsewhere?)",
                       strerror(errno));
    } else {
        out->known = true;
        out->status = status;
        (void)handoff__wait_status(status, out->how, sizeof out->how);
    }
    return 1;
}

int handoff__child_reap(handoff_t *h, bool kill_first, struct hf_exit *out)
{
    if (h->child.pid <= 0)
        return 0;
    if (kill_first)
        (void)kill(h->child.pid, SIGKILL);
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
    union {
        struct cmsghdr hdr;
        char space[CMSG_SPACE(sizeof(struct ucred))];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf - 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl,
                         .msg_controllen = sizeof ctl};
    struct ucred cred = {0};
    bool have_cred = false;
    ssize_t n;

    if (h->child.sock < 0)
        return 0;
    do {
        n = recvmsg(h->child.sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN ? 0 : -errno;
    if (n == 0) {
        /* The child closed its end (it exited, or exec'd something that
         * dropped the fd): stop watching; its pidfd or the timeout will
         * finish the upgrade. */
        handoff__loop_del(&h->loop, h->child.sock);
        return 0;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS &&
            c->cmsg_len == CMSG_LEN(sizeof cred)) {
            memcpy(&cred, CMSG_DATA(c), sizeof cred);
            have_cred = true;
        }
    }
    buf[n] = '\0';
    if (!have_cred || cred.pid != h->child.pid) {
        handoff__log(h, HANDOFF_LOG_WARNING,
                     "ignoring a readiness message from pid %ld (expected pid %ld)",
                     have_cred ? (long)cred.pid : -1L, (long)h->child.pid);
        return 0;
    }
    if (handoff__mig_ready_parse(buf, (size_t)n, adopt) < 0) {
        handoff__log(h, HANDOFF_LOG_WARNING, "ignoring unknown handshake message from pid %ld",
                     (long)cred.pid);
        return 0;
    }
    return 1;
}

int handoff__send_ready_to_parent(handoff_t *h, const char *msg)
{
    size_t len = strlen(msg);
    ssize_t n;

    /* The receiver has SO_PASSCRED, so the kernel attaches our verified
     * pid/uid/gid to this message. */
    do {
        n = send(h->ready_fd, msg, len, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    return n == (ssize_t)len ? 0 : -EIO;
}

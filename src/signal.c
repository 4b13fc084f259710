/*
 * signal.c - signals as data, the way Go's signal.Notify delivers them on
 * a channel. The handled signals are blocked and read from a signalfd that
 * sits in the loop's epoll set, so no code ever runs in signal-handler
 * context. The kernel keeps at most one pending instance of a standard
 * signal; every instance we do read is counted and reported.
 *
 * This file only reports what arrived (handoff__signals_read()); the state
 * machine (machine.c) runs the hooks and the default actions.
 *
 * The mask is per thread: handoff_new() blocks the signals in the calling
 * thread, and threads created later inherit it. The original mask and the
 * set of ignored signals are saved so that a successor starts with what
 * this process started with, not with our blocked set.
 */
#include "signals.h"
#include "handle.h"
#include "log.h"
#include "loop.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

/* The bit of signal signo (1..64) in a 64-bit set: signal 64 is bit 63
 * (1 << 64 would be undefined behaviour). */
static uint64_t sigbit(int signo)
{
    return (uint64_t)1 << (signo - 1);
}

bool handoff__signal_is_lib(const struct hf_signals *s, int signo)
{
    return signo == SIGTERM || signo == SIGINT || (s->upgrade_signal > 0 && signo == s->upgrade_signal);
}

int handoff__signals_init(struct hf_signals *s, struct hf_loop *l, int upgrade_signal, bool enabled)
{
    int r;

    memset(s, 0, sizeof *s);
    s->fd = -1;
    s->upgrade_signal = upgrade_signal > 0 ? upgrade_signal : 0;
    s->enabled = enabled;
    sigemptyset(&s->handled);
    sigemptyset(&s->orig_ignored);
    r = pthread_sigmask(SIG_BLOCK, NULL, &s->orig_mask);
    if (r != 0)
        return -r;
    for (int signo = 1; signo < HF_NSIG; signo++) {
        struct sigaction sa;
        if (sigaction(signo, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
            sigaddset(&s->orig_ignored, signo);
    }
    if (!enabled)
        return 0;
    sigaddset(&s->handled, SIGTERM);
    sigaddset(&s->handled, SIGINT);
    if (s->upgrade_signal > 0)
        sigaddset(&s->handled, s->upgrade_signal);
    r = pthread_sigmask(SIG_BLOCK, &s->handled, NULL);
    if (r != 0)
        return -r;
    s->fd = signalfd(-1, &s->handled, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s->fd < 0)
        return -errno;
    return handoff__loop_add(l, s->fd, HF_TAG_SIGNAL);
}

void handoff__signals_done(struct hf_signals *s)
{
    struct signalfd_siginfo si[16];

    if (s->fd >= 0) {
        /* Consume what is pending so that unblocking below does not kill
         * a process that is already on its way out. */
        while (read(s->fd, si, sizeof si) > 0) {
        }
        (void)close(s->fd);
        s->fd = -1;
    }
    if (s->enabled)
        (void)pthread_sigmask(SIG_SETMASK, &s->orig_mask, NULL);
}

int handoff_watch_signal(handoff_t *h, int signo)
{
    struct hf_signals *s;
    int r;

    if (!h || signo <= 0 || signo >= HF_NSIG || signo == SIGKILL || signo == SIGSTOP)
        return -EINVAL;
    s = &h->sig;
    if (!s->enabled)
        return handoff__fail(h, -ENOTSUP, "watch_signal: handle created with HANDOFF_NO_SIGNALS");
    if (handoff__signal_is_lib(s, signo))
        return handoff__fail(h, -EINVAL,
                             "watch_signal: signal %d is handled by the library; use a hook", signo);
    if (sigaddset(&s->handled, signo) < 0)
        return -EINVAL;
    r = pthread_sigmask(SIG_BLOCK, &s->handled, NULL);
    if (r != 0)
        return -r;
    if (signalfd(s->fd, &s->handled, SFD_NONBLOCK | SFD_CLOEXEC) < 0)
        return -errno;
    s->watched |= sigbit(signo);
    return 0;
}

int handoff_set_signal_hook(handoff_t *h, int signo, int when, handoff_signal_hook hook,
                            void *userdata)
{
    struct hf_signals *s;

    if (!h || signo <= 0 || signo >= HF_NSIG || (when != HANDOFF_HOOK_PRE && when != HANDOFF_HOOK_POST))
        return -EINVAL;
    s = &h->sig;
    if (!s->enabled)
        return handoff__fail(h, -ENOTSUP, "set_signal_hook: handle created with HANDOFF_NO_SIGNALS");
    if (!handoff__signal_is_lib(s, signo) && !(s->watched & sigbit(signo)))
        return handoff__fail(h, -EINVAL, "set_signal_hook: signal %d is neither handled nor watched",
                             signo);
    s->hooks[signo][when].fn = hook;
    s->hooks[signo][when].userdata = userdata;
    return 0;
}

void handoff__signal_hook(handoff_t *h, const struct hf_signals *s, int signo, int when)
{
    const struct hf_hook *k = &s->hooks[signo][when];
    if (k->fn)
        k->fn(h, signo, k->userdata);
}

int handoff__signals_read(struct hf_signals *s, struct hf_sigbatch *b)
{
    struct signalfd_siginfo si[16];
    ssize_t n;

    memset(b, 0, sizeof *b);
    if (s->fd < 0)
        return 0;
    /* Stop while a full read could overflow the batch; what is left stays
     * pending and the fd readable. */
    while (b->n + 16 <= HF_SIGBATCH) {
        n = read(s->fd, si, sizeof si);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            return -errno;
        }
        for (size_t i = 0; i < (size_t)n / sizeof si[0]; i++) {
            int signo = (int)si[i].ssi_signo;
            if (signo <= 0 || signo >= HF_NSIG)
                continue;
            if (handoff__signal_is_lib(s, signo)) {
                b->lib[b->n].signo = signo;
                b->lib[b->n].pid = (pid_t)si[i].ssi_pid;
                b->n++;
            } else {
                b->count[signo]++;
                b->pid[signo] = (pid_t)si[i].ssi_pid;
            }
        }
    }
    return 0;
}

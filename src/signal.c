/*
 * signal.c - signals as events, the way Go's signal.Notify delivers them on
 * a channel. The handled signals are blocked and read from a signalfd that
 * sits in the handle's epoll set, so no code ever runs in signal-handler
 * context. The kernel keeps at most one pending instance of a standard
 * signal; every instance we do read is counted and reported.
 *
 * The mask is per thread: handoff_new() blocks the signals in the calling
 * thread, and threads created later inherit it. The original mask and the
 * set of ignored signals are saved so that a successor starts with what
 * this process started with, not with our blocked set.
 */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

static bool lib_handled(const handoff_t *h, int signo)
{
    return signo == SIGTERM || signo == SIGINT ||
           (h->upgrade_signal > 0 && signo == h->upgrade_signal);
}

int handoff__signals_init(handoff_t *h)
{
    int r;

    sigemptyset(&h->handled);
    r = pthread_sigmask(SIG_BLOCK, NULL, &h->orig_mask);
    if (r != 0)
        return -r;
    for (int s = 1; s < HF_NSIG; s++) {
        struct sigaction sa;
        if (sigaction(s, NULL, &sa) == 0)
            h->orig_ignored[s] = sa.sa_handler == SIG_IGN;
    }
    if (h->flags & HANDOFF_NO_SIGNALS)
        return 0;
    sigaddset(&h->handled, SIGTERM);
    sigaddset(&h->handled, SIGINT);
    if (h->upgrade_signal > 0)
        sigaddset(&h->handled, h->upgrade_signal);
    r = pthread_sigmask(SIG_BLOCK, &h->handled, NULL);
    if (r != 0)
        return -r;
    h->sigfd = signalfd(-1, &h->handled, SFD_NONBLOCK | SFD_CLOEXEC);
    if (h->sigfd < 0)
        return -errno;
    return handoff__epoll_add(h, h->sigfd, HF_TAG_SIGNAL);
}

void handoff__signals_done(handoff_t *h)
{
    struct signalfd_siginfo si[16];

    if (h->sigfd >= 0) {
        /* Consume what is pending so that unblocking below does not kill
         * a process that is already on its way out. */
        while (read(h->sigfd, si, sizeof si) > 0) {
        }
        (void)close(h->sigfd);
        h->sigfd = -1;
    }
    if (!(h->flags & HANDOFF_NO_SIGNALS))
        (void)pthread_sigmask(SIG_SETMASK, &h->orig_mask, NULL);
}

int handoff_watch_signal(handoff_t *h, int signo)
{
    int r;

    if (!h || signo <= 0 || signo >= HF_NSIG || signo == SIGKILL || signo == SIGSTOP)
        return -EINVAL;
    if (h->flags & HANDOFF_NO_SIGNALS)
        return handoff__fail(h, -ENOTSUP, "watch_signal: handle created with HANDOFF_NO_SIGNALS");
    if (lib_handled(h, signo))
        return handoff__fail(h, -EINVAL,
                             "watch_signal: signal %d is handled by the library; use a hook", signo);
    if (sigaddset(&h->handled, signo) < 0)
        return -EINVAL;
    r = pthread_sigmask(SIG_BLOCK, &h->handled, NULL);
    if (r != 0)
        return -r;
    if (signalfd(h->sigfd, &h->handled, SFD_NONBLOCK | SFD_CLOEXEC) < 0)
        return -errno;
    h->watched |= (uint64_t)1 << signo;
    return 0;
}

int handoff_set_signal_hook(handoff_t *h, int signo, int when,
                            handoff_signal_hook hook, void *userdata)
{
    if (!h || signo <= 0 || signo >= HF_NSIG || (when != HANDOFF_HOOK_PRE && when != HANDOFF_HOOK_POST))
        return -EINVAL;
    if (h->flags & HANDOFF_NO_SIGNALS)
        return handoff__fail(h, -ENOTSUP, "set_signal_hook: handle created with HANDOFF_NO_SIGNALS");
    if (!lib_handled(h, signo) && !(h->watched & ((uint64_t)1 << signo)))
        return handoff__fail(h, -EINVAL, "set_signal_hook: signal %d is neither handled nor watched",
                             signo);
    h->hooks[signo][when].fn = hook;
    h->hooks[signo][when].userdata = userdata;
    return 0;
}

static void run_hook(handoff_t *h, int signo, int when)
{
    struct hf_hook *k = &h->hooks[signo][when];
    if (k->fn)
        k->fn(h, signo, k->userdata);
}

/* The default action of one delivery of a library-handled signal. */
static void default_action(handoff_t *h, int signo, pid_t sender)
{
    if (signo == SIGTERM || signo == SIGINT) {
        h->term_count++;
        if (h->term_count >= 2 && !(h->flags & HANDOFF_TERM_GRACEFUL_ONLY)) {
            handoff__log(h, HANDOFF_LOG_NOTICE, "second %s (from pid %ld): stopping now",
                         strsignal(signo), (long)sender);
            (void)handoff_shutdown(h, 1);
        } else if (h->state == HF_SERVING) {
            handoff__log(h, HANDOFF_LOG_INFO, "%s (from pid %ld): graceful shutdown",
                         strsignal(signo), (long)sender);
            (void)handoff_shutdown(h, 0);
        }
        return;
    }
    /* The upgrade signal. A trigger that arrives while an upgrade runs is
     * coalesced into it; the successor does not exist yet to receive it. */
    int r = handoff_upgrade(h);
    if (r == -EBUSY) {
        handoff__log(h, HANDOFF_LOG_INFO, "%s: upgrade already in progress (pid %ld); coalesced",
                     strsignal(signo), (long)h->child_pid);
    } else if (r == -ESHUTDOWN) {
        handoff__log(h, HANDOFF_LOG_INFO, "%s: ignored while draining", strsignal(signo));
    } else if (r == -EAGAIN) {
        handoff__log(h, HANDOFF_LOG_WARNING, "%s: ignored: this process is not ready yet",
                     strsignal(signo));
    } else if (r < 0) {
        handoff_event ev = {.type = HANDOFF_EVENT_UPGRADE_FAILED, .error = r};
        handoff__log(h, HANDOFF_LOG_ERR, "upgrade failed: %s", h->errmsg);
        handoff__notify(h, "READY=1\nSTATUS=Upgrade failed: %s", h->errmsg);
        handoff__push_event(h, &ev, "%s", h->errmsg);
    }
}

/* Reads every pending signal and acts on it. Returns 0 or -errno. */
int handoff__signals_read(handoff_t *h)
{
    struct signalfd_siginfo si[16];
    unsigned counts[HF_NSIG] = {0};
    pid_t pids[HF_NSIG] = {0};
    ssize_t n;

    if (h->sigfd < 0)
        return 0;
    for (;;) {
        n = read(h->sigfd, si, sizeof si);
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
            if (lib_handled(h, signo)) {
                run_hook(h, signo, HANDOFF_HOOK_PRE);
                default_action(h, signo, (pid_t)si[i].ssi_pid);
                run_hook(h, signo, HANDOFF_HOOK_POST);
            } else {
                counts[signo]++;
                pids[signo] = (pid_t)si[i].ssi_pid;
            }
        }
    }
    /* Watched signals: one event per signal with the count seen. */
    for (int s = 1; s < HF_NSIG; s++) {
        if (!counts[s])
            continue;
        handoff_event ev = {.type = HANDOFF_EVENT_SIGNAL, .signo = s, .count = counts[s],
                            .pid = pids[s]};
        run_hook(h, s, HANDOFF_HOOK_PRE);
        handoff__push_event(h, &ev, "%s x%u", strsignal(s), counts[s]);
        run_hook(h, s, HANDOFF_HOOK_POST);
    }
    return 0;
}

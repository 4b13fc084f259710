/*
 * machine.c - the generation state machine: what the sources gathered by
 * the loop mean (signals, the successor's handshake and exit, deadlines,
 * the drain count), the events the application gets, and the calls that
 * move a generation along: handoff_ready(), handoff_upgrade(),
 * handoff_shutdown(), handoff_next_event().
 *
 * States: SERVING -> DRAINING -> STOPPED. An upgrade runs inside SERVING
 * (h->child.pid != 0); the successor's READY turns it into DRAINING with
 * reason UPGRADE, a SIGTERM into DRAINING with reason SHUTDOWN. See
 * docs/protocol.md for the full diagram.
 *
 * The top of the core: it calls into spawn.c, signal.c, notify.c,
 * pidfile.c, inherit.c and loop.c; none of them calls back.
 */
#include "handle.h"
#include "inherit.h"
#include "log.h"
#include "loop.h"
#include "manager.h"
#include "migrate.h"
#include "shared/trace.h"
#include "signals.h"
#include "successor.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

const char *handoff_event_name(int type)
{
    switch (type) {
    case HANDOFF_EVENT_NONE: return "none";
    case HANDOFF_EVENT_SIGNAL: return "signal";
    case HANDOFF_EVENT_UPGRADE_STARTED: return "upgrade-started";
    case HANDOFF_EVENT_UPGRADE_FAILED: return "upgrade-failed";
    case HANDOFF_EVENT_DRAIN: return "drain";
    case HANDOFF_EVENT_STOP: return "stop";
    case HANDOFF_EVENT_SUCCESSOR_EXITED: return "successor-exited";
    case HANDOFF_EVENT_RESUME: return "resume";
    case HANDOFF_EVENT_ADOPT: return "adopt";
    default: return "unknown";
    }
}

static void deferred_upgrade(handoff_t *h, bool kill);

__attribute__((format(printf, 3, 4))) static void push(handoff_t *h, const handoff_event *ev,
                                                      const char *fmt, ...)
{
    char msg[HF_MSG];
    va_list ap;

    va_start(ap, fmt);
    handoff__vformat(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Cannot fill up with the state machine's bounded fan-out, but never
     * overwrite: the oldest unread events matter most. */
    if (handoff__event_push(&h->loop, ev, "%s", msg) < 0)
        handoff__log(h, HANDOFF_LOG_ERR, "event queue full; dropping %s: %s",
                     handoff_event_name(ev->type), msg);
}

static void begin_drain(handoff_t *h, int reason, pid_t pid, uint64_t elapsed)
{
    handoff_event ev = {.type = HANDOFF_EVENT_DRAIN, .reason = reason, .pid = pid,
                        .elapsed_usec = elapsed};

    if (h->state != HF_SERVING)
        return;
    h->state = HF_DRAINING;
    handoff__timer_set(&h->loop, HF_TIMER_HAMMER, hf_deadline(handoff_now_usec(), h->drain_timeout));
    if (reason == HANDOFF_DRAIN_UPGRADE)
        push(h, &ev, "generation %u (pid %ld) is serving; draining %lu connections",
             h->generation + 1, (long)pid, (unsigned long)atomic_load(&h->conns));
    else
        push(h, &ev, "shutting down; draining %lu connections",
             (unsigned long)atomic_load(&h->conns));
}

static void set_stop(handoff_t *h, int reason)
{
    handoff_event ev = {.type = HANDOFF_EVENT_STOP, .reason = reason};

    if (h->stop_pending)
        return;
    h->stop_pending = true;
    h->state = HF_STOPPED;
    handoff__timer_clear_all(&h->loop);
    push(h, &ev, "%s",
         reason == HANDOFF_STOP_DRAINED   ? "all connections drained"
         : reason == HANDOFF_STOP_TIMEOUT ? "drain timeout expired"
                                          : "forced stop");
}

/* Ends an upgrade that failed: kills the child if asked, reaps it, reports
 * HANDOFF_EVENT_UPGRADE_FAILED and tells systemd the old generation is
 * still the one serving. why NULL: it exited by itself. */
static void upgrade_failed(handoff_t *h, bool kill_first, int err, const char *why)
{
    handoff_event ev = {.type = HANDOFF_EVENT_UPGRADE_FAILED, .error = err};
    struct hf_exit ex;

    if (!handoff__child_reap(h, kill_first, &ex))
        return;
    handoff__timer_set(&h->loop, HF_TIMER_UPGRADE, HF_NEVER);
    ev.pid = ex.pid;
    ev.status = ex.status;
    ev.elapsed_usec = ex.elapsed;
    if (!why)
        why = "it exited before ready";
    push(h, &ev, "generation %u (pid %ld) failed: %s; %s; still serving", h->generation + 1,
         (long)ex.pid, why, ex.how);
    handoff__log(h, HANDOFF_LOG_ERR, "upgrade failed: generation %u (pid %ld): %s; %s",
                 h->generation + 1, (long)ex.pid, why, ex.how);
    handoff__notify(h, "READY=1\nSTATUS=Upgrade failed (pid %ld %s); generation %u still serving",
                    (long)ex.pid, ex.how, h->generation);
}

/* The child said READY: it serves now, and we drain. adopt: the migration
 * wire version it reads (0: none). */
static void handover(handoff_t *h, unsigned adopt)
{
    pid_t pid = h->child.pid;
    uint64_t now = handoff_now_usec(), elapsed = now - h->child.start;

    /* Before the handshake socket is closed: it may become the channel. */
    handoff__mig_handover(h, adopt);
    handoff__child_to_succ(h);
    handoff__timer_set(&h->loop, HF_TIMER_UPGRADE, HF_NEVER);
    h->handed_over = true;
    h->handover_at = now;
    h->window_over = false;
    /* systemd first, then the pid file: whoever sees the new pid in the
     * pid file (and signals it) acts after systemd already knows it. */
    handoff__notify(h, "MAINPID=%ld\nREADY=1\nSTATUS=Generation %u (pid %ld) serving", (long)pid,
                    h->generation + 1, (long)pid);
    handoff__trace("P7-mainpid");
    handoff__pidfile_update(h, pid);
    handoff__trace("P8-pidfile");
    handoff__log(h, HANDOFF_LOG_INFO, "generation %u (pid %ld) ready in %llu ms; draining %lu connections",
                 h->generation + 1, (long)pid, (unsigned long long)(elapsed / 1000),
                 (unsigned long)atomic_load(&h->conns));
    begin_drain(h, HANDOFF_DRAIN_UPGRADE, pid, elapsed);
}

/* Within the resume window after a hand-over? */
static bool in_resume_window(const handoff_t *h, uint64_t now)
{
    return h->handed_over && h->resume_window && !h->window_over &&
           now < hf_deadline(h->handover_at, h->resume_window);
}

/* The successor we handed over to exited. */
static void successor_exited(handoff_t *h)
{
    handoff_event ev = {.type = HANDOFF_EVENT_SUCCESSOR_EXITED};
    struct hf_exit ex;

    if (!handoff__succ_reap(h, &ex))
        return;
    ev.pid = ex.pid;
    ev.status = ex.status;
    handoff__log(h, HANDOFF_LOG_WARNING, "successor pid %ld %s while we were draining",
                 (long)ex.pid, ex.how);
    if (h->state == HF_DRAINING && !h->stop_pending && in_resume_window(h, handoff_now_usec())) {
        /* Rollback: the new version died right after taking over. We still
         * hold the same listening sockets, so take the service back. */
        h->state = HF_SERVING;
        h->handed_over = false;
        h->drain_delivered = false;
        h->term_count = 0;
        atomic_store(&h->draining, false);
        handoff__timer_clear_all(&h->loop);
        handoff__notify(h, "MAINPID=%ld\nREADY=1\nSTATUS=Successor pid %ld %s; generation %u serving again",
                        (long)getpid(), (long)ex.pid, ex.how, h->generation);
        handoff__pidfile_update(h, getpid());
        ev.type = HANDOFF_EVENT_RESUME;
        handoff__log(h, HANDOFF_LOG_WARNING, "generation %u resumes serving", h->generation);
        push(h, &ev, "successor pid %ld %s; serving again", (long)ex.pid, ex.how);
        return;
    }
    push(h, &ev, "successor pid %ld %s", (long)ex.pid, ex.how);
}

static void on_timers(handoff_t *h)
{
    uint64_t now = handoff_now_usec();

    if (handoff__timer_expired(&h->loop, HF_TIMER_UPGRADE, now) && h->child.pid > 0) {
        char why[128];
        (void)snprintf(why, sizeof why, "it did not become ready within %llu ms",
                       (unsigned long long)(h->upgrade_timeout / HANDOFF_USEC_PER_MSEC));
        upgrade_failed(h, true, -ETIMEDOUT, why);
    }
    if (handoff__timer_expired(&h->loop, HF_TIMER_HAMMER, now) && h->state == HF_DRAINING) {
        if (h->succ.pid > 0 && in_resume_window(h, now)) {
            /* STOP is held back while the successor may still fail:
             * the hammer falls at the end of the window instead. */
            handoff__timer_set(&h->loop, HF_TIMER_HAMMER, hf_deadline(h->handover_at, h->resume_window));
        } else {
            handoff__log(h, HANDOFF_LOG_WARNING, "drain timeout: %lu connections still open",
                         (unsigned long)atomic_load(&h->conns));
            set_stop(h, HANDOFF_STOP_TIMEOUT);
        }
    }
    /* The successor survived the resume window: a zero count stops at the
     * next handoff_next_event(); the hammer deadline still holds. */
    if (handoff__timer_expired(&h->loop, HF_TIMER_WINDOW, now))
        h->window_over = true;
    if (handoff__timer_expired(&h->loop, HF_TIMER_PENDING, now) && h->upgrade_deferred)
        deferred_upgrade(h, true);
}

/* An upgrade the application did not call for itself (a signal, a
 * deferred one) could not start: an event says so. */
static void report_upgrade_error(handoff_t *h, int r)
{
    handoff_event ev = {.type = HANDOFF_EVENT_UPGRADE_FAILED, .error = r};

    handoff__log(h, HANDOFF_LOG_ERR, "upgrade failed: %s", h->errmsg);
    handoff__notify(h, "READY=1\nSTATUS=Upgrade failed: %s", h->errmsg);
    push(h, &ev, "%s", h->errmsg);
}

/* The default action of one delivery of a library-handled signal. */
static void signal_action(handoff_t *h, int signo, pid_t sender)
{
    int r;

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
    r = handoff_upgrade(h);
    if (r == -EBUSY) {
        handoff__log(h, HANDOFF_LOG_INFO, "%s: upgrade already in progress (pid %ld); coalesced",
                     strsignal(signo), (long)h->child.pid);
    } else if (r == -ESHUTDOWN) {
        handoff__log(h, HANDOFF_LOG_INFO, "%s: ignored while draining", strsignal(signo));
    } else if (r == -EAGAIN && !h->ready) {
        handoff__log(h, HANDOFF_LOG_WARNING, "%s: ignored: this process is not ready yet",
                     strsignal(signo));
    } else if (r < 0) {
        report_upgrade_error(h, r);
    }
}

static void on_signals(handoff_t *h)
{
    struct hf_sigbatch b;

    handoff__trace("P0-sigread");
    if (handoff__signals_read(&h->sig, &b) < 0)
        return;
    for (size_t i = 0; i < b.n; i++) {
        int s = b.lib[i].signo;
        handoff__signal_hook(h, &h->sig, s, HANDOFF_HOOK_PRE);
        signal_action(h, s, b.lib[i].pid);
        handoff__signal_hook(h, &h->sig, s, HANDOFF_HOOK_POST);
    }
    /* Watched signals: one event per signal with the count seen. */
    for (int s = 1; s < HF_NSIG; s++) {
        if (!b.count[s])
            continue;
        handoff_event ev = {.type = HANDOFF_EVENT_SIGNAL, .signo = s, .count = b.count[s],
                            .pid = b.pid[s]};
        handoff__signal_hook(h, &h->sig, s, HANDOFF_HOOK_PRE);
        push(h, &ev, "%s x%u", strsignal(s), b.count[s]);
        handoff__signal_hook(h, &h->sig, s, HANDOFF_HOOK_POST);
    }
}

/* Reads every ready source once, without blocking. The pidfds are handled
 * after the handshake socket so that a successor which said READY and then
 * died is seen in that order. */
static int poll_sources(handoff_t *h)
{
    uint32_t tags[16];
    bool child_exited = false, succ_exited = false, pred_exited = false;
    int n = handoff__loop_poll(&h->loop, tags, 16);

    if (n < 0)
        return n;
    for (int i = 0; i < n; i++) {
        switch (tags[i]) {
        case HF_TAG_SIGNAL:
            on_signals(h);
            break;
        case HF_TAG_TIMER:
            on_timers(h);
            break;
        case HF_TAG_CHILD_SOCK: {
            unsigned adopt = 0;
            if (handoff__child_read(h, &adopt) == 1) {
                handoff__trace("P6-ready-recv");
                handover(h, adopt);
            }
            break;
        }
        case HF_TAG_MIG_OUT:
        case HF_TAG_MIG_IN:
        case HF_TAG_MIG_TIMER:
            handoff__mig_on_event(h, tags[i]);
            break;
        case HF_TAG_CHILD_PIDFD:
            child_exited = true;
            break;
        case HF_TAG_SUCC_PIDFD:
            succ_exited = true;
            break;
        case HF_TAG_PRED_PIDFD:
            pred_exited = true;
            break;
        default: /* HF_TAG_WAKE: the drain count, checked below */
            break;
        }
    }
    if (child_exited && h->child.pid > 0)
        upgrade_failed(h, false, -ECHILD, NULL);
    if (succ_exited)
        successor_exited(h);
    /* A draining predecessor exited: forget it (its pidfd stays readable),
     * and let an upgrade it held back go. */
    if (pred_exited) {
        if (h->upgrade_deferred)
            deferred_upgrade(h, false);
        else
            (void)handoff__preds_live(h);
    }
    return 0;
}

int handoff_next_event(handoff_t *h, handoff_event *ev)
{
    int r;

    if (!h || !ev)
        return -EINVAL;
    handoff__mig_poll(h);
    if (handoff__event_count(&h->loop) == 0) {
        r = poll_sources(h);
        if (r < 0)
            return r;
    }
    /* The drain completes when the count is zero after the application
     * has seen DRAIN (and so has stopped accepting) - but within a resume
     * window after a hand-over, STOP waits for the window to pass; and while
     * a predecessor may still hand us connections, for it to finish. */
    if (handoff__event_count(&h->loop) == 0 && h->drain_delivered && h->state == HF_DRAINING &&
        atomic_load(&h->conns) == 0 && !handoff__mig_busy(h)) {
        uint64_t now = handoff_now_usec();
        if (h->succ.pid > 0 && in_resume_window(h, now))
            handoff__timer_set(&h->loop, HF_TIMER_WINDOW, hf_deadline(h->handover_at, h->resume_window));
        else
            set_stop(h, HANDOFF_STOP_DRAINED);
    }
    if (!handoff__event_pop(&h->loop, ev)) {
        memset(ev, 0, sizeof *ev);
        ev->message = "";
        return 0;
    }
    if (ev->type == HANDOFF_EVENT_DRAIN) {
        h->drain_delivered = true;
        atomic_store(&h->draining, true);
        /* From now on the last handoff_conn_end() wakes the event fd. */
        handoff__loop_wake(&h->loop);
    }
    return 1;
}

int handoff_wait_event(handoff_t *h, handoff_event *ev, uint64_t deadline)
{
    int r, timeout;

    if (!h || !ev)
        return -EINVAL;
    for (;;) {
        r = handoff_next_event(h, ev);
        if (r != 0)
            return r;
        if (deadline == HANDOFF_NO_TIMEOUT) {
            timeout = -1;
        } else {
            uint64_t now = handoff_now_usec();
            if (now >= deadline)
                return 0;
            uint64_t ms = (deadline - now + 999) / 1000;
            timeout = ms > 86400000 ? 86400000 : (int)ms;
        }
        r = handoff__loop_block(&h->loop, timeout);
        if (r < 0)
            return r;
    }
}

int handoff_ready(handoff_t *h)
{
    int r;

    if (!h)
        return -EINVAL;
    if (h->ready)
        return handoff__fail(h, -EALREADY, "ready: already called");
    handoff__trace("C3-ready");
    h->ready = true;
    handoff__close_unclaimed(h);
    if (h->has_parent) {
        r = handoff__send_ready_to_parent(h, handoff__mig_ready_msg(h));
        /* With migration the handshake socket stays open (migrate.c). */
        if (r != 0 || !handoff__mig_take_ready_fd(h))
            (void)close(h->ready_fd);
        h->ready_fd = -1;
        if (r == 0)
            return 0;
        /* The parent is gone (killed mid-upgrade, say): nobody will write
         * the pid file or tell systemd for us, so take over as the main
         * process ourselves. */
        handoff__log(h, HANDOFF_LOG_WARNING,
                     "could not tell the parent we are ready (%s); taking over as main process",
                     strerror(-r));
        h->has_parent = false;
        handoff__pidfile_update(h, getpid());
        handoff__notify(h, "MAINPID=%ld\nREADY=1\nSTATUS=Serving (generation %u, pid %ld)",
                        (long)getpid(), h->generation, (long)getpid());
        return 0;
    }
    handoff__pidfile_update(h, getpid());
    handoff__notify(h, "READY=1\nSTATUS=Serving (generation %u, pid %ld)", h->generation,
                    (long)getpid());
    return 0;
}

int handoff_shutdown(handoff_t *h, int now)
{
    if (!h)
        return -EINVAL;
    if (h->state == HF_STOPPED)
        return 0;
    if (h->child.pid > 0)
        upgrade_failed(h, true, -ECANCELED, "a shutdown was requested");
    if (h->upgrade_deferred) {
        h->upgrade_deferred = false;
        handoff__timer_set(&h->loop, HF_TIMER_PENDING, HF_NEVER);
        handoff__log(h, HANDOFF_LOG_INFO, "shutdown: the upgrade held back is cancelled");
    }
    if (!h->handed_over && h->state == HF_SERVING)
        handoff__notify(h, "STOPPING=1\nSTATUS=Shutting down");
    if (now || h->state != HF_SERVING) {
        set_stop(h, HANDOFF_STOP_FORCED);
        return 0;
    }
    begin_drain(h, HANDOFF_DRAIN_SHUTDOWN, 0, 0);
    return 0;
}

/* Starts the successor now (the checks are done). */
static int upgrade_start(handoff_t *h)
{
    handoff_event ev = {.type = HANDOFF_EVENT_UPGRADE_STARTED};
    char exe[4096];
    int r;

    handoff__trace("P1-upgrade");
    r = handoff__spawn(h, exe, sizeof exe);
    handoff__trace("P4-spawned");
    if (r < 0)
        return r;
    handoff__timer_set(&h->loop, HF_TIMER_UPGRADE, hf_deadline(h->child.start, h->upgrade_timeout));
    handoff__notify(h, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=Upgrading: generation %u starting (pid %ld)",
                    (unsigned long long)h->child.start, h->generation + 1, (long)h->child.pid);
    ev.pid = h->child.pid;
    push(h, &ev, "generation %u starting: pid %ld, %s", h->generation + 1, (long)h->child.pid, exe);
    handoff__log(h, HANDOFF_LOG_INFO, "upgrade: started generation %u as pid %ld (%s)",
                 h->generation + 1, (long)h->child.pid, exe);
    return 0;
}

/* How long an upgrade held back by max_draining waits for a draining
 * generation to finish before the oldest is killed. Without the wait, a
 * burst of upgrades would kill generations a few milliseconds into their
 * drain, with requests in flight. */
static uint64_t deferral_wait(const handoff_t *h)
{
    return h->drain_timeout < HANDOFF_USEC_PER_SEC ? h->drain_timeout : HANDOFF_USEC_PER_SEC;
}

/* A deferred upgrade goes ahead: a draining generation exited (kill
 * false), or the wait is over and the oldest beyond the limit are killed. */
static void deferred_upgrade(handoff_t *h, bool kill)
{
    uint64_t waited = handoff_now_usec() - h->deferred_at;
    size_t live = handoff__preds_live(h);
    int r;

    if (!kill && live + 1 > (size_t)h->max_draining)
        return; /* still full */
    while (live + 1 > (size_t)h->max_draining && live > 0) {
        handoff__log(h, HANDOFF_LOG_WARNING,
                     "max_draining %d reached: killing generation %u (pid %ld), still draining after "
                     "the upgrade waited %llu ms for it",
                     h->max_draining, h->preds[0].generation, (long)h->preds[0].pid,
                     (unsigned long long)(waited / 1000));
        handoff__pred_kill(h, 0);
        live--;
    }
    h->upgrade_deferred = false;
    handoff__timer_set(&h->loop, HF_TIMER_PENDING, HF_NEVER);
    if (!kill)
        handoff__log(h, HANDOFF_LOG_INFO, "a draining generation exited; upgrading after %llu ms",
                     (unsigned long long)(waited / 1000));
    r = upgrade_start(h);
    if (r < 0)
        report_upgrade_error(h, r);
}

int handoff_upgrade(handoff_t *h)
{
    if (!h)
        return -EINVAL;
    if (h->state != HF_SERVING)
        return handoff__fail(h, -ESHUTDOWN, "upgrade: this process is draining");
    if (h->child.pid > 0)
        return handoff__fail(h, -EBUSY, "upgrade: pid %ld is already starting", (long)h->child.pid);
    if (!h->ready)
        return handoff__fail(h, -EAGAIN, "upgrade: call handoff_ready() first");
    if (h->upgrade_deferred)
        return 1;
    if (h->max_draining > 0) {
        /* Once the successor is ready, this process drains too. */
        size_t live = handoff__preds_live(h);
        if (live + 1 > (size_t)h->max_draining) {
            uint64_t wait = deferral_wait(h);
            h->upgrade_deferred = true;
            h->deferred_at = handoff_now_usec();
            handoff__timer_set(&h->loop, HF_TIMER_PENDING, hf_deadline(h->deferred_at, wait));
            handoff__log(h, HANDOFF_LOG_NOTICE,
                         "upgrade held back: %zu generations draining (max_draining %d); waiting up "
                         "to %llu ms for one to finish",
                         live, h->max_draining, (unsigned long long)(wait / 1000));
            return 1;
        }
    }
    return upgrade_start(h);
}

/*
 * core.c - the handle: creation, the event loop plumbing (one epoll fd that
 * gathers the signalfd, the timer, the drain wake-up and the successor's
 * handshake socket and pidfd), the generation state machine, readiness,
 * shutdown and connection tracking.
 *
 * States: SERVING -> DRAINING -> STOPPED. An upgrade runs inside SERVING
 * (child_pid != 0); the successor's READY turns it into DRAINING with reason
 * UPGRADE, a SIGTERM into DRAINING with reason SHUTDOWN. See
 * docs/protocol.md for the full diagram.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

/* One handle per process: signals and the environment are process-wide. */
static atomic_bool g_handle_exists;

uint64_t handoff_now_usec(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * HANDOFF_USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

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
    default: return "unknown";
    }
}

int handoff__epoll_add(handoff_t *h, int fd, uint32_t tag)
{
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = tag};
    return epoll_ctl(h->epfd, EPOLL_CTL_ADD, fd, &e) < 0 ? -errno : 0;
}

void handoff__epoll_del(handoff_t *h, int fd)
{
    if (fd >= 0)
        (void)epoll_ctl(h->epfd, EPOLL_CTL_DEL, fd, NULL);
}

int handoff__timer_arm(handoff_t *h, enum hf_timer which, uint64_t usec)
{
    struct itimerspec its = {{0, 0}, {0, 0}};

    h->timer = which;
    if (which != HF_TIMER_NONE && usec != HANDOFF_NO_TIMEOUT) {
        if (usec == 0)
            usec = 1; /* 0 would disarm */
        its.it_value.tv_sec = (time_t)(usec / HANDOFF_USEC_PER_SEC);
        its.it_value.tv_nsec = (long)(usec % HANDOFF_USEC_PER_SEC) * 1000;
    }
    return timerfd_settime(h->timerfd, 0, &its, NULL) < 0 ? -errno : 0;
}

void handoff__push_event(handoff_t *h, const handoff_event *ev, const char *fmt, ...)
{
    size_t slot;
    va_list ap;

    if (h->evlen == HF_EVQ) {
        /* Cannot happen with the state machine's bounded fan-out, but never
         * overwrite: the oldest unread events matter most. */
        handoff__log(h, HANDOFF_LOG_ERR, "event queue full; dropping %s",
                     handoff_event_name(ev->type));
        return;
    }
    slot = (h->evhead + h->evlen) % HF_EVQ;
    h->evq[slot] = *ev;
    va_start(ap, fmt);
    handoff__vformat(h->evmsg[slot], HF_MSG, fmt, ap);
    va_end(ap);
    h->evlen++;
}

static char **argv_from_proc(void)
{
    char buf[65536];
    size_t len = 0, count = 0;
    ssize_t n;
    char **argv;
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return NULL;
    while (len < sizeof buf - 1 && (n = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    (void)close(fd);
    if (len == 0)
        return NULL;
    if (buf[len - 1] != '\0')
        buf[len++] = '\0';
    for (size_t i = 0; i < len; i++)
        count += buf[i] == '\0';
    argv = calloc(count + 1, sizeof *argv);
    if (!argv)
        return NULL;
    for (size_t i = 0, k = 0; i < len && k < count; k++) {
        argv[k] = strdup(buf + i);
        if (!argv[k])
            goto oom;
        i += strlen(buf + i) + 1;
    }
    return argv;
oom:
    for (size_t k = 0; argv[k]; k++)
        free(argv[k]);
    free(argv);
    return NULL;
}

static char **argv_copy(char *const *src)
{
    size_t n = 0;
    char **argv;

    while (src[n])
        n++;
    argv = calloc(n + 1, sizeof *argv);
    if (!argv)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        argv[i] = strdup(src[i]);
        if (!argv[i]) {
            for (size_t k = 0; k < i; k++)
                free(argv[k]);
            free(argv);
            return NULL;
        }
    }
    return argv;
}

static void handle_destroy(handoff_t *h)
{
    if (h->argv) {
        for (size_t i = 0; h->argv[i]; i++)
            free(h->argv[i]);
        free(h->argv);
    }
    for (size_t i = 0; i < h->ninh; i++) {
        if (h->inh[i].fd >= 0 && !h->inh[i].claimed)
            (void)close(h->inh[i].fd);
        free(h->inh[i].name);
    }
    free(h->inh);
    if (h->ready_fd >= 0)
        (void)close(h->ready_fd);
    if (h->epfd >= 0)
        (void)close(h->epfd);
    if (h->timerfd >= 0)
        (void)close(h->timerfd);
    if (h->wakefd >= 0)
        (void)close(h->wakefd);
    free(h->cwd);
    free(h->pid_file);
    free(h->notify_socket);
    free(h);
}

int handoff_new(const handoff_options *opts, handoff_t **out)
{
    handoff_options def = HANDOFF_OPTIONS_INIT;
    handoff_t *h;
    int r;

    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!opts)
        opts = &def;
    if (opts->upgrade_signal != 0 && opts->upgrade_signal != -1 &&
        (opts->upgrade_signal < 1 || opts->upgrade_signal >= HF_NSIG ||
         opts->upgrade_signal == SIGKILL || opts->upgrade_signal == SIGSTOP ||
         opts->upgrade_signal == SIGTERM || opts->upgrade_signal == SIGINT))
        return -EINVAL;
    if (opts->flags & ~(unsigned)(HANDOFF_NO_SIGNALS | HANDOFF_NO_NOTIFY | HANDOFF_KEEP_ENV |
                                  HANDOFF_TERM_GRACEFUL_ONLY))
        return -EINVAL;
    if (opts->pid_file && !*opts->pid_file)
        return -EINVAL;
    if (opts->argv && (!opts->argv[0] || !*opts->argv[0]))
        return -EINVAL;
    if (atomic_exchange(&g_handle_exists, true))
        return -EBUSY;

    h = calloc(1, sizeof *h);
    if (!h) {
        atomic_store(&g_handle_exists, false);
        return -ENOMEM;
    }
    h->epfd = h->sigfd = h->timerfd = h->wakefd = h->ready_fd = -1;
    h->child_pidfd = h->child_sock = h->succ_pidfd = -1;
    h->generation = 1;
    h->upgrade_timeout = opts->upgrade_timeout_usec ? opts->upgrade_timeout_usec
                                                    : 60 * HANDOFF_USEC_PER_SEC;
    h->drain_timeout = opts->drain_timeout_usec ? opts->drain_timeout_usec
                                                : 30 * HANDOFF_USEC_PER_SEC;
    h->resume_window = opts->resume_window_usec;
    h->upgrade_signal = opts->upgrade_signal == 0 ? SIGHUP : opts->upgrade_signal;
    h->flags = opts->flags;
    h->log = opts->log;
    h->log_userdata = opts->log_userdata;
    h->log_level = opts->log_level ? opts->log_level : HANDOFF_LOG_WARNING;
    atomic_init(&h->conns, 0);
    atomic_init(&h->draining, false);

    errno = 0;
    h->argv = opts->argv ? argv_copy(opts->argv) : argv_from_proc();
    if (!h->argv || !h->argv[0]) {
        /* /proc/self/cmdline unreadable or empty: pass opts->argv. */
        r = errno == ENOMEM || errno == 0 ? -ENOMEM : -errno;
        goto fail;
    }
    h->cwd = getcwd(NULL, 0);
    if (!h->cwd) {
        r = -errno;
        goto fail;
    }
    r = -ENOMEM;
    if (opts->pid_file && !(h->pid_file = strdup(opts->pid_file)))
        goto fail;

    r = handoff__inherit(h);
    if (r < 0)
        goto fail;
    h->epfd = epoll_create1(EPOLL_CLOEXEC);
    h->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    h->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (h->epfd < 0 || h->timerfd < 0 || h->wakefd < 0) {
        r = -errno;
        goto fail;
    }
    if ((r = handoff__epoll_add(h, h->timerfd, HF_TAG_TIMER)) < 0 ||
        (r = handoff__epoll_add(h, h->wakefd, HF_TAG_WAKE)) < 0)
        goto fail;
    r = handoff__signals_init(h);
    if (r < 0) {
        handoff__signals_done(h);
        goto fail;
    }
    *out = h;
    return 0;
fail:
    handle_destroy(h);
    atomic_store(&g_handle_exists, false);
    return r;
}

handoff_t *handoff_free(handoff_t *h)
{
    bool last;

    if (!h)
        return NULL;
    if (h->child_pid > 0)
        (void)handoff__child_reap(h, true, -ECANCELED, "the parent is exiting");
    if (h->succ_pidfd >= 0)
        (void)close(h->succ_pidfd);
    /* This process is the last generation using the pid file and the unix
     * socket paths unless it handed them over, or it is a successor that
     * never became ready (its parent still serves with them). */
    last = !h->handed_over && (h->ready || !h->has_parent);
    if (last)
        handoff__pidfile_remove(h);
    handoff__regs_free(h, last);
    handoff__signals_done(h);
    handle_destroy(h);
    atomic_store(&g_handle_exists, false);
    return NULL;
}

int handoff_has_parent(const handoff_t *h)
{
    return h && h->has_parent;
}

unsigned handoff_generation(const handoff_t *h)
{
    return h ? h->generation : 0;
}

int handoff_event_fd(const handoff_t *h)
{
    return h ? h->epfd : -EINVAL;
}

void handoff__begin_drain(handoff_t *h, int reason, pid_t pid)
{
    handoff_event ev = {.type = HANDOFF_EVENT_DRAIN, .reason = reason, .pid = pid};

    if (h->state != HF_SERVING)
        return;
    h->state = HF_DRAINING;
    h->hammer_at = h->drain_timeout == HANDOFF_NO_TIMEOUT ? HANDOFF_NO_TIMEOUT
                                                          : handoff_now_usec() + h->drain_timeout;
    (void)handoff__timer_arm(h, HF_TIMER_HAMMER, h->drain_timeout);
    if (reason == HANDOFF_DRAIN_UPGRADE)
        handoff__push_event(h, &ev, "generation %u (pid %ld) is serving; draining %lu connections",
                            h->generation + 1, (long)pid, (unsigned long)atomic_load(&h->conns));
    else
        handoff__push_event(h, &ev, "shutting down; draining %lu connections",
                            (unsigned long)atomic_load(&h->conns));
}

void handoff__set_stop(handoff_t *h, int reason)
{
    handoff_event ev = {.type = HANDOFF_EVENT_STOP, .reason = reason};

    if (h->stop_pending)
        return;
    h->stop_pending = true;
    h->state = HF_STOPPED;
    (void)handoff__timer_arm(h, HF_TIMER_NONE, 0);
    handoff__push_event(h, &ev, "%s",
                        reason == HANDOFF_STOP_DRAINED   ? "all connections drained"
                        : reason == HANDOFF_STOP_TIMEOUT ? "drain timeout expired"
                                                         : "forced stop");
}

static void on_timer(handoff_t *h)
{
    uint64_t ticks;

    if (read(h->timerfd, &ticks, sizeof ticks) != (ssize_t)sizeof ticks)
        return;
    if (h->timer == HF_TIMER_UPGRADE && h->child_pid > 0) {
        char why[128];
        (void)snprintf(why, sizeof why, "it did not become ready within %llu ms",
                       (unsigned long long)(h->upgrade_timeout / HANDOFF_USEC_PER_MSEC));
        (void)handoff__child_reap(h, true, -ETIMEDOUT, why);
    } else if (h->timer == HF_TIMER_HAMMER && h->state == HF_DRAINING) {
        handoff__log(h, HANDOFF_LOG_WARNING, "drain timeout: %lu connections still open",
                     (unsigned long)atomic_load(&h->conns));
        handoff__set_stop(h, HANDOFF_STOP_TIMEOUT);
    } else if (h->timer == HF_TIMER_WINDOW && h->state == HF_DRAINING) {
        /* The successor survived the resume window. Back to the hammer
         * for whatever is still open; a zero count stops at the next
         * handoff_next_event(). */
        uint64_t now = handoff_now_usec();
        h->window_over = true;
        if (h->hammer_at != HANDOFF_NO_TIMEOUT && now >= h->hammer_at)
            handoff__set_stop(h, HANDOFF_STOP_TIMEOUT);
        else
            (void)handoff__timer_arm(h, HF_TIMER_HAMMER,
                                     h->hammer_at == HANDOFF_NO_TIMEOUT ? HANDOFF_NO_TIMEOUT
                                                                        : h->hammer_at - now);
    }
}

/* Reads every ready source once, without blocking. The pidfds are handled
 * after the handshake socket so that a successor which said READY and then
 * died is seen in that order. */
static int poll_sources(handoff_t *h)
{
    struct epoll_event evs[8];
    bool child_exited = false, succ_exited = false;
    int n;

    do {
        n = epoll_wait(h->epfd, evs, 8, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    for (int i = 0; i < n; i++) {
        switch (evs[i].data.u32) {
        case HF_TAG_SIGNAL:
            (void)handoff__signals_read(h);
            break;
        case HF_TAG_TIMER:
            on_timer(h);
            break;
        case HF_TAG_WAKE: {
            uint64_t v;
            (void)!read(h->wakefd, &v, sizeof v);
            break;
        }
        case HF_TAG_CHILD_SOCK:
            (void)handoff__child_sock_read(h);
            break;
        case HF_TAG_CHILD_PIDFD:
            child_exited = true;
            break;
        case HF_TAG_SUCC_PIDFD:
            succ_exited = true;
            break;
        default:
            break;
        }
    }
    if (child_exited && h->child_pid > 0)
        (void)handoff__child_reap(h, false, -ECHILD, NULL);
    if (succ_exited)
        handoff__succ_reap(h);
    return 0;
}

int handoff_next_event(handoff_t *h, handoff_event *ev)
{
    int r;

    if (!h || !ev)
        return -EINVAL;
    if (h->evlen == 0) {
        r = poll_sources(h);
        if (r < 0)
            return r;
    }
    /* The drain completes when the count is zero after the application
     * has seen DRAIN (and so has stopped accepting) - but within a resume
     * window after a hand-over, STOP waits for the window to pass. */
    if (h->evlen == 0 && h->drain_delivered && h->state == HF_DRAINING &&
        atomic_load(&h->conns) == 0) {
        uint64_t now = handoff_now_usec();
        if (h->handed_over && h->resume_window && !h->window_over && h->succ_pid > 0 &&
            now < h->handover_at + h->resume_window) {
            if (h->timer != HF_TIMER_WINDOW)
                (void)handoff__timer_arm(h, HF_TIMER_WINDOW,
                                         h->handover_at + h->resume_window - now);
        } else {
            handoff__set_stop(h, HANDOFF_STOP_DRAINED);
        }
    }
    if (h->evlen == 0) {
        memset(ev, 0, sizeof *ev);
        ev->message = "";
        return 0;
    }
    *ev = h->evq[h->evhead];
    memcpy(h->curmsg, h->evmsg[h->evhead], HF_MSG);
    ev->message = h->curmsg;
    h->evhead = (h->evhead + 1) % HF_EVQ;
    h->evlen--;
    if (ev->type == HANDOFF_EVENT_DRAIN) {
        h->drain_delivered = true;
        atomic_store(&h->draining, true);
        /* From now on the last handoff_conn_end() wakes the event fd. */
        (void)!write(h->wakefd, &(uint64_t){1}, sizeof(uint64_t));
    }
    return 1;
}

int handoff_wait_event(handoff_t *h, handoff_event *ev, uint64_t deadline)
{
    struct epoll_event e;
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
        r = epoll_wait(h->epfd, &e, 1, timeout);
        if (r < 0 && errno != EINTR)
            return -errno;
    }
}

int handoff_ready(handoff_t *h)
{
    int r;

    if (!h)
        return -EINVAL;
    if (h->ready)
        return handoff__fail(h, -EALREADY, "ready: already called");
    h->ready = true;
    handoff__close_unclaimed(h);
    if (h->has_parent) {
        r = handoff__send_ready_to_parent(h);
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
    if (h->child_pid > 0)
        (void)handoff__child_reap(h, true, -ECANCELED, "a shutdown was requested");
    if (!h->handed_over && h->state == HF_SERVING)
        handoff__notify(h, "STOPPING=1\nSTATUS=Shutting down");
    if (now || h->state != HF_SERVING) {
        handoff__set_stop(h, HANDOFF_STOP_FORCED);
        return 0;
    }
    handoff__begin_drain(h, HANDOFF_DRAIN_SHUTDOWN, 0);
    return 0;
}

int handoff_upgrade(handoff_t *h)
{
    if (!h)
        return -EINVAL;
    if (h->state != HF_SERVING)
        return handoff__fail(h, -ESHUTDOWN, "upgrade: this process is draining");
    if (h->child_pid > 0)
        return handoff__fail(h, -EBUSY, "upgrade: pid %ld is already starting",
                             (long)h->child_pid);
    if (!h->ready)
        return handoff__fail(h, -EAGAIN, "upgrade: call handoff_ready() first");
    return handoff__spawn(h);
}

void handoff_conn_begin(handoff_t *h)
{
    if (h)
        atomic_fetch_add(&h->conns, 1);
}

void handoff_conn_end(handoff_t *h)
{
    if (!h)
        return;
    /* write() on an eventfd is async-signal-safe and thread-safe; the loop
     * thread then sees the zero count in handoff_next_event(). */
    if (atomic_fetch_sub(&h->conns, 1) == 1 && atomic_load(&h->draining))
        (void)!write(h->wakefd, &(uint64_t){1}, sizeof(uint64_t));
}

unsigned long handoff_conn_count(const handoff_t *h)
{
    return h ? atomic_load(&h->conns) : 0;
}

int handoff_accept(handoff_t *h, int listen_fd, int nonblock)
{
    int fd;

    if (!h || listen_fd < 0)
        return -EINVAL;
    fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0));
    if (fd < 0)
        return -errno;
    handoff_conn_begin(h);
    return fd;
}

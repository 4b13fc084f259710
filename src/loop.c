/*
 * loop.c - the loop plumbing (see loop.h).
 */
#include "loop.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static void rearm(struct hf_loop *l);

uint64_t handoff_now_usec(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * HANDOFF_USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

int handoff__loop_init(struct hf_loop *l)
{
    memset(l, 0, sizeof *l);
    for (int t = 0; t < HF_NTIMERS; t++)
        l->deadline[t] = HF_NEVER;
    l->armed = HF_NEVER;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->epfd < 0 || l->timerfd < 0 || l->wakefd < 0)
        return -errno;
    int r = handoff__loop_add(l, l->timerfd, HF_TAG_TIMER);
    return r < 0 ? r : handoff__loop_add(l, l->wakefd, HF_TAG_WAKE);
}

void handoff__loop_done(struct hf_loop *l)
{
    int *fds[] = {&l->epfd, &l->timerfd, &l->wakefd};

    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
        if (*fds[i] >= 0)
            (void)close(*fds[i]);
        *fds[i] = -1;
    }
}

int handoff__loop_add(struct hf_loop *l, int fd, uint32_t tag)
{
    struct epoll_event e = {.events = EPOLLIN, .data.u32 = tag};
    return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &e) < 0 ? -errno : 0;
}

void handoff__loop_del(struct hf_loop *l, int fd)
{
    if (fd >= 0)
        (void)epoll_ctl(l->epfd, EPOLL_CTL_DEL, fd, NULL);
}

int handoff__loop_poll(struct hf_loop *l, uint32_t *tags, int max)
{
    struct epoll_event evs[16];
    int n, k = 0;
    uint64_t v;

    if (max > 16)
        max = 16;
    do {
        n = epoll_wait(l->epfd, evs, max, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    for (int i = 0; i < n; i++) {
        uint32_t tag = evs[i].data.u32;
        /* Consume the loop's own sources here; their users only need to
         * know that they fired. */
        if (tag == HF_TAG_TIMER) {
            if (read(l->timerfd, &v, sizeof v) != (ssize_t)sizeof v)
                continue; /* a re-arm raced with the expiry: nothing fired */
            /* Whichever deadline fired is still set until its user
             * sees it expired; re-arming keeps the earliest pending. */
            l->armed = HF_NEVER;
            rearm(l);
        } else if (tag == HF_TAG_WAKE) {
            (void)!read(l->wakefd, &v, sizeof v);
        }
        tags[k++] = tag;
    }
    return k;
}

int handoff__loop_block(struct hf_loop *l, int timeout_ms)
{
    struct epoll_event e;

    if (epoll_wait(l->epfd, &e, 1, timeout_ms) < 0 && errno != EINTR)
        return -errno;
    return 0;
}

static void rearm(struct hf_loop *l)
{
    struct itimerspec its;
    uint64_t min = HF_NEVER;

    for (int t = 0; t < HF_NTIMERS; t++)
        if (l->deadline[t] < min)
            min = l->deadline[t];
    if (min == l->armed)
        return;
    memset(&its, 0, sizeof its);
    if (min != HF_NEVER) {
        /* Absolute time; a deadline already past fires at once. Zero
         * would disarm, so the earliest is 1 ns. */
        its.it_value.tv_sec = (time_t)(min / HANDOFF_USEC_PER_SEC);
        its.it_value.tv_nsec = (long)(min % HANDOFF_USEC_PER_SEC) * 1000;
        if (min == 0)
            its.it_value.tv_nsec = 1;
    }
    if (timerfd_settime(l->timerfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
        l->armed = min;
}

void handoff__timer_set(struct hf_loop *l, enum hf_timer t, uint64_t deadline)
{
    l->deadline[t] = deadline;
    rearm(l);
}

bool handoff__timer_expired(struct hf_loop *l, enum hf_timer t, uint64_t now)
{
    if (l->deadline[t] == HF_NEVER || l->deadline[t] > now)
        return false;
    l->deadline[t] = HF_NEVER;
    rearm(l);
    return true;
}

void handoff__timer_clear_all(struct hf_loop *l)
{
    for (int t = 0; t < HF_NTIMERS; t++)
        l->deadline[t] = HF_NEVER;
    rearm(l);
}

void handoff__loop_wake(const struct hf_loop *l)
{
    /* write() on an eventfd is async-signal-safe and thread-safe. */
    (void)!write(l->wakefd, &(uint64_t){1}, sizeof(uint64_t));
}

int handoff__event_push(struct hf_loop *l, const handoff_event *ev, const char *fmt, ...)
{
    size_t slot;
    va_list ap;
    int n;

    if (l->evlen == HF_EVQ)
        return -ENOBUFS;
    slot = (l->evhead + l->evlen) % HF_EVQ;
    l->evq[slot] = *ev;
    va_start(ap, fmt);
    n = vsnprintf(l->evmsg[slot], HF_MSG, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized): va_start above */
    va_end(ap);
    if (n < 0)
        l->evmsg[slot][0] = '\0';
    l->evlen++;
    return 0;
}

int handoff__event_pop(struct hf_loop *l, handoff_event *ev)
{
    if (l->evlen == 0)
        return 0;
    *ev = l->evq[l->evhead];
    memcpy(l->curmsg, l->evmsg[l->evhead], HF_MSG);
    ev->message = l->curmsg;
    l->evhead = (l->evhead + 1) % HF_EVQ;
    l->evlen--;
    return 1;
}

size_t handoff__event_count(const struct hf_loop *l)
{
    return l->evlen;
}

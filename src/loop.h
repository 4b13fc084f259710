/*
 * loop.h - the loop plumbing under the handle: one epoll fd (the handle's
 * event fd) gathering the sources, a set of deadlines served by one
 * timerfd, a wake-up eventfd, and the queue of events for the application.
 *
 * The lowest layer of the core: it knows nothing of the state machine,
 * signals or processes. The files above register their fds under a tag and
 * get the tags of ready sources back from handoff__loop_poll(); the loop
 * never calls up (as libuv keeps its loop below its handle files).
 */
#ifndef HANDOFF_LOOP_H
#define HANDOFF_LOOP_H

#include "handoff.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a ready fd is; the data of its epoll registration. */
enum hf_tag {
    HF_TAG_TIMER = 1,   /* the loop's timerfd */
    HF_TAG_WAKE,        /* the loop's eventfd */
    HF_TAG_SIGNAL,      /* signal.c: the signalfd */
    HF_TAG_CHILD_SOCK,  /* spawn.c: handshake socket of a starting successor */
    HF_TAG_CHILD_PIDFD, /* spawn.c: pidfd of a starting successor */
    HF_TAG_SUCC_PIDFD,  /* spawn.c: pidfd of the successor we handed over to */
    HF_TAG_PRED_PIDFD,  /* spawn.c: pidfd of a draining predecessor */
    HF_TAG_MIG_OUT,     /* migrate.c: channel to the successor we hand connections */
    HF_TAG_MIG_IN,      /* migrate.c: channel from the predecessor handing us some */
    HF_TAG_MIG_TIMER    /* migrate.c: acknowledgement deadline (its own timerfd:
                         * armed from any thread that hands a connection over) */
};

/* Deadlines, each independent; the timerfd is armed for the earliest. */
enum hf_timer {
    HF_TIMER_UPGRADE = 0, /* the starting successor must be ready by then */
    HF_TIMER_HAMMER,      /* the drain ends by then */
    HF_TIMER_WINDOW,      /* the resume window ends */
    HF_TIMER_PENDING,     /* a deferred upgrade gives up waiting */
    HF_NTIMERS
};

/* A deadline that never comes. */
#define HF_NEVER UINT64_MAX

/* now + usec, saturating: HANDOFF_NO_TIMEOUT (and any sum past the range)
 * gives HF_NEVER instead of wrapping into the past. */
static inline uint64_t hf_deadline(uint64_t now, uint64_t usec)
{
    return usec == HANDOFF_NO_TIMEOUT || usec > HF_NEVER - now ? HF_NEVER : now + usec;
}

#define HF_EVQ 32  /* queued events */
#define HF_MSG 256 /* bytes of an event's message */

struct hf_loop {
    int epfd;
    int timerfd;
    int wakefd;
    uint64_t deadline[HF_NTIMERS];
    uint64_t armed;             /* what the timerfd is set to */
    handoff_event evq[HF_EVQ];
    char evmsg[HF_EVQ][HF_MSG];
    size_t evhead, evlen;
    char curmsg[HF_MSG];        /* the message of the event last popped */
};

/* Creates the fds (close-on-exec) with the timer and the wake-up
 * registered. On failure the loop holds what was made; call
 * handoff__loop_done() either way. Returns 0 or -errno. */
int handoff__loop_init(struct hf_loop *l);
void handoff__loop_done(struct hf_loop *l);

/* Registers fd for readability under tag. 0 or -errno. */
int handoff__loop_add(struct hf_loop *l, int fd, uint32_t tag);
/* Removes fd (ignores -1 and fds not registered). */
void handoff__loop_del(struct hf_loop *l, int fd);

/* Without blocking, stores the tags of up to max ready sources in tags.
 * The timer and wake-up sources are consumed (read) here. Returns the
 * count or -errno. */
int handoff__loop_poll(struct hf_loop *l, uint32_t *tags, int max);

/* Blocks until a source is ready or timeout_ms (-1: forever) passes.
 * Returns 0 or -errno (EINTR is returned as 0). */
int handoff__loop_block(struct hf_loop *l, int timeout_ms);

/* Sets (HF_NEVER: clears) one deadline, absolute CLOCK_MONOTONIC usec, and
 * re-arms the timerfd for the earliest. */
void handoff__timer_set(struct hf_loop *l, enum hf_timer t, uint64_t deadline);
/* True, once, if deadline t is set and not after now (it is then cleared). */
bool handoff__timer_expired(struct hf_loop *l, enum hf_timer t, uint64_t now);
/* Clears every deadline. */
void handoff__timer_clear_all(struct hf_loop *l);

/* Makes the event fd readable. Thread-safe and async-signal-safe. */
void handoff__loop_wake(const struct hf_loop *l);

/* Queues an event for the application with a printf-style message.
 * Returns 0, or -ENOBUFS if the queue is full (the event is dropped: the
 * oldest unread events matter most). */
int handoff__event_push(struct hf_loop *l, const handoff_event *ev, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Pops the oldest event into *ev (its message valid until the next pop).
 * Returns 1, or 0 if the queue is empty. */
int handoff__event_pop(struct hf_loop *l, handoff_event *ev);
/* Events queued and not yet popped. */
size_t handoff__event_count(const struct hf_loop *l);

#endif

/*
 * worker.h - a worker thread's event loop (internal to libhandoff-http),
 * the layer below connections, as libuv's loop sits below its handles:
 * it knows handles only by their callbacks.
 *
 * A worker has one epoll instance (handles register their fd with
 * hs_io as epoll data), an eventfd for wake-ups from other threads, one
 * list per timeout class (each class has one duration, so a list is
 * sorted by entry time), a heap of deferred callbacks, a ready list
 * (handles with work to do without an I/O event), a cross-thread queue
 * of handles (under mu) and of tasks (under mu), and a graveyard of
 * handles closed during an iteration (an event for one may still sit in
 * the batch), freed at the end of it.
 *
 * Threads: everything here is touched by the worker's thread only,
 * except mu and what it protects, load, the owner's atomics, and hs_wake().
 */
#ifndef HANDOFF_HTTP_WORKER_H
#define HANDOFF_HTTP_WORKER_H

#include "handoff.h"
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hs_worker;
struct hs_handle;
struct hs_counter;
struct hs_lwatch;

/* Timeout classes. Durations come from the owner (hs_worker.tdur); while
 * the worker drains, NEW and IDLE are shortened to a grace period. */
enum hs_tclass {
    HS_T_NONE = 0,
    HS_T_HANDSHAKE, /* TLS handshake */
    HS_T_NEW,       /* connected, no request yet (read timeout) */
    HS_T_READ,      /* a request is arriving */
    HS_T_IDLE,      /* keep-alive, between requests */
    HS_T_WRITE,     /* output pending without progress */
    HS_T_LINGER,    /* discarding input before the close */
    HS_T_COUNT
};

/* While draining for a shutdown (drain_grace), a keep-alive connection
 * idle for this long is closed (as is a new one that has sent nothing).
 * One active more recently may have its next request on the way: a busy
 * client sends it within microseconds, but one stalled by the scheduler
 * for a few hundred milliseconds must not find the connection closed
 * under the request, so the grace is generous. */
#define HS_DRAIN_GRACE_USEC (1000 * HANDOFF_USEC_PER_MSEC)

/* After this many TLS handshakes, a worker quiet for this long trims the
 * heap (see trim_heap() in worker.c). */
#define HS_TRIM_HANDSHAKES 64
#define HS_TRIM_QUIET_USEC (200 * HANDOFF_USEC_PER_MSEC)

/* What a handle's callbacks are. io receives the handle's epoll events;
 * the others may be NULL for handles that never use that facility. */
struct hs_handle_ops {
    void (*io)(struct hs_handle *h, uint32_t events);
    void (*run)(struct hs_handle *h);              /* its ready-list turn */
    void (*queued)(struct hs_handle *h);           /* taken from the queue */
    void (*timeout)(struct hs_handle *h, int cls); /* already out of the list */
    void (*stop)(struct hs_handle *h);             /* the worker stops: close */
    void (*destroy)(struct hs_handle *h);          /* free it (not the fd) */
};

/* A handle: first member of what an epoll event's data.ptr points to.
 * Handles that only take events (a listener, the eventfd) use ops and
 * nothing else; connections use the lists too. */
struct hs_handle {
    const struct hs_handle_ops *ops;
    uint64_t tsince;                 /* when it entered its timeout list */
    struct hs_handle *tprev, *tnext; /* timeout list; graveyard once dead */
    struct hs_handle *prev, *next;   /* every handle of the worker (hs_attach) */
    struct hs_handle *rprev, *rnext; /* ready list */
    struct hs_handle *qnext;         /* cross-thread queue (under mu) */
    uint8_t tclass;                  /* enum hs_tclass */
    bool in_ready;
    bool queued;                     /* under mu */
    bool dead;                       /* in the graveyard: no more timeouts */
};

struct hs_tlist {
    struct hs_handle *head, *tail;
};

/* A callback that runs on the worker after a delay (a binary min-heap on
 * (at, seq)). run(obj, fn, arg) lets the layer above call fn with its own
 * signature. */
struct hs_timer {
    uint64_t at;
    uint64_t seq;
    void (*run)(void *obj, void (*fn)(void), void *arg);
    void *obj;
    void (*fn)(void);
    void *arg;
};

/* Work handed to a worker by another thread (hs_post()). run() runs on
 * the worker, or with cancel set when the worker stops first; it owns t. */
struct hs_task {
    struct hs_task *next;
    void (*run)(struct hs_worker *w, struct hs_task *t, bool cancel);
};

struct hs_worker {
    struct hs_handle wake;      /* the eventfd's handle */
    void *owner;                /* the server */
    struct hs_counter *counter; /* the owner's connection count (conn.h) */
    /* Called on the worker at each wake-up, before the queues: the
     * owner's control flags (drain, resume). */
    void (*on_wake)(struct hs_worker *w);
    const uint64_t *tdur;       /* HS_T_COUNT durations (the owner's) */
    const atomic_int *stopping; /* the owner's: leave the loop */
    pthread_t thread;
    bool started;
    bool inited;                /* mu initialised */
    bool draining;              /* set by the owner's on_wake */
    bool drain_grace;           /* idem: shorten NEW/IDLE (a shutdown) */
    bool finishing;             /* stopped: no new deferred callbacks */
    int epfd;
    int evfd;

    uint64_t now;               /* CLOCK_MONOTONIC at the last wake-up */
    int64_t date_sec;
    char date[30];              /* IMF-fixdate of now */
    uint64_t busy_at;           /* the last wake-up with events */
    unsigned handshakes;        /* TLS handshakes since the heap was trimmed */

    struct hs_handle *handles;
    struct hs_tlist tl[HS_T_COUNT];
    struct hs_handle *ready_head, *ready_tail;
    size_t nready;
    struct hs_handle *graveyard;
    struct hs_pool blocks;      /* idle per-request blocks (h1.c) */
    void *h2;                   /* HTTP/2's per-worker state (h2.c), or NULL */

    struct hs_timer *timers;
    size_t ntimers, captimers;
    uint64_t timer_seq;

    pthread_mutex_t mu;
    struct hs_handle *q_head, *q_tail; /* under mu */
    struct hs_task *tasks;             /* under mu */

    /* Connections this worker serves or is about to (balancing). */
    atomic_uint load;

    /* The owner's (server.c, accept.c). */
    struct hs_lwatch *lw;       /* one handle per listener */
    atomic_uint drain_ack;      /* the last drain this worker applied */
    unsigned resume_seen;       /* the last resume it applied */
    bool accept_paused;         /* listeners unwatched after EMFILE */
};

/* The worker whose thread this is, or NULL. */
extern _Thread_local struct hs_worker *hs_current;

/* Sets w up (epoll, eventfd, mutex; no thread yet). Returns 0 or -errno;
 * on failure hs_worker_done() cleans up. */
int hs_worker_init(struct hs_worker *w, void *owner, const uint64_t *tdur,
                   const atomic_int *stopping, void (*on_wake)(struct hs_worker *w),
                   unsigned pool_max);
/* Frees what hs_worker_init() made; the thread must be gone, and every
 * handle destroyed (hs_worker_destroy_all()). */
void hs_worker_done(struct hs_worker *w, void (*destroy_block)(struct hs_pooled *o));
/* The thread's function (arg: the worker): runs the loop until
 * *stopping, then stops every handle, runs the deferred callbacks and
 * cancels the tasks. */
void *hs_worker_main(void *arg);
/* After the thread is gone: destroys the handles still attached (held by
 * the application until then) and cancels the tasks. */
void hs_worker_destroy_all(struct hs_worker *w);

/* Wakes the worker (its on_wake, then its queues). Thread-safe. */
void hs_wake(struct hs_worker *w);

/* Registers fd with events, data pointing at h. Returns 0 or -errno. */
int hs_watch(struct hs_worker *w, int fd, uint32_t events, struct hs_handle *h);
/* Unregisters fd (needed even before close(): a copy of the fd in a child
 * between fork() and exec() keeps a registration alive). */
void hs_unwatch(struct hs_worker *w, int fd);

/* Adds h to the worker's handles (stopped and freed with the worker). */
void hs_attach(struct hs_worker *w, struct hs_handle *h);
/* Takes h out of every list and queue (before freeing it). */
void hs_detach(struct hs_worker *w, struct hs_handle *h);
/* h is closed: out of its timeout list, destroyed at the end of the
 * current iteration (an event for it may still be in the batch). */
void hs_bury(struct hs_worker *w, struct hs_handle *h);

/* Puts h in timeout class cls (HS_T_NONE: none) from now, or keeps its
 * entry time when it is in cls already, unless refresh. */
void hs_tset(struct hs_worker *w, struct hs_handle *h, int cls, bool refresh);

/* Puts h in timeout class cls as if it had entered it at since (at most
 * now): a connection adopted from another generation keeps its wait. The
 * list stays sorted: the insertion walks back from *from (the handle
 * inserted before into cls, kept there by this call) or, if *from is
 * NULL or not in cls, from the tail. A batch inserted in descending
 * order of since, with one cursor per class, costs O(list + batch), not
 * O(list x batch). */
void hs_tset_at(struct hs_worker *w, struct hs_handle *h, int cls, uint64_t since,
                struct hs_handle **from);

/* Gives h a turn (ops->run) in the next round, after others' events. */
void hs_ready_push(struct hs_worker *w, struct hs_handle *h);

/* Queues h for ops->queued on its worker; call with w->mu held. Returns
 * true when the worker must be woken (the queue was empty). */
bool hs_enqueue_locked(struct hs_worker *w, struct hs_handle *h);

/* Hands t to w's thread (t->run there). Thread-safe. */
void hs_post(struct hs_worker *w, struct hs_task *t);

/* Runs run(obj, fn, arg) on w at the absolute time at. Must be called on
 * w's thread. Returns 0, -ENOMEM, or -ECANCELED once the worker stops
 * (its stop runs every pending callback once, no more). */
int hs_timer_add(struct hs_worker *w, uint64_t at,
                 void (*run)(void *obj, void (*fn)(void), void *arg), void *obj,
                 void (*fn)(void), void *arg);

/* a + b, or UINT64_MAX (never) on overflow. */
uint64_t hs_sat_add(uint64_t a, uint64_t b);

#endif

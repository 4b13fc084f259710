/*
 * migrate_impl.h - the state shared by the files of connection migration
 * (never installed; the core's files use migrate.h only):
 *   migrate_base.c   fd checks, the queue for handoff_adopt(), receiving
 *   migrate_out.c    the old generation: batches, acknowledgements, returns
 *   migrate_in.c     the successor: receiving, checking, acknowledging
 *   migrate.c        the hooks the core calls, handoff_adopt(), the event
 * Everything in struct hf_mig is protected by its mutex.
 */
#ifndef HANDOFF_MIGRATE_IMPL_H
#define HANDOFF_MIGRATE_IMPL_H

#include "migrate.h"
#include "handle.h"
#include "loop.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A connection waiting for handoff_adopt(). */
struct mig_entry {
    int fd;
    bool returned;
    uint32_t len;
    unsigned char *state; /* malloc'd; NULL when len is 0 */
};

/* One batch: the wire message, built as records are added, and the fds. */
struct mig_batch {
    struct mig_batch *next;
    uint32_t seq, n;
    uint64_t sent_at;
    size_t len, cap;
    unsigned char *msg;
    int fds[HF_MIG_BATCH_FDS];
    uint32_t off[HF_MIG_BATCH_FDS]; /* offset of record i's length field */
};

enum mig_ch { CH_NONE = 0, CH_OPEN, CH_BROKEN };

struct hf_mig {
    pthread_mutex_t mu;

    /* to the successor */
    enum mig_ch out;
    int out_fd;
    pid_t out_pid;
    bool out_wait_write;  /* EPOLLOUT armed after EAGAIN */
    bool out_wait_ack;    /* ETOOMANYREFS: retry after the next ack */
    char out_why[160];
    int timerfd;
    uint64_t ack_timeout;
    uint32_t next_seq;
    size_t max_msg;
    struct mig_batch *open;
    struct mig_batch *unsent, **unsent_tail;
    struct mig_batch *inflight, **inflight_tail;
    size_t pending, pending_bytes;
    unsigned long out_adopted, out_returned; /* this channel */

    /* from the predecessor */
    bool in_want;         /* we said ADOPT */
    int in_fd;
    pid_t in_pid;
    unsigned char *rbuf;
    bool in_ack_pending;
    bool in_wait_write;
    unsigned char ack[HF_MIG_ACK_MAX];
    size_t acklen;
    struct mig_entry held[HF_MIG_BATCH_FDS]; /* accepted, ack not sent yet */
    uint32_t nheld;
    unsigned long in_adopted, in_refused;

    /* waiting for handoff_adopt(): a ring */
    struct mig_entry *q;
    size_t qhead, qlen, qcap, qbytes;
    unsigned char *cur;   /* state returned by the last handoff_adopt() */
    bool event_pending;
};

static inline uint32_t hf_rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void hf_wr32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

/* The connection count of handoff_conn_begin()/_end() (core.c, a layer
 * above these files): the library counts the connections it holds. */
static inline void hf_mig_conn_begin(handoff_t *h)
{
    atomic_fetch_add(&h->conns, 1);
}

static inline void hf_mig_conn_end(handoff_t *h)
{
    if (atomic_fetch_sub(&h->conns, 1) == 1 && atomic_load(&h->draining))
        handoff__loop_wake(&h->loop);
}

/* migrate_base.c */
/* Registers fd under tag in the loop's epoll set for events (the loop
 * itself only watches for EPOLLIN). 0 or -errno. */
int handoff__mig_epoll_set(handoff_t *h, int fd, uint32_t tag, uint32_t events);
/* 0 for a connected stream socket of family inet, inet6 or unix; else
 * -ENOTSOCK, -EINVAL or -errno (-EBADF). */
int handoff__mig_check_conn(int fd);
void handoff__mig_raise_nofile(handoff_t *h);
/* Room for need entries in the queue: 0 or -ENOMEM. */
int handoff__mig_q_reserve(struct hf_mig *m, size_t need);
/* Appends; room must have been reserved. */
void handoff__mig_q_push(struct hf_mig *m, const struct mig_entry *e);
/* One message with its fds (up to maxfds kept, the rest closed) and the
 * sender's pid (0 if none). Returns its length, 0 at EOF, or -errno. */
int handoff__mig_recv_msg(int fd, void *buf, size_t len, int *fds, size_t maxfds, size_t *nfds,
                          pid_t *pid, int *flags);

/* migrate_out.c: the channel to the successor */
void handoff__mig_out_event(handoff_t *h, struct hf_mig *m);
void handoff__mig_out_timer(handoff_t *h, struct hf_mig *m);
/* Closes the partial batch and sends what the socket takes. */
void handoff__mig_out_flush(handoff_t *h, struct hf_mig *m);
void handoff__mig_out_teardown(handoff_t *h, struct hf_mig *m);
/* At handoff_free(): closes our copies and the channel. */
void handoff__mig_out_free(handoff_t *h, struct hf_mig *m);

/* migrate_in.c: the channel from the predecessor */
void handoff__mig_in_process(handoff_t *h, struct hf_mig *m);
void handoff__mig_in_free(struct hf_mig *m);

#endif

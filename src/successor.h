/*
 * successor.h - the processes of an upgrade (spawn.c): starting the new
 * generation with the registered fds, its readiness handshake, and
 * reaping. Only mechanism: what an exit or a READY means is decided by the
 * state machine (machine.c).
 */
#ifndef HANDOFF_SUCCESSOR_H
#define HANDOFF_SUCCESSOR_H

#include "handle.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* How a process ended. */
struct hf_exit {
    pid_t pid;
    int status;          /* from waitpid() when known */
    bool known;          /* false: reaped elsewhere (-ECHILD) */
    uint64_t elapsed;    /* since it was started */
    char how[160];       /* "exited with status 1", ... */
};

/* Starts the new generation: h->child is set and watched by the loop.
 * exe receives the resolved path. Returns 0, or -errno with the reason in
 * handoff_errmsg(h) (the child, if any, was reaped). */
int handoff__spawn(handoff_t *h, char *exe, size_t exelen);

/* Reads the handshake socket of h->child. Returns 1 for a READY sent by
 * the child itself, with *adopt the migration wire version it reads (0:
 * none; migrate.h), 0 for nothing (or a message ignored with a warning),
 * or -errno. */
int handoff__child_read(handoff_t *h, unsigned *adopt);

/* Reaps h->child (SIGKILLed first if kill_first) and forgets it. Returns
 * 1 with *out filled, or 0 if it has not exited (only without
 * kill_first). */
int handoff__child_reap(handoff_t *h, bool kill_first, struct hf_exit *out);

/* The child said READY: it becomes h->succ, still watched through its
 * pidfd (it is our child until we exit). */
void handoff__child_to_succ(handoff_t *h);

/* Reaps h->succ if it exited. Returns 1 with *out filled, else 0. */
int handoff__succ_reap(handoff_t *h, struct hf_exit *out);

/* Child side: tells the parent we are ready over HANDOFF_READY_FD with msg
 * ("READY=1", plus lines the parent advertised it reads: migrate.h).
 * 0 or -errno (the parent is gone). */
int handoff__send_ready_to_parent(handoff_t *h, const char *msg);

/* Forgets the predecessors that have exited; returns how many still
 * drain. */
size_t handoff__preds_live(handoff_t *h);
/* SIGKILLs predecessor i (through its pidfd) and forgets it. */
void handoff__pred_kill(handoff_t *h, size_t i);
void handoff__preds_free(handoff_t *h);

#endif

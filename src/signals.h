/*
 * signals.h - signals as data: the signalfd, the mask, watched signals and
 * hooks (signal.c). Reading reports what arrived; acting on it is the
 * state machine's job (machine.c), so this file never calls up.
 */
#ifndef HANDOFF_SIGNALS_H
#define HANDOFF_SIGNALS_H

#include "handoff.h"

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#define HF_NSIG 65 /* signals 1..64 on Linux */
#define HF_SIGBATCH 64

struct hf_hook {
    handoff_signal_hook fn;
    void *userdata;
};

struct hf_signals {
    int fd;                      /* signalfd, -1 with HANDOFF_NO_SIGNALS */
    int upgrade_signal;          /* 0: none */
    bool enabled;                /* not HANDOFF_NO_SIGNALS */
    sigset_t handled;            /* signals read through fd */
    sigset_t orig_mask;          /* mask before handoff_new() */
    sigset_t orig_ignored;       /* SIG_IGN before handoff_new() */
    uint64_t watched;            /* bit n: signal n reported as an event */
    struct hf_hook hooks[HF_NSIG][2];
};

/* What one read of the signalfd found, in arrival order for the signals
 * the library acts on (the upgrade signal, SIGTERM, SIGINT), and counted
 * per signal for the watched ones. */
struct hf_sigbatch {
    size_t n;
    struct {
        int signo;
        pid_t pid;               /* sender */
    } lib[HF_SIGBATCH];
    unsigned count[HF_NSIG];     /* watched signals */
    pid_t pid[HF_NSIG];          /* last sender of each */
};

struct hf_loop;

/* Saves the original mask and dispositions; unless disabled, blocks the
 * handled signals in the calling thread and registers a signalfd with the
 * loop. On failure call handoff__signals_done() anyway. 0 or -errno. */
int handoff__signals_init(struct hf_signals *s, struct hf_loop *l, int upgrade_signal,
                          bool enabled);
/* Consumes pending signals, closes the fd, restores the mask. */
void handoff__signals_done(struct hf_signals *s);
/* True for the signals the library acts on itself. */
bool handoff__signal_is_lib(const struct hf_signals *s, int signo);
/* Reads what is pending (at most HF_SIGBATCH library signals; the rest
 * stays pending and keeps the fd readable). 0 or -errno. */
int handoff__signals_read(struct hf_signals *s, struct hf_sigbatch *b);
/* Runs the pre or post hook of signo, if any. */
void handoff__signal_hook(handoff_t *h, const struct hf_signals *s, int signo, int when);

#endif

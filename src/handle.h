/*
 * handle.h - struct handoff, the per-process handle, shared by the core's
 * files. Data only: the functions are declared in each file's own header
 * (loop.h, signals.h, log.h, listeners.h, inherit.h, successor.h,
 * manager.h), so that a file's includes show what it may call.
 *
 * Layers, each calling only those below it (scripts/check-structure.py prints
 * them from the object files and fails on a cycle):
 *   core.c, machine.c         the handle; its state machine and events
 *   migrate*.c                connection migration (migrate_impl.h: the
 *                             hooks, each end of the channel, shared parts;
 *                             migrate_wire.c, pure, is at the bottom)
 *   spawn.c, inherit.c        the successor process; the protocol read
 *   listen.c, signal.c        listeners and named fds; signals as data
 *   notify.c, pidfile.c       telling the process manager
 *   addr.c, log.c, loop.c     addresses; diagnostics; epoll/timers/events
 *   shared/                   also linked into the handoff command
 */
#ifndef HANDOFF_HANDLE_H
#define HANDOFF_HANDLE_H

#include "handoff.h"
#include "handshake.h"
#include "loop.h"
#include "signals.h"
#include "shared/notify.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define HF_MAX_INHERIT 4096 /* refuse LISTEN_FDS beyond this */
#define HF_NAME_MAX 255     /* systemd's FDNAME limit */
#define HANDOFF_MAX_DRAINING_DEFAULT 3

/* One fd registered for hand-over (a listener or handoff_add_fd()). */
struct hf_reg {
    char *name;
    int fd;
    bool listener;
    bool inherited;     /* adopted from the previous generation */
    char *unix_path;    /* filesystem unix socket path, or NULL */
};

/* One fd found in LISTEN_FDS. */
struct hf_inh {
    int fd;
    char *name;         /* "unknown" when LISTEN_FDNAMES was absent */
    bool claimed;
};

enum hf_state {
    HF_SERVING = 0,
    HF_DRAINING = 1,  /* DRAIN decided (maybe not delivered yet) */
    HF_STOPPED = 2    /* STOP decided */
};

/* A process we started: the successor being started, or the one we
 * handed over to (reaped if it dies while we drain). */
struct hf_proc {
    pid_t pid;          /* 0: none */
    int pidfd;          /* -1: none */
    int sock;           /* our end of the handshake socket, -1: none */
    uint64_t start;     /* handoff_now_usec() at fork */
};

struct handoff {
    /* options */
    char **argv;
    char *cwd;
    char *pid_file;
    uint64_t upgrade_timeout;
    uint64_t drain_timeout;
    uint64_t resume_window;
    unsigned flags;
    handoff_log_fn log;
    void *log_userdata;
    int log_level;

    /* from the environment */
    char *notify_socket;
    struct handoff__notifier notifier;
    unsigned generation;
    bool has_parent;
    bool chain;              /* started by a handoff generation (handshake):
                              * owns the unix socket paths it inherits */
    int ready_fd;            /* child side of the handshake, -1 if none */
    pid_t parent_pid;
    unsigned parent_caps;    /* HF_CAP_* from HANDOFF_CAPS (migrate.h) */

    struct hf_inh *inh;
    size_t ninh;
    struct hf_reg *regs;
    size_t nregs;

    struct hf_loop loop;
    struct hf_signals sig;

    /* state */
    enum hf_state state;
    bool ready;
    bool handed_over;        /* a successor took over our sockets */
    bool drain_delivered;
    bool stop_pending;
    unsigned term_count;

    struct hf_proc child;    /* upgrade in progress */
    struct hf_proc succ;     /* after the hand-over */
    struct hf_pred *preds;   /* generations draining before us (HELLO) */
    size_t npreds;
    int max_draining;        /* 0: no limit */
    bool upgrade_deferred;   /* held back by max_draining */
    uint64_t deferred_at;
    uint64_t handover_at;    /* when the successor became ready */
    bool window_over;        /* the resume window has passed */

    atomic_ulong conns;
    atomic_bool draining;    /* DRAIN delivered: conn_end wakes the loop */

    struct hf_mig *mig;      /* HANDOFF_MIGRATE: connection migration (migrate.c) */

    char errmsg[512];
};

#endif

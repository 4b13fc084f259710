/*
 * supervisor.h - the state of `handoff run` and the modules that work on
 * it: state.c (the process table, starting and stopping processes,
 * systemd notifications), reload.c (reloads and readiness), status.c
 * (`handoff status`), exits.c (reaping) and supervisor.c (the loop).
 * There is no global: each function gets the struct supervisor it works
 * on. Never installed.
 *
 * Model. There are --workers slots. Each slot has a current process
 * (`cur`, serving or starting after a crash) and, during a reload, a next
 * one (`next`). A reload starts generation N+1 in every slot (or, with
 * --rolling, in one slot at a time); a slot commits when its next process
 * is ready: next becomes cur and the old cur gets the stop signal and
 * drains until --drain-timeout, then SIGKILL to its process group. A next
 * process that exits or times out before it is ready fails the reload: the
 * new generation is killed and reaped, the current one never stopped
 * serving, and `handoff reload` reports why.
 *
 * Every process the supervisor starts leads its own process group (pgid =
 * pid). Once a leader has exited, what is left of its group (a server's
 * own workers, orphaned) is tracked until it is gone, stopped within the
 * drain timeout like any draining process.
 */
#ifndef HANDOFF_SUPERVISOR_H
#define HANDOFF_SUPERVISOR_H

#include "shared/notify.h"
#include "tool.h"

enum pstate {
    PS_STARTING, /* spawned, not ready yet */
    PS_READY,    /* serving */
    PS_STOPPING, /* stop signal sent; SIGKILL at deadline */
    PS_KILLED,   /* SIGKILL sent to its process group */
    PS_GONE      /* leader reaped; the rest of its group is still running */
};

enum pkind { PK_WORKER, PK_CHECK };

struct proc {
    int kind;
    pid_t pid;           /* leader pid, also the process group id */
    unsigned gen;
    int slot;
    int state;
    bool alive;          /* leader not reaped yet */
    bool counts;         /* its exit status becomes the supervisor's */
    bool failing;        /* killed because its reload failed */
    bool killed;         /* SIGKILL sent to its group */
    uint64_t started, ready_at, stop_at;
    uint64_t deadline;   /* STARTING: ready timeout; later: SIGKILL time */
    uint64_t next_check; /* delay mode: ready time; command mode: next try */
    struct proc *check;  /* running --ready-command */
    struct proc *owner;  /* PK_CHECK: the worker it checks */
    unsigned checks;
    unsigned sockets_taken; /* --preload: sockets its tree took (preload.c) */
    char status[160];    /* last STATUS= it sent */
};

struct slot {
    struct proc *cur, *next;
    unsigned restarts;   /* crash restarts since the slot's last reload */
    unsigned streak;     /* crashes in a row without a long enough run */
    uint64_t backoff;
    uint64_t respawn_at; /* 0: no restart pending */
    unsigned respawn_gen;
    char last_failure[256];
};

struct gen_info {
    unsigned id;
    uint64_t started, ready_at, drain_at;
};

#define NGEN 64

struct supervisor {
    const struct config *cfg;
    handoff_t *h;
    sigset_t orig_mask;   /* at start-up: what every child starts with */
    int epfd, sigfd;
    struct notify_sock notify;
    unsigned long notify_ignored; /* notifications from non-workers */
    struct control *ctl;
    char control_path[108];
    struct listener ls[TOOL_MAX_LISTEN];
    int nls;
    struct proc **procs;
    size_t nprocs, cap;
    struct slot *slots;
    struct gen_info gens[NGEN];
    unsigned gen_last;
    uint64_t start_time;
    bool ready_sent;
    bool pidfile_written;  /* --pid-file written: remove it at exit */
    /* reloads: requests coalesce into the next one to start */
    bool reloading, reload_pending;
    uint64_t reload_wait_since; /* pending reload held back by --max-draining */
    uint64_t reload_seq, next_seq;
    unsigned reload_gen;
    uint64_t reload_started;
    int roll_slot;
    int failing;          /* processes of a failed reload not reaped yet */
    char fail_msg[512];
    unsigned reloads_ok, reloads_failed;
    char last_failure[512];
    /* stop */
    bool stopping;
    unsigned term_count;
    int exit_code;
    /* systemd's NOTIFY_SOCKET: the last failure (-errno) and lost messages */
    struct handoff__notifier sd;
    char sd_path[128];
    int sd_err;
    unsigned sd_lost;
    /* systemd's watchdog (WATCHDOG_USEC for our pid): WATCHDOG=1 at half */
    uint64_t watchdog_usec, watchdog_next;
    /* --preload (preload.c): its state, and what workers get (NULL: off) */
    struct preload *preload;
    const struct spawn_preload *spawn_preload;
};

/* ---- state.c ---- */
struct gen_info *gen_info(struct supervisor *sv, unsigned id);
/* To systemd's NOTIFY_SOCKET (if any), never blocking. */
void notify_systemd(struct supervisor *sv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
struct proc *proc_add(struct supervisor *sv, int kind, pid_t pid, unsigned gen, int slot);
void proc_remove(struct supervisor *sv, struct proc *p);
/* The live (not reaped) process with that pid, or NULL. */
struct proc *proc_by_pid(struct supervisor *sv, pid_t pid);
/* The stop signal, and SIGKILL after --drain-timeout (on_timers). */
void proc_stop(struct supervisor *sv, struct proc *p, uint64_t now);
/* SIGKILL to its process group, now. */
void proc_kill(struct proc *p);
void kill_check(struct proc *p);
/* "generation 3 worker 1 (pid 42)"; wshort(): "worker 1 (pid 42)". */
const char *wname(const struct supervisor *sv, const struct proc *p, char *buf, size_t len);
const char *wshort(const struct supervisor *sv, const struct proc *p, char *buf, size_t len);
/* Spawns generation gen's worker for slot, in state STARTING. NULL with
 * the reason in err. */
struct proc *start_worker(struct supervisor *sv, int slot, unsigned gen, char *err, size_t errlen);
/* Spawns a --ready-command run for worker p (tried again later on failure). */
void start_check(struct supervisor *sv, struct proc *p, uint64_t now);
bool all_cur_ready(const struct supervisor *sv);

/* ---- reload.c ---- */
/* Asks for a reload; returns the sequence number its answer will carry,
 * or 0 with *why set when no reload can run (stopping). */
uint64_t request_reload(struct supervisor *sv, const char **why);
/* False while a pending reload must wait for a draining generation to
 * finish (--max-draining); kills the oldest once it waited too long. */
bool reload_may_start(struct supervisor *sv, uint64_t now);
/* When reload_may_start() gives up waiting, or UINT64_MAX. */
uint64_t reload_wait_deadline(const struct supervisor *sv);
void reload_start(struct supervisor *sv, uint64_t now);
/* Kills the new generation; the answer goes out once it is reaped. */
void reload_fail(struct supervisor *sv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void reload_finish(struct supervisor *sv, bool ok, const char *msg);
/* p is ready (how: for the log): commits its slot, ends a reload, or
 * completes the start-up. */
void proc_ready(struct supervisor *sv, struct proc *p, uint64_t now, const char *how);
/* Reads what the workers sent to the notify socket. */
void on_notify(struct supervisor *sv, uint64_t now);

/* ---- status.c ---- */
/* Appends the status text (several lines, each ending in '\n'). */
void sup_status(const struct supervisor *sv, struct sbuf *b);

/* ---- preload.c (--preload; no-ops without it) ---- */
/* Finds and checks libhandoff-preload.so, opens the broker over the
 * sockets and sets sv->spawn_preload. 0, or -1 after logging why. */
int preload_open(struct supervisor *sv);
void preload_close(struct supervisor *sv);
/* The broker's socket, for epoll, or -1. */
int preload_fd(const struct supervisor *sv);
/* Answers the shims: sockets, refusals, readiness. */
void preload_on_event(struct supervisor *sv, uint64_t now);
/* For the message of a worker that ended before it was ready (exits.c):
 * "" or why its server may not have reached the library. */
#define PRELOAD_HINT(sv, p)                                                                          \
    ((sv)->spawn_preload && !(p)->sockets_taken                                                    \
         ? " (it took no socket from the supervisor: see the handoff-preload messages above; "     \
           "without any, the library did not reach the server: a static or Go program started "    \
           "by a wrapper, a cleared environment; see handoff(1))"                                  \
         : "")

/* ---- exits.c ---- */
/* Reaps every exited child (waitpid loop) and acts on each exit. */
void reap_all(struct supervisor *sv, uint64_t now);
/* Blocks until every process in the table is reaped (they were sent
 * SIGKILL), without losing an exit status to a bare waitpid(). */
void reap_until_empty(struct supervisor *sv);
/* Restarts the slots whose crash-restart delay has passed. */
void respawn_due(struct supervisor *sv, uint64_t now);

#endif

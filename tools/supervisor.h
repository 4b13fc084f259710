/*
 * supervisor.h - the state of `handoff run`, shared by supervisor.c (the
 * process table, exits, signals, timers, the loop), reload.c (reloads and
 * readiness), status.c (`handoff status`) and sockets.c (--listen).
 * Never installed.
 */
#ifndef HANDOFF_SUPERVISOR_H
#define HANDOFF_SUPERVISOR_H

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
    struct config *cfg;
    handoff_t *h;
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
    char sd_path[128];
    int sd_err;
    unsigned sd_lost;
    /* systemd's watchdog (WATCHDOG_USEC for our pid): WATCHDOG=1 at half */
    uint64_t watchdog_usec, watchdog_next;
};

extern struct supervisor S;

/* supervisor.c */
struct gen_info *gen_info(unsigned id);
const char *dur(uint64_t usec, char *buf, size_t len);
void notify_systemd(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
struct proc *proc_add(int kind, pid_t pid, unsigned gen, int slot);
void proc_stop(struct proc *p, uint64_t now);
void proc_kill(struct proc *p);
void kill_check(struct proc *p);
const char *wname(const struct proc *p, char *buf, size_t len);
const char *wshort(const struct proc *p, char *buf, size_t len);
struct proc *start_worker(int slot, unsigned gen, char *err, size_t errlen);
bool all_cur_ready(void);
uint64_t deadline_after(uint64_t now, uint64_t timeout);

/* reload.c */
/* False while a pending reload must wait for a draining generation to
 * finish (--max-draining); kills the oldest once it waited too long. */
bool reload_may_start(uint64_t now);
/* When reload_may_start() gives up waiting, or UINT64_MAX. */
uint64_t reload_wait_deadline(void);
void reload_start(uint64_t now);
void reload_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void reload_finish(bool ok, const char *msg);
void proc_ready(struct proc *p, uint64_t now, const char *how);
void on_notify(uint64_t now);

/* sockets.c */
int open_listeners(bool nonblock);

#endif

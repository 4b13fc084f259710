/*
 * internal.h - shared between the core's modules; never installed.
 * Internal non-static functions are prefixed handoff__.
 */
#ifndef HANDOFF_INTERNAL_H
#define HANDOFF_INTERNAL_H

#include "handoff.h"

#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>

#define HF_NSIG 65          /* signals 1..64 on Linux */
#define HF_MAX_INHERIT 4096 /* refuse LISTEN_FDS beyond this */
#define HF_NAME_MAX 255     /* systemd's FDNAME limit */
#define HF_EVQ 32           /* queued events */
#define HF_MSG 256

/* Environment variables of the protocol (docs/protocol.md). */
#define HF_ENV_LISTEN_FDS "LISTEN_FDS"
#define HF_ENV_LISTEN_PID "LISTEN_PID"
#define HF_ENV_LISTEN_FDNAMES "LISTEN_FDNAMES"
#define HF_ENV_LISTEN_PIDFDID "LISTEN_PIDFDID"
#define HF_ENV_READY_FD "HANDOFF_READY_FD"
#define HF_ENV_GENERATION "HANDOFF_GENERATION"
#define HF_ENV_PARENT_PID "HANDOFF_PARENT_PID"
#define HF_ENV_NOTIFY_SOCKET "NOTIFY_SOCKET"
#define HF_ENV_STARTER_PORT "SERVER_STARTER_PORT"

/* The readiness message a child sends over the handshake socket. */
#define HF_READY_MSG "READY=1"

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

enum hf_timer { HF_TIMER_NONE = 0, HF_TIMER_UPGRADE, HF_TIMER_HAMMER, HF_TIMER_WINDOW };

struct hf_hook {
    handoff_signal_hook fn;
    void *userdata;
};

struct handoff {
    /* options */
    char **argv;
    char *cwd;
    char *pid_file;
    uint64_t upgrade_timeout;
    uint64_t drain_timeout;
    uint64_t resume_window;
    int upgrade_signal;
    unsigned flags;
    handoff_log_fn log;
    void *log_userdata;
    int log_level;

    /* from the environment */
    char *notify_socket;
    unsigned generation;
    bool has_parent;
    int ready_fd;            /* child side of the handshake, -1 if none */
    pid_t parent_pid;

    struct hf_inh *inh;
    size_t ninh;
    struct hf_reg *regs;
    size_t nregs;

    /* event machinery */
    int epfd;
    int sigfd;
    int timerfd;
    int wakefd;              /* eventfd: conn count reached zero */
    enum hf_timer timer;
    sigset_t handled;        /* signals read through sigfd */
    sigset_t orig_mask;      /* mask before handoff_new() */
    bool orig_ignored[HF_NSIG]; /* SIG_IGN before handoff_new() */
    uint64_t watched;        /* bit n: signal n reported as an event */
    struct hf_hook hooks[HF_NSIG][2];
    unsigned sigcount[HF_NSIG];
    pid_t sigpid[HF_NSIG];

    /* state */
    enum hf_state state;
    bool ready;
    bool handed_over;        /* a successor took over our sockets */
    bool drain_delivered;
    bool stop_pending;
    int stop_reason;
    unsigned term_count;

    /* pending successor (upgrade in progress) */
    pid_t child_pid;
    int child_pidfd;
    int child_sock;
    uint64_t child_start;

    /* successor after hand-over, reaped if it dies while we drain */
    pid_t succ_pid;
    int succ_pidfd;
    uint64_t handover_at;    /* when the successor became ready */
    uint64_t hammer_at;      /* drain deadline (HANDOFF_NO_TIMEOUT: none) */
    bool window_over;        /* the resume window has passed */

    atomic_ulong conns;
    atomic_bool draining;    /* DRAIN delivered: conn_end wakes the loop */

    /* event queue */
    handoff_event evq[HF_EVQ];
    char evmsg[HF_EVQ][HF_MSG];
    size_t evhead, evlen;
    char curmsg[HF_MSG];

    char errmsg[512];
};

/* epoll tags */
enum { HF_TAG_SIGNAL = 1, HF_TAG_TIMER, HF_TAG_WAKE, HF_TAG_CHILD_SOCK,
       HF_TAG_CHILD_PIDFD, HF_TAG_SUCC_PIDFD };

/* log.c */
void handoff__log(handoff_t *h, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sets h->errmsg and returns err (a negative errno) for `return` chaining. */
int handoff__fail(handoff_t *h, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void handoff__vformat(char *buf, size_t len, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* core.c */
void handoff__push_event(handoff_t *h, const handoff_event *ev,
                         const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int handoff__epoll_add(handoff_t *h, int fd, uint32_t tag);
void handoff__epoll_del(handoff_t *h, int fd);
int handoff__timer_arm(handoff_t *h, enum hf_timer which, uint64_t usec);
void handoff__begin_drain(handoff_t *h, int reason, pid_t pid);
void handoff__set_stop(handoff_t *h, int reason);
bool handoff__valid_name(const char *name);

/* inherit.c */
struct hf_listen_env {
    int nfds;          /* fds 3..3+nfds-1 */
    char **names;      /* nfds entries or NULL */
};
int handoff__parse_listen_env(const char *pid, const char *fds,
                              const char *names, pid_t self,
                              struct hf_listen_env *out, char *err,
                              size_t errlen);
void handoff__listen_env_done(struct hf_listen_env *e);
/* SERVER_STARTER_PORT ("127.0.0.1:80=3;/tmp/sock=4"): up to max entries. */
struct hf_starter_entry {
    char key[128];
    int fd;
};
int handoff__parse_starter_port(const char *v, struct hf_starter_entry *out, size_t max,
                                char *err, size_t errlen);
extern const char *const handoff__protocol_vars[]; /* NULL-terminated */
int handoff__inherit(handoff_t *h);
void handoff__close_unclaimed(handoff_t *h);

/* listen.c */
int handoff__sockaddr_to_addr(const void *sa, uint32_t salen, int socktype,
                              handoff_addr *out);
bool handoff__addr_equal(const handoff_addr *a, const handoff_addr *b,
                         bool any_port);
struct hf_reg *handoff__reg_find(handoff_t *h, const char *name);
void handoff__regs_free(handoff_t *h, bool unlink_paths);

/* signal.c */
int handoff__signals_init(handoff_t *h);
void handoff__signals_done(handoff_t *h);
int handoff__signals_read(handoff_t *h);

/* spawn.c */
int handoff__spawn(handoff_t *h);
int handoff__child_sock_read(handoff_t *h);
int handoff__child_reap(handoff_t *h, bool kill_first, int err,
                        const char *why);
void handoff__succ_reap(handoff_t *h);
int handoff__send_ready_to_parent(handoff_t *h);
char *handoff__resolve_exe(handoff_t *h, int *err);

/* notify.c */
int handoff__notify(handoff_t *h, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* pidfile.c */
void handoff__pidfile_update(handoff_t *h, pid_t pid);
void handoff__pidfile_remove(handoff_t *h);

#endif

/*
 * tool.h - the lower modules of the handoff command (tools/); never
 * installed. The command uses libhandoff's public API and the internal
 * layer src/shared/ (the exec plan, sd_notify sending, the protocol
 * variables, wait-status wording), which the library links too.
 *
 * Files, lowest layer first; a file calls only files of lower layers
 * (`ctest -R deps-tools` checks it from the object files, and
 * `scripts/check-structure.py --build BUILD-DIR` prints the layers):
 *
 *   0  util.c        logging, durations, growable strings, runtime dirs
 *      procfs.c      what /proc says about other processes
 *   1  cli.c         the command line, parsed without side effects
 *      spawn.c       starting workers and readiness checks
 *      notify.c      the NOTIFY_SOCKET the supervisor gives its workers
 *      control.c     the control socket, server side
 *      client.c      reload/status/stop: the control socket's client
 *      status.c      the text of `handoff status` (reads supervisor.h)
 *   2  sockets.c     --listen and the sockets systemd passed
 *      state.c       the supervisor's state (supervisor.h): processes,
 *                    slots, generations, systemd notifications
 *   3  reload.c      reloads and readiness
 *   4  exits.c       reaping: crashes, restarts, failed reloads
 *      preload.c     --preload: libhandoff-preload.so's socket broker,
 *                    and the readiness the shim reports (src/preload/)
 *   5  supervisor.c  `handoff run`: set-up, signals, control commands,
 *                    stop, timers, the loop
 *      handoff.c     main() (not in the objects the tests link)
 *
 * Where a new feature goes: an option in cli.c (struct config) and
 * handoff.c's usage text and docs/handoff.1 (test help-man compares
 * them); what a worker gets at start in spawn.c; a new socket or fd the
 * loop waits on in supervisor.c (setup_epoll() and the TAG_ list), with
 * its protocol in a module of its own at layer 1.
 */
#ifndef HANDOFF_TOOL_H
#define HANDOFF_TOOL_H

#include <handoff.h>

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#define TOOL_MAX_LISTEN 64
#define TOOL_MAX_WORKERS 256

/* Exit codes (documented in handoff(1)). */
enum {
    EXIT_OK = 0,
    EXIT_FAILED = 1,    /* reload failed, command could not start, ... */
    EXIT_USAGE = 2,
    EXIT_NOCONNECT = 3, /* cannot connect to the control socket */
    EXIT_REFUSED = 4,   /* the supervisor refused this user */
    EXIT_TIMEOUT = 5    /* no answer within --timeout */
};

/* ---- util.c ---- */
enum { LOG_ERR_ = 0, LOG_WARN_ = 1, LOG_INFO_ = 2, LOG_DEBUG_ = 3 };
/* 0 quiet (warnings and errors), 1 normal, 2 verbose: set once by main()
 * from -q/-v, read by tool_log(). */
extern int tool_verbosity;
void tool_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_err(...) tool_log(LOG_ERR_, __VA_ARGS__)
#define log_warn(...) tool_log(LOG_WARN_, __VA_ARGS__)
#define log_info(...) tool_log(LOG_INFO_, __VA_ARGS__)
#define log_debug(...) tool_log(LOG_DEBUG_, __VA_ARGS__)
/* The library's log function (handoff_options.log): its messages go
 * through tool_log(), its info lines only with -v. */
void tool_lib_log(void *userdata, int level, const char *msg);

/* A growable string. A failed allocation sets oom and drops what follows;
 * p is NUL-terminated whenever it is not NULL. */
struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};
void sbuf_append(struct sbuf *b, const char *p, size_t n);
void sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s with every byte that could act on a terminal escaped: C0 and
 * C1 controls, DEL, invalid UTF-8, bidirectional and line-separator code
 * points (as \xNN, \t, \r, \n), and '\\' and '"'. Valid printable
 * UTF-8 is kept. */
void sbuf_escaped(struct sbuf *b, const char *s);
/* The same for a message that is not between quotes: '\\' and '"' kept. */
void sbuf_text(struct sbuf *b, const char *s);
void sbuf_free(struct sbuf *b);

/* Parses "1.5", "250ms", "2s", "1m" into microseconds. 0 or -EINVAL. */
int parse_duration(const char *s, uint64_t *out);
/* "38 ms", "2.5 s", "3m12s" */
const char *dur(uint64_t usec, char *buf, size_t len);
/* now + timeout, UINT64_MAX for HANDOFF_NO_TIMEOUT or on overflow. */
uint64_t deadline_after(uint64_t now, uint64_t timeout);
/* "TERM" for 15, "RTMIN+2" (shared/status.h), "?" for a number without
 * a name. */
const char *sig_abbrev(int signo);
/* The shell-style exit code a waitpid status maps to (128+N if killed). */
int status_exit_code(int status);
/* A filesystem unix socket address for path. 0 or -ENAMETOOLONG. */
int unix_sockaddr(const char *path, struct sockaddr_un *sun, socklen_t *len);
/* The directory for the command's sockets. which 0: $XDG_RUNTIME_DIR
 * (-ENOENT if unset or not absolute); which 1: /run/handoff as root, else
 * /tmp/handoff-UID (mode 0700, refused with -EPERM unless it is ours).
 * create_dir: make the fallback directory if it is missing. 0 or -errno. */
int runtime_dir(int which, char *buf, size_t len, bool create_dir);
/* Default control socket path for an instance name: handoff.NAME.sock in
 * $XDG_RUNTIME_DIR, else NAME.sock in the fallback directory. */
int default_control_path(const char *name, char *buf, size_t len, bool create_dir);

/* ---- procfs.c ---- */
/* True if pid is ancestor or one of its descendants (through /proc). */
bool pid_descends_from(pid_t pid, pid_t ancestor);
/* True if signo would not take its default action in pid: it is caught or
 * ignored, or every thread blocks it (read through a signalfd). */
bool proc_handles_signal(pid_t pid, int signo);

/* ---- cli.c ---- */
enum ready_mode { READY_NOTIFY = 0, READY_COMMAND, READY_DELAY };
/* Whose notifications count (systemd's NotifyAccess=): the worker's own
 * pid, or also its descendants. */
enum notify_access { NOTIFY_MAIN = 0, NOTIFY_ALL };

/* Everything `handoff run` was told on its command line. */
struct config {
    const char *name;            /* instance name (default control path) */
    const char *control;         /* control socket path */
    const char *pid_file;        /* the supervisor's own pid */
    const char *listen[TOOL_MAX_LISTEN];
    int nlisten;
    char **argv;                 /* COMMAND ARGS..., NULL-terminated */
    int workers;
    bool rolling;
    int ready_mode;              /* enum ready_mode */
    const char *ready_command;
    uint64_t ready_delay;
    uint64_t ready_timeout;
    uint64_t ready_interval;
    int notify_access;           /* enum notify_access */
    int stop_signal;
    uint64_t drain_timeout;
    int max_draining;
    uint64_t backoff_min;
    uint64_t backoff_max;
    uint64_t backoff_reset;
    uint64_t forward;            /* bit n: forward signal n */
    bool nonblock;               /* create sockets with O_NONBLOCK */
    bool preload;                /* --preload: libhandoff-preload.so */
    int preload_depth;           /* --preload-depth */
    int verbosity;               /* 0 quiet, 1 normal, 2 verbose */
};

enum cli_command { CLI_RUN, CLI_RELOAD, CLI_STATUS, CLI_STOP, CLI_HELP, CLI_VERSION };

/* A parsed command line. Strings point into the argv given. */
struct cli {
    int command;                 /* enum cli_command */
    struct config cfg;           /* run; name and control for every command */
    uint64_t timeout;            /* reload/status/stop --timeout; 0 = none */
    char err[256];               /* the usage error, without "handoff: " */
};

/* The defaults of every option (no environment variable is read). */
void cli_defaults(struct cli *c);
/* Parses argv[1...] (argv[1] is the command) over the defaults already in
 * *c. Returns 0, or EXIT_USAGE with the reason in c->err. Never prints,
 * exits or allocates; resets getopt's global state. */
int cli_parse(int argc, char **argv, struct cli *c);
/* --listen [NAME=]SPEC: the socket's name (NAME, or the spec with ':' and
 * blanks as '_', truncated to nlen-1) and the spec. */
void listen_split(const char *arg, char *name, size_t nlen, const char **spec);

/* ---- sockets.c ---- */
struct listener {
    int fd;
    bool owned;          /* taken from the inherited pool: we close it */
    char name[256];
    char spec[256];      /* as formatted from getsockname() */
    char starter[300];   /* SERVER_STARTER_PORT key */
};

/* Opens cfg's --listen sockets through h (handoff_listen adopts what
 * systemd passed, or binds), then takes what systemd passed that no
 * --listen claimed. Fills ls[0..*n-1]. 0, or -1 after logging why. */
int open_listeners(handoff_t *h, const struct config *cfg, struct listener *ls, int *n);

/* ---- spawn.c ---- */
/* --preload: what a worker gets instead of the fds (preload.c makes it). */
struct spawn_preload {
    const char *lib;             /* checked before every start */
    const char *ld_preload;      /* "LD_PRELOAD=...": replaces the inherited one */
    const char *handoff_preload; /* "HANDOFF_PRELOAD=...", its pid slot last */
};
/* Starts argv[0] (resolved through PATH now) in its own process group
 * with the listeners at fds 3.., the protocol variables and NOTIFY_SOCKET
 * (if notify_path), and the signal mask *mask. gen feeds
 * SERVER_STARTER_GENERATION and HANDOFF_GENERATION. With pre (--preload):
 * no fds and no LISTEN_ and SERVER_STARTER_ variables, but pre's, once
 * the library is known to work in argv[0]. Returns the pid, or -errno
 * with a sentence in err. */
pid_t spawn_worker(char *const *argv, const struct listener *ls, int n, const char *notify_path,
                   const struct spawn_preload *pre, unsigned gen, const sigset_t *mask, char *err,
                   size_t errlen);
/* Runs `/bin/sh -c cmd` in its own process group with HANDOFF_PID,
 * HANDOFF_GENERATION and HANDOFF_WORKER set. Returns the pid, or -errno
 * after logging why. */
pid_t spawn_check(const char *cmd, pid_t worker, unsigned gen, int slot, const sigset_t *mask);

/* ---- notify.c ---- */
/* The workers' NOTIFY_SOCKET: a datagram socket with SO_PASSCRED, bound
 * at path inside dir, a private (0700) directory of its own. */
struct notify_sock {
    int fd;
    char dir[108];
    char path[108];
};
/* Creates the directory and the socket (close-on-exec, non-blocking) in
 * the first usable runtime directory. 0 or -errno. */
int notify_open(struct notify_sock *ns);
/* Closes the socket and removes its file and directory. */
void notify_close(struct notify_sock *ns);
/* One message received on the notify socket. */
struct notify_msg {
    pid_t pid;           /* kernel-verified sender */
    uid_t uid;
    bool ready, stopping, reloading;
    bool has_status;
    char status[160];
    uint64_t extend_usec;
};
/* Reads one datagram. Returns 1 with *m filled, 0 if nothing pending or
 * the message carried no credentials, -errno on error. */
int notify_read(int fd, struct notify_msg *m);

/* ---- control.c ---- */
struct control;
/* A command a client sent, for the caller to carry out. */
struct control_req {
    int conn;            /* the connection, for control_answer()/control_wait() */
    char cmd[16];        /* "reload", "status" or "stop" */
    pid_t pid;           /* the client (SO_PEERCRED) */
    uid_t uid;
};
/* Binds path (mode 0600, a stale socket replaced, a live one refused). */
int control_open(const char *path, struct control **out, char *err, size_t errlen);
void control_close(struct control *c);
/* Registers the listening socket with epoll: it and each connection carry
 * tag | fd in their epoll data; hand those fds to control_on_event(). */
void control_set_epoll(struct control *c, int epfd, uint64_t tag);
/* Accepts and reads; fd is one epoll reported with the tag. Returns 1 with
 * *req filled when a client sent a command the caller must answer, with
 * control_answer() or (later) control_wait() + control_reload_done(); 0
 * otherwise (unknown commands, refused users, ... are answered here). */
int control_on_event(struct control *c, int fd, struct control_req *req);
/* The whole answer, whose last line is "OK [message]" or "ERR message". */
void control_answer(struct control *c, int conn, const char *text, size_t len);
/* The answer comes with control_reload_done(seq). */
void control_wait(struct control *c, int conn, uint64_t seq);
/* Sends "OK msg" or "ERR msg" to every client waiting for reload seq. */
void control_reload_done(struct control *c, uint64_t seq, bool ok, const char *msg);
/* Earliest deadline of the module (idle clients, paused accept), or
 * UINT64_MAX. */
uint64_t control_deadline(const struct control *c);
void control_on_timer(struct control *c, uint64_t now);

/* ---- client.c ---- */
/* Runs one command ("reload", "status", "stop") against the control
 * socket at path; returns the process exit code. timeout 0 = no limit. */
int control_client(const char *path, const char *cmd, uint64_t timeout);

/* ---- supervisor.c ---- */
/* `handoff run`. Returns the exit code. */
int sup_run(struct config *cfg);

#endif

/*
 * handoff.h - zero-downtime restarts and graceful shutdown for Linux servers.
 *
 * libhandoff keeps listening sockets (and any other fd) alive across a
 * re-exec of the server binary, turns signals into events on one file
 * descriptor that any event loop can watch, runs a verified upgrade
 * handshake with the new generation, and tracks connections while the old
 * generation drains. It speaks systemd's socket-activation protocol
 * (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES) and sd_notify without libsystemd.
 *
 * Errors: one rule for every call.
 *  - Code branches on the return value: 0 (or a meaningful non-negative
 *    value) on success, a negative errno value on failure. errno itself is
 *    not promised.
 *  - A person reads handoff_errmsg(): after a failed call on a handle,
 *    handoff_errmsg(h) is a sentence naming what failed (the step, the
 *    path); after a failed call that takes no handle (handoff_addr_parse(),
 *    handoff_addr_format(), handoff_addr_from_fd(), handoff_pidfile_write()),
 *    handoff_errmsg(NULL) is that sentence, kept per thread. Either stays
 *    until the next failure (on h, or on the thread).
 *  - What fails later, inside the event loop (a new generation that dies,
 *    or is not ready in time), arrives as an event: ev.error is the
 *    negative errno where there is one, ev.message the sentence.
 *  - The log is for operators and never needed by code: the library is
 *    silent unless handoff_options.log is set (handoff_log_stderr() is a
 *    ready-made stderr logger). No failure of a call is reported only
 *    there; the log adds what the library worked around (a malformed
 *    inherited variable, an fd nobody claimed) and, at INFO, the steps of
 *    upgrades and drains.
 *  - handoff_addr_parse()'s errbuf parameter predates handoff_errmsg(NULL)
 *    and still works; new code passes NULL.
 *
 * Other conventions:
 *  - A function never closes an fd it was given unless it says so; on
 *    failure the caller still owns everything it passed.
 *  - Handles are not thread-safe unless a function says "thread-safe: yes".
 *    No function here is async-signal-safe unless it says so.
 *  - Times are microseconds (uint64_t). 0 for a timeout means "use the
 *    default" unless stated otherwise; HANDOFF_NO_TIMEOUT means "never".
 *
 * The whole protocol is described in docs/protocol.md.
 *
 * This file is over 600 lines: it is the whole public API of the core, each
 * call documented where it is declared (one umbrella header, as libuv's).
 */
#ifndef HANDOFF_H
#define HANDOFF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define HANDOFF_EXPORT __attribute__((visibility("default")))
#else
#define HANDOFF_EXPORT
#endif

#define HANDOFF_VERSION_MAJOR 0
#define HANDOFF_VERSION_MINOR 2
#define HANDOFF_VERSION_PATCH 0

#define HANDOFF_USEC_PER_SEC ((uint64_t)1000000)
#define HANDOFF_USEC_PER_MSEC ((uint64_t)1000)
/* A timeout value meaning "wait forever". */
#define HANDOFF_NO_TIMEOUT UINT64_MAX

/* The first inherited fd, as in systemd's SD_LISTEN_FDS_START. */
#define HANDOFF_LISTEN_FDS_START 3

/* The opaque per-process handle. */
typedef struct handoff handoff_t;

/* ------------------------------------------------------------------------ */
/* Creation                                                                 */

/* Log levels passed to a handoff_log_fn (same values as syslog's). */
enum handoff_log_level {
    HANDOFF_LOG_ERR = 3,
    HANDOFF_LOG_WARNING = 4,
    HANDOFF_LOG_NOTICE = 5,
    HANDOFF_LOG_INFO = 6,
    HANDOFF_LOG_DEBUG = 7
};

/* Receives one line of diagnostics (no trailing newline). Called from
 * handoff_* calls on the thread that made them, never from a signal
 * handler. Without one (handoff_options.log NULL) the library is silent,
 * as sd-daemon-style libraries are. */
typedef void (*handoff_log_fn)(void *userdata, int level, const char *msg);

/* A ready-made handoff_log_fn: writes "handoff[PID]: msg\n" to stderr in
 * one write() (lines longer than 1 KiB are cut). userdata and level are
 * ignored; handoff_options.log_level still filters.
 * `o.log = handoff_log_stderr;` gives what 0.1 printed by default.
 * Thread-safe: yes. */
HANDOFF_EXPORT void handoff_log_stderr(void *userdata, int level, const char *msg);

/* Flags for handoff_options.flags. */
enum handoff_flags {
    /* Do not touch signals at all: no signalfd, no mask changes. The
     * application drives upgrades and shutdowns with handoff_upgrade()
     * and handoff_shutdown(). */
    HANDOFF_NO_SIGNALS = 1u << 0,
    /* Do not speak sd_notify even if NOTIFY_SOCKET is set (the variable is
     * still removed from the environment and passed to successors). */
    HANDOFF_NO_NOTIFY = 1u << 1,
    /* Keep LISTEN_* and NOTIFY_SOCKET in the environment instead of
     * removing them at start-up (not recommended: grandchildren see them). */
    HANDOFF_KEEP_ENV = 1u << 2,
    /* A repeated SIGTERM/SIGINT does not force HANDOFF_EVENT_STOP: the
     * drain ends when it is done or at the hammer timeout. For process
     * managers that re-send SIGTERM to a draining process, as Server::
     * Starter does at each restart; set automatically when the sockets
     * came from SERVER_STARTER_PORT. */
    HANDOFF_TERM_GRACEFUL_ONLY = 1u << 3,
    /* Connection migration (see handoff_migrate()): this binary adopts
     * established connections from its predecessor and hands its own to a
     * successor that adopts too. Negotiated in the upgrade handshake, so a
     * binary without the flag (or an older libhandoff) on either side just
     * drains as before. A successor that opts in raises RLIMIT_NOFILE's
     * soft limit to the hard limit at handoff_ready(). */
    HANDOFF_MIGRATE = 1u << 4
};

/* Options for handoff_new(). Zero-initialise (or use HANDOFF_OPTIONS_INIT)
 * and set what you need; every zero field takes its default. */
typedef struct handoff_options {
    /* The argument vector to re-exec on upgrade, NULL-terminated. The
     * library copies it. Default (NULL): read from /proc/self/cmdline.
     * argv[0] is resolved at upgrade time (not now), relative to the
     * working directory at handoff_new() or through PATH when it has no
     * slash, so a symlink swapped by a deploy is honoured. */
    char *const *argv;
    /* Path of a pid file that always names the serving process; written
     * atomically (temp file + rename). NULL: no pid file. Copied. */
    const char *pid_file;
    /* How long a new generation may take to call handoff_ready() before it
     * is killed. Default 60 s. */
    uint64_t upgrade_timeout_usec;
    /* Hammer timeout: how long a draining process waits for its tracked
     * connections before HANDOFF_EVENT_STOP with HANDOFF_STOP_TIMEOUT.
     * Default 30 s. HANDOFF_NO_TIMEOUT waits forever. */
    uint64_t drain_timeout_usec;
    /* Signal that starts an upgrade. Default SIGHUP. -1 disables it. */
    int upgrade_signal;
    /* Bitwise OR of enum handoff_flags. */
    unsigned flags;
    /* Rollback window. 0 (the default) disables it. Otherwise, for this
     * long after a successor took over, this process keeps its listeners
     * and holds back HANDOFF_EVENT_STOP: if the successor exits in the
     * window (a new version that crashes just after becoming ready), this
     * process takes the service back (pid file, MAINPID=) and reports
     * HANDOFF_EVENT_RESUME; the application must then watch its
     * listeners again. Only set it if the application handles RESUME. */
    uint64_t resume_window_usec;
    /* Diagnostics sink. NULL (the default): silent. handoff_log_stderr
     * writes lines to stderr. */
    handoff_log_fn log;
    void *log_userdata;
    /* Lowest level passed to the logger. Default HANDOFF_LOG_WARNING. */
    int log_level;
    /* How many generations may drain at once, as `handoff run
     * --max-draining` and HAProxy bound them. An upgrade that would make
     * more drain is held back (handoff_upgrade() returns 1) until one of
     * them exits, for at most a second (or the drain timeout if shorter);
     * then the oldest is killed (SIGKILL, its connections are cut) and the
     * upgrade starts. Each case is logged. 0: the default, 3. -1: no
     * limit. Counted along one chain of upgrades: a generation knows the
     * draining generations before it from its parent's handshake. */
    int max_draining;
    /* Zero. Room for options added later without changing the size. */
    uint64_t reserved_[7];
} handoff_options;

#define HANDOFF_OPTIONS_INIT {0}

/* Creates the process's handle. Call it early in main(), before any thread
 * is started: it blocks the handled signals (SIGHUP or upgrade_signal,
 * SIGTERM, SIGINT) in the calling thread, so threads created afterwards
 * inherit the mask, and it edits the environment.
 *
 * It consumes the inheritance protocol: LISTEN_FDS/LISTEN_PID/
 * LISTEN_FDNAMES (from a previous generation or from systemd), else
 * SERVER_STARTER_PORT (Server::Starter's start_server), the
 * HANDOFF_* variables and NOTIFY_SOCKET. The fds become close-on-exec and
 * wait in a pool for handoff_listen()/handoff_take_fd(). Malformed or
 * foreign values are ignored with a warning (they never crash the process
 * nor make it adopt the wrong fd); the variables are then removed from the
 * environment.
 *
 * opts may be NULL for all defaults. On success *out owns the handle.
 * Returns 0, -EINVAL (bad option, or an empty argv), -ENOMEM, or another
 * -errno (for example when /proc/self/cmdline cannot be read and no argv
 * was given).
 * Only one handle may exist per process (-EBUSY otherwise), because
 * signals and the environment are process-wide.
 * Thread-safe: no. */
HANDOFF_EXPORT int handoff_new(const handoff_options *opts, handoff_t **out);

/* Closes every fd the handle owns (listeners, inherited fds, signalfd),
 * restores the signal mask saved by handoff_new(), kills and reaps a
 * successor that is not ready yet, and removes the pid file and unix
 * socket paths if this process is the last generation using them (not
 * after a hand-over, and not in a successor that never became ready).
 * A successor that is ready is left running: it is the server now.
 * Accepts NULL. Always returns NULL. Thread-safe: no. */
HANDOFF_EXPORT handoff_t *handoff_free(handoff_t *h);

/* A sentence describing the last failure reported by a call on h; "" if
 * none. Owned by h, valid until the next call on h. With h NULL: the
 * sentence of the last failed call without a handle (handoff_addr_parse()
 * and the like) on the calling thread, valid until the next such call on
 * that thread. Thread-safe: no (yes with NULL). */
HANDOFF_EXPORT const char *handoff_errmsg(const handoff_t *h);

/* 1 if this process was started by a previous generation through
 * handoff_upgrade() (and must call handoff_ready() to take over), else 0.
 * handoff_ready() clears it if the parent turns out to be gone (the
 * process then took over by itself). Thread-safe: no. */
HANDOFF_EXPORT int handoff_has_parent(const handoff_t *h);

/* The generation number: 1 for a process started by anything else, and
 * the parent's plus one after an upgrade. Thread-safe: yes. */
HANDOFF_EXPORT unsigned handoff_generation(const handoff_t *h);

/* ------------------------------------------------------------------------ */
/* Listeners and named fds                                                  */

/* Address specs accepted by handoff_listen() and handoff_addr_parse():
 *   "127.0.0.1:8080", "tcp://127.0.0.1:8080", "[::1]:8080", ":8080"
 *   (all IPv4 interfaces), "*:8080", "[::]:8080", "localhost:8080",
 *   "tcp4://...", "tcp6://..."                   TCP, port 0 = any port
 *   "udp://127.0.0.1:5353", "udp://[::1]:53"     UDP
 *   "unix:/run/app.sock", "/run/app.sock"        unix stream, filesystem
 *   "unix:@name", "@name"                        unix stream, abstract
 * Host names other than "localhost" are not resolved: give an address. */
enum handoff_addr_kind {
    HANDOFF_ADDR_TCP = 1,
    HANDOFF_ADDR_UDP = 2,
    HANDOFF_ADDR_UNIX = 3
};

typedef struct handoff_addr {
    int kind;                     /* enum handoff_addr_kind */
    int family;                   /* AF_INET, AF_INET6 or AF_UNIX */
    int socktype;                 /* SOCK_STREAM or SOCK_DGRAM */
    uint32_t len;                 /* bytes of sa used (socklen_t) */
    union {
        uint8_t raw[112];         /* large enough for sockaddr_un/in6 */
        uint64_t align_;
    } sa;                         /* a struct sockaddr_{in,in6,un} */
} handoff_addr;

/* Parses an address spec (see above) into *out without any system call.
 * On failure handoff_errmsg(NULL) is a sentence naming the problem; errbuf
 * (the older way; may be NULL) receives the same sentence.
 * Returns 0 or -EINVAL. Thread-safe: yes. Async-signal-safe: no. */
HANDOFF_EXPORT int handoff_addr_parse(const char *spec, handoff_addr *out,
                                      char *errbuf, size_t errlen);

/* Formats addr as a spec that handoff_addr_parse() reads back.
 * Returns the length written (excluding NUL), or -ENOSPC/-EINVAL
 * (handoff_errmsg(NULL) says why). Thread-safe: yes. Async-signal-safe: no. */
HANDOFF_EXPORT int handoff_addr_format(const handoff_addr *addr, char *buf,
                                       size_t len);

/* The local address of an open socket (getsockname() and SO_TYPE), for
 * example an inherited listener, as a handoff_addr that
 * handoff_addr_format() can print. Returns 0, -EBADF, -ENOTSOCK,
 * -EPROTOTYPE (a socket type handoff does not speak, such as a unix
 * datagram socket; *out still holds the address), -EAFNOSUPPORT, or
 * -EINVAL for a NULL out (handoff_errmsg(NULL) says why). Thread-safe: yes. */
HANDOFF_EXPORT int handoff_addr_from_fd(int fd, handoff_addr *out);

/* Flags for handoff_listen_options.flags. */
enum handoff_listen_flags {
    /* Leave a newly bound socket in blocking mode (default: O_NONBLOCK).
     * An inherited socket always keeps the mode it had. */
    HANDOFF_LISTEN_BLOCKING = 1u << 0,
    /* Do not set SO_REUSEADDR on new TCP sockets (default: set). */
    HANDOFF_LISTEN_NO_REUSEADDR = 1u << 1,
    /* Set SO_REUSEPORT on new sockets (default: not set; see the docs for
     * why sharing one socket is safer than a reuseport group). */
    HANDOFF_LISTEN_REUSEPORT = 1u << 2
};

typedef struct handoff_listen_options {
    int backlog;        /* listen() backlog; 0 = SOMAXCONN */
    int v6only;         /* IPV6_V6ONLY: 0 = kernel default, 1 = on, -1 = off */
    unsigned flags;     /* enum handoff_listen_flags */
    uint32_t mode;      /* unix sockets: chmod() mode; 0 = leave as created */
    int set_owner;      /* unix sockets: nonzero to chown(path, uid, gid) */
    uid_t uid;          /* with set_owner; (uid_t)-1 leaves the owner */
    gid_t gid;          /* with set_owner; (gid_t)-1 leaves the group */
} handoff_listen_options;

#define HANDOFF_LISTEN_OPTIONS_INIT {0}

/* Returns a listening socket for spec, registered under name (NULL: the
 * spec string with ':' and blanks replaced by '_', e.g. "127.0.0.1_8080").
 *
 * If the previous generation (or systemd) passed a socket under the same
 * name whose address matches spec, or else an unclaimed socket of the same
 * type bound to the same address, that socket is adopted and returned.
 * Otherwise a new socket is created, bound and (for stream sockets) put in
 * listening state. Port 0 binds an ephemeral port, and later generations
 * inherit that same port through the name.
 *
 * Options: opts may be NULL. They apply to newly bound sockets only; an
 * inherited socket keeps its own settings (backlog is re-applied).
 *
 * Ownership: the fd belongs to h. The application may watch, accept on and
 * change O_NONBLOCK of it, but must not close it; handoff_free() does, and
 * it is passed to every successor. Before a successor takes over, the
 * application must stop watching it (see HANDOFF_EVENT_DRAIN).
 *
 * Returns the fd (>= 0), or -EINVAL (bad spec or name), -EEXIST (name
 * already registered), -EADDRINUSE, -EACCES, -ENOMEM, or another -errno;
 * handoff_errmsg() tells which step failed. Thread-safe: no. */
HANDOFF_EXPORT int handoff_listen(handoff_t *h, const char *name,
                                  const char *spec,
                                  const handoff_listen_options *opts);

/* Registers any other fd (for example a memfd holding state) so that it is
 * handed to the next generation under name. The library keeps its own
 * close-on-exec duplicate; the caller keeps ownership of fd. Registering a
 * name again replaces the previous fd (that duplicate is closed).
 * Names are 1..255 bytes of printable ASCII without ':' (systemd's rule).
 * Returns 0, -EINVAL, -EBADF, -EEXIST (the name belongs to a listener),
 * -EMFILE or -ENOMEM. Thread-safe: no. */
HANDOFF_EXPORT int handoff_add_fd(handoff_t *h, const char *name, int fd);

/* Removes a registration made by handoff_add_fd() or handoff_listen()
 * and closes the library's fd (a unix socket path is unlinked unless a
 * successor took it over). The caller must have stopped using a listener
 * fd first. Returns 0 or -ENOENT. Thread-safe: no. */
HANDOFF_EXPORT int handoff_remove(handoff_t *h, const char *name);

/* Takes an inherited fd by name out of the pool. The caller then owns it
 * (it is close-on-exec and is not passed on unless added again).
 * Returns the fd, or -ENOENT if no unclaimed inherited fd has that name.
 * Thread-safe: no. */
HANDOFF_EXPORT int handoff_take_fd(handoff_t *h, const char *name);

/* Describes one inherited fd (see handoff_inherited()). */
typedef struct handoff_inherited_info {
    int fd;
    const char *name;   /* owned by h; "unknown" if none was given */
    int claimed;        /* 1 once adopted by handoff_listen/take_fd */
} handoff_inherited_info;

/* Fills up to n entries (out may be NULL with n 0) about the inherited
 * fds. fd is -1, and claimed 1, for one taken with handoff_take_fd() or
 * closed at handoff_ready() because nobody claimed it. Returns how many fds
 * were inherited in total (which may exceed n), or -EINVAL for a NULL h.
 * Thread-safe: no. */
HANDOFF_EXPORT int handoff_inherited(const handoff_t *h,
                                     handoff_inherited_info *out, size_t n);

/* ------------------------------------------------------------------------ */
/* Events                                                                   */

/* The handle's event fd: an epoll fd, close-on-exec, owned by h. Watch it
 * for readability in any event loop (epoll, poll, libuv's uv_poll_t,
 * libevent's event_new), then call handoff_next_event() until it returns 0.
 * Returns the fd (always >= 0 for a valid handle), -EINVAL for NULL.
 * Thread-safe: yes. */
HANDOFF_EXPORT int handoff_event_fd(const handoff_t *h);

enum handoff_event_type {
    HANDOFF_EVENT_NONE = 0,
    /* A signal the application asked for with handoff_watch_signal()
     * arrived: ev.signo, ev.count, ev.pid (sender). */
    HANDOFF_EVENT_SIGNAL,
    /* A new generation was spawned: ev.pid. Keep serving. */
    HANDOFF_EVENT_UPGRADE_STARTED,
    /* The new generation failed (ev.error: -ETIMEDOUT, -ENOENT, -EACCES,
     * -ECHILD for exit/crash with ev.status as from waitpid(), ...). It was
     * killed and reaped; this process keeps serving and may upgrade again.
     * ev.message describes what happened. */
    HANDOFF_EVENT_UPGRADE_FAILED,
    /* Stop accepting and drain: remove the listeners from the event loop,
     * finish requests in flight, close idle connections. ev.reason is
     * HANDOFF_DRAIN_UPGRADE (successor ev.pid is ready and serving the same
     * sockets; nothing queued in the kernel is lost) or
     * HANDOFF_DRAIN_SHUTDOWN (SIGTERM/SIGINT or handoff_shutdown()).
     * Delivered once. The hammer timer starts now. */
    HANDOFF_EVENT_DRAIN,
    /* Exit now: close every connection and return from the loop. ev.reason
     * is HANDOFF_STOP_DRAINED (the tracked count reached zero),
     * HANDOFF_STOP_TIMEOUT (hammer timeout) or HANDOFF_STOP_FORCED (a
     * second SIGTERM/SIGINT, or handoff_shutdown(h, 1)). Delivered once. */
    HANDOFF_EVENT_STOP,
    /* The successor we handed over to exited while we were still draining
     * (ev.pid, ev.status). Informational; it has been reaped. */
    HANDOFF_EVENT_SUCCESSOR_EXITED,
    /* With resume_window_usec: the successor (ev.pid, ev.status) exited
     * within the window, so this process serves again: watch the
     * listeners again and stop closing keep-alive connections. It is back
     * in the serving state (it may upgrade again; a later DRAIN and STOP
     * are delivered anew). */
    HANDOFF_EVENT_RESUME,
    /* Connections wait for handoff_adopt(): in a successor, connections
     * handed over by the predecessor; in a generation that migrates,
     * connections the successor did not take (returned). Call
     * handoff_adopt() until it returns 0. */
    HANDOFF_EVENT_ADOPT
};

enum handoff_drain_reason {
    HANDOFF_DRAIN_UPGRADE = 1,
    HANDOFF_DRAIN_SHUTDOWN = 2
};

enum handoff_stop_reason {
    HANDOFF_STOP_DRAINED = 1,
    HANDOFF_STOP_TIMEOUT = 2,
    HANDOFF_STOP_FORCED = 3
};

typedef struct handoff_event {
    int type;            /* enum handoff_event_type */
    int reason;          /* DRAIN and STOP: see above */
    int signo;           /* SIGNAL */
    unsigned count;      /* SIGNAL: deliveries seen since the last report */
    pid_t pid;           /* SIGNAL: sender; UPGRADE_*, DRAIN, SUCCESSOR_*: child */
    int status;          /* UPGRADE_FAILED, SUCCESSOR_EXITED: waitpid status */
    int error;           /* UPGRADE_FAILED: negative errno */
    uint64_t elapsed_usec; /* UPGRADE_*: time since the upgrade started */
    const char *message; /* human-readable; owned by h, valid until next call */
} handoff_event;

/* Processes whatever is pending on the event fd (signals, the successor's
 * handshake, timers, the drain count) without blocking, running default
 * actions and hooks, and stores the next event for the application in
 * *ev. Returns 1 if *ev was filled, 0 if nothing is pending, or -errno.
 * Call it in a loop until it returns 0 whenever the event fd is readable.
 * Thread-safe: no (call it from the loop's thread). */
HANDOFF_EXPORT int handoff_next_event(handoff_t *h, handoff_event *ev);

/* Blocks until an event is available or the absolute CLOCK_MONOTONIC
 * deadline (microseconds, see handoff_now_usec(); HANDOFF_NO_TIMEOUT for
 * none) passes. For programs without an event loop. Returns 1 with *ev
 * filled, 0 on timeout, or -errno. -EINTR is retried internally. */
HANDOFF_EXPORT int handoff_wait_event(handoff_t *h, handoff_event *ev,
                                      uint64_t deadline_usec);

/* CLOCK_MONOTONIC in microseconds. Thread-safe and async-signal-safe. */
HANDOFF_EXPORT uint64_t handoff_now_usec(void);

/* A short name for an event type ("drain", ...). Never NULL.
 * Thread-safe: yes. Async-signal-safe: yes. */
HANDOFF_EXPORT const char *handoff_event_name(int type);

/* ------------------------------------------------------------------------ */
/* Signals                                                                  */

/* Adds signo (e.g. SIGUSR1) to the signals delivered as events on the
 * event fd. The signal is blocked in the calling thread (threads created
 * later inherit that; call it before starting threads) and read through
 * the signalfd; if several arrive before they are read,
 * HANDOFF_EVENT_SIGNAL reports the count seen. The kernel keeps only one
 * pending instance of a standard signal, so two sent before the first is
 * read count as one; real-time signals queue and every one counts.
 * SIGKILL, SIGSTOP and the signals the library handles itself (the
 * upgrade signal, SIGTERM, SIGINT: observe those with hooks) are refused
 * with -EINVAL. Returns 0, -EINVAL, or -ENOTSUP with HANDOFF_NO_SIGNALS.
 * Thread-safe: no. */
HANDOFF_EXPORT int handoff_watch_signal(handoff_t *h, int signo);

/* A hook run when signo is processed by handoff_next_event(), before
 * (pre) or after (post) the library's default action, like endless's
 * signal hooks. It runs in normal context, not in a signal handler, so it
 * may call anything. */
typedef void (*handoff_signal_hook)(handoff_t *h, int signo, void *userdata);

enum handoff_hook_when { HANDOFF_HOOK_PRE = 0, HANDOFF_HOOK_POST = 1 };

/* Installs (or with hook == NULL removes) the pre or post hook for signo.
 * signo must be handled by the library (the upgrade signal, SIGTERM,
 * SIGINT) or watched with handoff_watch_signal(). One hook per slot.
 * The hook runs on the thread calling handoff_next_event(); it may call
 * any handoff function except handoff_free(). userdata is passed as is.
 * Returns 0, -EINVAL, or -ENOTSUP with HANDOFF_NO_SIGNALS. Thread-safe: no. */
HANDOFF_EXPORT int handoff_set_signal_hook(handoff_t *h, int signo, int when,
                                           handoff_signal_hook hook,
                                           void *userdata);

/* ------------------------------------------------------------------------ */
/* Upgrade, readiness, shutdown                                             */

/* Starts an upgrade: fork+exec of the binary named by argv[0] (resolved
 * now), with the same argv, working directory and environment, plus
 * LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES describing every registered fd and
 * HANDOFF_* variables for the handshake. The child starts with the signal
 * mask and dispositions the process had before handoff_new().
 *
 * It does not wait for the child: watch the event fd. On the child's
 * handoff_ready() you get HANDOFF_EVENT_DRAIN (reason UPGRADE); if the
 * child exits, crashes or exceeds upgrade_timeout_usec, it is killed and
 * reaped and you get HANDOFF_EVENT_UPGRADE_FAILED.
 *
 * Between fork() and execve() the child holds a copy of every fd of this
 * process (the close-on-exec ones vanish at exec). An fd registered in an
 * epoll set stays registered as long as any copy is open, so remove an fd
 * from its epoll set (EPOLL_CTL_DEL) before closing it, or an event for a
 * freed connection can arrive during an upgrade.
 *
 * The child is signalled and reaped through its pidfd (pidfd_send_signal,
 * waitid(P_PIDFD): Linux >= 5.4), never by pid. An application that reaps
 * with waitpid(-1, ...) or sets SIGCHLD to SIG_IGN loses the exit status
 * of a failed generation (reported as unknown), nothing else. A child that
 * made itself a process group leader is killed with its group; otherwise
 * it is killed alone, so a new binary must not fork the server and exit
 * (daemonize): see handoff_upgrade(3).
 *
 * At most max_draining generations drain at once (handoff_options): an
 * upgrade that would exceed it is held back until one exits, for at most a
 * second, then the oldest is killed; meanwhile this returns 1 and the
 * upgrade starts by itself (HANDOFF_EVENT_UPGRADE_STARTED follows).
 *
 * Returns 0 once the child is running its new binary, 1 if held back by
 * max_draining, or:
 *  -EBUSY      an upgrade is already in progress (only one at a time);
 *  -EAGAIN     this process has not called handoff_ready() yet;
 *  -ESHUTDOWN  this process is draining or shutting down;
 *  -ENOENT, -EACCES, -ENOEXEC, ...  the binary could not be executed (the
 *              child was reaped; handoff_errmsg() names the path);
 *  -ENOMEM, -EAGAIN (fork), -EMFILE.
 * Thread-safe: no. */
HANDOFF_EXPORT int handoff_upgrade(handoff_t *h);

/* Declares this process ready to serve. In a process started by
 * handoff_upgrade() it closes the inherited fds nobody claimed (unlinking
 * unix socket paths no generation uses any more) and tells the parent over
 * the handshake socket, with the kernel-verified credentials of this pid;
 * the parent then writes the pid file, tells systemd MAINPID and READY=1,
 * and starts draining. In a first generation it writes the pid file and
 * sends READY=1 to NOTIFY_SOCKET. Calling it twice returns -EALREADY.
 * Returns 0 or -errno (a failed pid file or notification is a warning, not
 * an error: the process is ready anyway). Thread-safe: no. */
HANDOFF_EXPORT int handoff_ready(handoff_t *h);

/* Starts a graceful shutdown, as a first SIGTERM to a serving process
 * does: a pending upgrade is cancelled (the child is killed and reaped),
 * STOPPING=1 is sent, and
 * HANDOFF_EVENT_DRAIN (reason SHUTDOWN) follows. With now != 0, or if
 * already draining, it leads to HANDOFF_EVENT_STOP (reason FORCED)
 * instead. Returns 0, or -EINVAL for NULL. Thread-safe: no. */
HANDOFF_EXPORT int handoff_shutdown(handoff_t *h, int now);

/* ------------------------------------------------------------------------ */
/* Connection tracking for the drain                                        */

/* Counts a connection (or any unit of work) that the drain must wait for.
 * Thread-safe: yes. Async-signal-safe: yes. */
HANDOFF_EXPORT void handoff_conn_begin(handoff_t *h);

/* Ends one handoff_conn_begin(). When the process is draining and the
 * count reaches zero, HANDOFF_EVENT_STOP (reason DRAINED) becomes pending
 * and the event fd readable. Thread-safe: yes. Async-signal-safe: yes. */
HANDOFF_EXPORT void handoff_conn_end(handoff_t *h);

/* The current count of tracked connections. Thread-safe: yes. */
HANDOFF_EXPORT unsigned long handoff_conn_count(const handoff_t *h);

/* accept4() on listen_fd with SOCK_CLOEXEC (and SOCK_NONBLOCK when
 * nonblock != 0), counting the connection with handoff_conn_begin() on
 * success; the caller must call handoff_conn_end() after closing it.
 * Returns the new fd or -errno (-EAGAIN when nothing is pending).
 * Thread-safe: yes. */
HANDOFF_EXPORT int handoff_accept(handoff_t *h, int listen_fd, int nonblock);

/* ------------------------------------------------------------------------ */
/* Connection migration (HANDOFF_MIGRATE)                                   */

/* The largest state blob handoff_migrate() carries with a connection. */
#define HANDOFF_MIGRATE_STATE_MAX 65536

/* 1 if the successor this process handed over to adopts connections
 * (both sides set HANDOFF_MIGRATE and the channel to it is open), else 0.
 * It turns 0 for good when the successor exits, stops acknowledging, or
 * breaks the protocol. Meaningful after HANDOFF_EVENT_DRAIN (reason
 * UPGRADE). Thread-safe: yes. */
HANDOFF_EXPORT int handoff_successor_adopts(const handoff_t *h);

/* Hands an established connection and an opaque state blob (bytes read
 * but not yet processed, counters, ...; at most HANDOFF_MIGRATE_STATE_MAX
 * bytes, copied) to the successor, which gets both from handoff_adopt().
 * Call it after HANDOFF_EVENT_DRAIN (reason UPGRADE), when the connection
 * is idle and its output is flushed, after removing it from every epoll
 * set (EPOLL_CTL_DEL: the successor shares the open file description).
 *
 * On 0 the library owns fd: the caller must not read, write, shutdown() or
 * close it, and may count the connection as ended (handoff_conn_end());
 * the library counts it until the successor has acknowledged it, so
 * HANDOFF_EVENT_STOP (DRAINED) waits for that. Connections are sent in
 * batches without ever blocking. A connection the successor refuses (or
 * does not acknowledge before it exits, or within 10 s) comes back through
 * handoff_adopt() with returned = 1 and its state: drain it as without
 * migration. Bytes the client sends meanwhile stay queued in the kernel
 * for whichever generation ends up owning the connection.
 *
 * Returns 0, or (the caller still owns fd):
 *  -ENOTCONN  no adopting successor (see handoff_successor_adopts());
 *  -EMSGSIZE  len > HANDOFF_MIGRATE_STATE_MAX;
 *  -EBADF     fd is not open;
 *  -ENOTSOCK  fd is not a socket;
 *  -EINVAL    not a connected stream socket of family AF_INET, AF_INET6 or
 *             AF_UNIX (a listener, a datagram socket, a reset connection),
 *             or state is NULL with len > 0;
 *  -ENOBUFS   too many connections (65536) or state bytes (64 MiB) wait
 *             for acknowledgement: drain it, or retry after events;
 *  -ENOMEM.
 * Thread-safe: yes (worker threads may hand over their own connections). */
HANDOFF_EXPORT int handoff_migrate(handoff_t *h, int fd, const void *state, size_t len);

/* One connection from handoff_adopt(). */
typedef struct handoff_adopted {
    int fd;             /* close-on-exec; owned by the caller */
    int returned;       /* 1: our own connection that the successor did not
                         * take: drain it, never migrate it again */
    const void *state;  /* the blob given to handoff_migrate(); NULL if len
                         * is 0; owned by h until the next handoff_adopt() */
    size_t len;
} handoff_adopted;

/* Takes the next waiting connection (see HANDOFF_EVENT_ADOPT). Returns 1
 * with *out filled, 0 when none is left, -EINVAL. The caller owns out->fd
 * and it is counted as handoff_accept() counts (handoff_conn_end() after
 * closing it). In a successor, every fd was checked first (a socket,
 * SOCK_STREAM, not listening, connected, family AF_INET, AF_INET6 or
 * AF_UNIX) and acknowledged to the predecessor; its O_NONBLOCK flag is the
 * predecessor's. Connections not taken are closed by handoff_free().
 * Thread-safe: yes. */
HANDOFF_EXPORT int handoff_adopt(handoff_t *h, handoff_adopted *out);

/* ------------------------------------------------------------------------ */
/* Process managers                                                         */

/* Sends a raw sd_notify message (e.g. "STATUS=serving 10 clients") to
 * NOTIFY_SOCKET as consumed by handoff_new(). Returns 1 if sent, 0 if
 * there is no NOTIFY_SOCKET (or HANDOFF_NO_NOTIFY), -EMSGSIZE for a
 * message over 4095 bytes, or another -errno.
 * Thread-safe: yes. */
HANDOFF_EXPORT int handoff_notify(handoff_t *h, const char *msg);

/* Writes pid to path atomically: a temporary file in the same directory,
 * fsync, then rename(). Returns 0 or -errno (handoff_errmsg(NULL) names
 * the path). Thread-safe: yes. */
HANDOFF_EXPORT int handoff_pidfile_write(const char *path, pid_t pid);

#ifdef __cplusplus
}
#endif

#endif /* HANDOFF_H */

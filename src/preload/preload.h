/*
 * preload.h - the parts of `handoff run --preload` shared by the shim
 * (libhandoff-preload.so, shim.c), the supervisor (tools/) and the tests.
 * Never installed.
 *
 *   match.c     socket addresses in normal form, and the matching rules: is
 *               a bind() the server makes one of the supervisor's sockets,
 *               unrelated to them, or in conflict with one (as the kernel
 *               would refuse it)?
 *   env.c       the HANDOFF_PRELOAD variable (how the supervisor describes
 *               its sockets and its broker to the shim) and LD_PRELOAD lists
 *   proto.c     the broker's request and reply datagrams
 *   sockinfo.c  a socket's address and options read from the kernel
 *   exe.c       can a preload library work in this executable? (ELF, #!,
 *               set-user-ID, file capabilities)
 *   broker.c    the supervisor's side: hands its sockets to shims
 *
 * Everything here but sockinfo.c, broker.c and pl_exe_check() is pure (no
 * system call, no allocation), so that the shim can call it anywhere and
 * the fuzzers and unit tests can drive it.
 *
 * Naming: pl_ for "preload"; nothing here is exported from the shim (it is
 * built with hidden visibility).
 */
#ifndef HANDOFF_PRELOAD_H
#define HANDOFF_PRELOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* At most this many sockets are described to the shim (the supervisor's
 * own limit, TOOL_MAX_LISTEN, is the same). */
#define PL_MAX_HELD 64
/* The library's file name, and the variable it reads. */
#define PL_LIB_NAME "libhandoff-preload.so"
#define PL_ENV "HANDOFF_PRELOAD"
#define PL_ENV_VERSION "v1"
/* Width of the pid slot at the end of HANDOFF_PRELOAD (written between
 * fork and exec, like LISTEN_PID). */
#define PL_PID_DIGITS 20

/* ------------------------------------------------------------------------ */
/* match.c                                                                   */

enum pl_unix_kind { PL_UNIX_UNNAMED = 0, PL_UNIX_PATH = 1, PL_UNIX_ABSTRACT = 2 };

/* A socket address in normal form, plus what the kernel compares when it
 * decides whether two binds conflict. */
struct pl_sock {
    int family;        /* AF_INET, AF_INET6, AF_UNIX */
    int type;          /* SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET */
    int protocol;      /* SO_PROTOCOL; 0 = the type's default */
    int v6only;        /* AF_INET6: IPV6_V6ONLY (0 or 1) */
    int ifindex;       /* SO_BINDTOIFINDEX; 0 = any device */
    uint16_t port;     /* host byte order */
    uint8_t addr[16];  /* AF_INET: the first 4 bytes */
    uint32_t scope;    /* AF_INET6 link-local scope id; 0 otherwise */
    int ukind;         /* AF_UNIX: enum pl_unix_kind */
    uint32_t namelen;  /* AF_UNIX: bytes of name used */
    char name[108];    /* path (NUL-terminated), or abstract name (no
                        * leading NUL; may hold NUL bytes) */
    uint64_t dev, ino; /* AF_UNIX path: the socket file; 0 = unknown */
    uint64_t sino;     /* a held socket's own inode (fstat), by which the
                        * shim recognises it on any fd; 0 = unknown */
};

/* Fills the address part of *s (family, addr, port, scope, unix name) from
 * a sockaddr of len bytes; keeps the other fields. 0, or -EINVAL for a
 * family other than AF_INET/AF_INET6/AF_UNIX or a short length. */
int pl_sock_from_addr(struct pl_sock *s, const void *sa, size_t len);

/* Writes the sockaddr for s into buf (at least 112 bytes); returns its
 * length, or -EINVAL. The inverse of pl_sock_from_addr(). */
int pl_sock_to_addr(const struct pl_sock *s, void *buf, size_t len);

enum pl_verdict {
    PL_NONE = 0,    /* unrelated to every held socket: bind for real */
    PL_MATCH = 1,   /* this is held socket *index */
    PL_CONFLICT = 2 /* overlaps held socket *index; the kernel would say
                     * EADDRINUSE, and a fresh socket would half-serve */
};

enum pl_reason {
    PL_R_NONE = 0,
    PL_R_OVERLAP,   /* wildcard vs specific address on the same port */
    PL_R_V6ONLY,    /* same [::]:port, different IPV6_V6ONLY */
    PL_R_DUALSTACK, /* IPv4 vs a dual-stack [::] socket on the same port */
    PL_R_MAPPED,    /* an IPv4-mapped IPv6 address vs an IPv4 socket */
    PL_R_TYPE,      /* same unix address, another socket type */
    PL_R_DEVICE     /* same address, another SO_BINDTODEVICE */
};

/* The rules (see docs/guide-unmodified-servers.md):
 *  - a request with port 0, or an unnamed (autobind) unix address, is
 *    never held;
 *  - IP: separate port spaces per protocol (TCP, UDP, SCTP...); the same
 *    family, address, port (and link-local scope) is a MATCH, except that
 *    [::] must also agree on IPV6_V6ONLY; any other overlap the kernel
 *    would refuse (wildcard vs specific, a dual-stack [::] vs IPv4, an
 *    IPv4-mapped address vs IPv4) is a CONFLICT; sockets bound to two
 *    different devices never overlap;
 *  - unix: the same path (as a string, or the same socket file when both
 *    dev/ino are known) or the same abstract name is a MATCH if the type
 *    is the same, else a CONFLICT.
 * Over all held sockets: the first MATCH, else the first CONFLICT, else
 * NONE. *index (may be NULL) and *reason (may be NULL) say which and why. */
int pl_match(const struct pl_sock *held, size_t n, const struct pl_sock *req, size_t *index,
             int *reason);

/* A short sentence for a reason ("the supervisor's socket is dual-stack
 * and already receives IPv4"). */
const char *pl_reason_text(int reason);

/* Formats s as "127.0.0.1:8080", "[::1]:53/udp", "unix:/run/a.sock",
 * "unix:@name" (abstract bytes outside printable ASCII as \xNN). Returns
 * the length (truncated output is NUL-terminated), never fails. */
size_t pl_sock_format(const struct pl_sock *s, char *buf, size_t len);

/* ------------------------------------------------------------------------ */
/* env.c                                                                     */

/* What HANDOFF_PRELOAD says. Its value is
 *   v1;depth=N;ready=0|1;log=N;stop=SIGNO;netns=DEV:INO;sock=@NAME;
 *   lib=PATH;listen=E,E,...;pid=DIGITS
 * where each E is TYPE.PROTOCOL.V6ONLY.IFINDEX.DEV.INO.SINO.HEX (the
 * sockaddr bytes in hex), and pid comes last so that the supervisor can write it
 * between fork and exec. Unknown keys are ignored (forward compatibility);
 * a known key twice, a bad value or a missing sock/pid is an error. */
struct pl_env {
    long pid;          /* the process the shim is active in */
    int depth;         /* spawned-program levels that keep the shim */
    bool ready;        /* report READY=1 when the server accepts */
    int log;           /* 0 errors, 1 warnings (default), 2 debug */
    int stop_signal;   /* the supervisor's stop signal; 0 = none */
    uint64_t netns_dev, netns_ino; /* the supervisor's network namespace */
    char sock[108];    /* the broker's address ("@name": abstract) */
    char lib[512];     /* the shim's path, as put into LD_PRELOAD */
    struct pl_sock held[PL_MAX_HELD];
    size_t nheld;
};

/* Parses value into *e. 0, or -EINVAL with a reason in err (may be NULL). */
int pl_env_parse(const char *value, struct pl_env *e, char *err, size_t errlen);

/* Writes the value for e (without "HANDOFF_PRELOAD="), its pid field as
 * PL_PID_DIGITS zeros, to be filled in by pl_put_pid(). Returns the length,
 * or -ENOSPC / -EINVAL (a lib or sock with ';' in it, or missing). */
int pl_env_format(const struct pl_env *e, char *buf, size_t len);

/* Writes pid as exactly PL_PID_DIGITS decimal digits (zero-padded) at dst;
 * async-signal-safe. */
void pl_put_pid(char *dst, long pid);

/* LD_PRELOAD lists: entries separated by spaces or colons (ld.so(8)). */

/* True if entry (of len bytes) names the shim: the same path as lib, or a
 * file named PL_LIB_NAME. */
bool pl_preload_is_shim(const char *entry, size_t len, const char *lib);

/* Removes every entry that names the shim from list, in place, keeping the
 * others in their order. Returns the new length (0: nothing left). */
size_t pl_preload_strip(char *list, const char *lib);

/* Writes into out the list existing (NULL or "" for none) with the shim's
 * entries removed and lib appended last (so that a sanitizer runtime the
 * user preloads stays first). 0, -EINVAL (lib empty, not absolute, or with
 * a space or colon, which LD_PRELOAD cannot carry) or -ENOSPC. */
int pl_preload_add(char *out, size_t outlen, const char *existing, const char *lib);

/* ------------------------------------------------------------------------ */
/* proto.c: datagrams on the broker's AF_UNIX socket                        */

#define PL_OP_BIND 1  /* give me the held socket for this address */
#define PL_OP_READY 2 /* the server waits on the held sockets in mask (no reply) */
#define PL_REQ_REUSEPORT 1u /* the server set SO_REUSEPORT on its socket */
#define PL_REQ_SIZE 168
#define PL_REP_MSG 200
#define PL_REP_SIZE (16 + PL_REP_MSG)

struct pl_req {
    int op;             /* PL_OP_BIND or PL_OP_READY */
    unsigned flags;     /* PL_REQ_* */
    struct pl_sock sock;/* BIND: what the server binds, as pl_sock_from_fd()
                         * and pl_sock_from_addr() describe it */
    uint64_t mask;      /* READY: bit i = held socket i */
};

struct pl_rep {
    int status;         /* 0: the socket is attached; else an errno */
    int index;          /* the held socket, or -1 */
    char msg[PL_REP_MSG]; /* why, for the server's stderr ("" if nothing) */
};

/* Encoders return the size written (PL_REQ_SIZE / PL_REP_SIZE) or -ENOSPC;
 * decoders return 0 or -EINVAL (wrong size, magic, version, or fields). */
int pl_req_encode(const struct pl_req *r, uint8_t *buf, size_t len);
int pl_req_decode(const uint8_t *buf, size_t len, struct pl_req *r);
int pl_rep_encode(const struct pl_rep *r, uint8_t *buf, size_t len);
int pl_rep_decode(const uint8_t *buf, size_t len, struct pl_rep *r);

/* One line of /proc/self/fdinfo/EPFD for an epoll fd:
 *   "tfd:        5 events:       19 data:                5  pos:0 ino:..."
 * Returns 1 with the target fd, event mask and data, or 0 for any other
 * line (the header lines, or a malformed one). */
int pl_fdinfo_epoll_line(const char *line, size_t len, int *tfd, uint32_t *events, uint64_t *data);

/* ------------------------------------------------------------------------ */
/* sockinfo.c (system calls)                                                 */

/* Describes the socket fd: its type, protocol, IPV6_V6ONLY and device,
 * and, if bound is true, its address (getsockname) and, for a unix path,
 * the socket file's dev/ino. 0 or -errno (-ENOTSOCK...). */
int pl_sock_from_fd(int fd, bool bound, struct pl_sock *s);

/* The dev/ino of the unix socket file at path (relative to dirfd, which
 * may be AT_FDCWD); 0 or -errno. */
int pl_unix_file_id(int dirfd, const char *path, uint64_t *dev, uint64_t *ino);

/* ------------------------------------------------------------------------ */
/* exe.c                                                                     */

/* What an ELF file says about itself. */
struct pl_elf_info {
    int elf_class;       /* ELFCLASS32 / ELFCLASS64 */
    int machine;         /* e_machine */
    int type;            /* e_type */
    bool has_interp;     /* PT_INTERP: dynamically linked */
    char interp[128];    /* its path (truncated) */
    bool go;             /* a Go build ID note or .go.buildinfo section */
};

/* Reads len bytes at off into buf; returns the number read (short at the
 * end of the file) or -1. */
typedef long (*pl_read_fn)(void *ctx, uint64_t off, void *buf, size_t len);

/* Inspects an ELF file of size bytes through rd. 0, or -ENOEXEC if it is
 * not a well-formed ELF file. Reads at most a few hundred KiB however
 * large or hostile the file is. */
int pl_elf_inspect(pl_read_fn rd, void *ctx, uint64_t size, struct pl_elf_info *info);

/* Parses a "#!" line (the first line of a script, without the "#!"):
 * interpreter path and its single optional argument, as the kernel does.
 * 0 or -ENOEXEC (no interpreter). */
int pl_shebang_parse(const char *line, size_t len, char *interp, size_t ilen, char *arg, size_t alen);

/* Can the shim work in the program at path (already resolved), run by
 * this process's credentials? Follows "#!" interpreters (and /usr/bin/env
 * NAME through PATH) up to 4 levels. Returns 0, or -1 with a sentence in
 * why: statically linked, Go, another libc, another architecture,
 * set-user-ID/set-group-ID, file capabilities (both make ld.so ignore
 * LD_PRELOAD). */
int pl_exe_check(const char *path, char *why, size_t whylen);

/* Is path a preload library this process's programs can load: an
 * absolute path LD_PRELOAD can carry (no blank or colon), readable, an
 * ELF shared object of this architecture? 0, or -1 with a sentence. */
int pl_lib_check(const char *path, char *why, size_t whylen);

/* ------------------------------------------------------------------------ */
/* broker.c: the supervisor's side                                           */

struct pl_broker;

/* What the broker asks of the supervisor. */
struct pl_broker_ops {
    /* The worker (its pid) whose process tree pid belongs to, or 0 if
     * none: only those may take the supervisor's sockets. */
    pid_t (*owner)(pid_t pid, void *ud);
    /* pid (of owner's tree) was given held socket index. May be NULL. */
    void (*served)(pid_t owner, pid_t pid, size_t index, void *ud);
    /* The shim in pid (of owner's tree) reports that the server waits for
     * connections on the held sockets in mask. May be NULL. */
    void (*ready)(pid_t owner, pid_t pid, uint64_t mask, void *ud);
    /* level: 0 error, 1 warning, 2 info, 3 debug. May be NULL. */
    void (*log)(int level, const char *msg, void *ud);
    void *ud;
};

/* Opens the broker's abstract AF_UNIX datagram socket (close-on-exec,
 * non-blocking, SO_PASSCRED) at "@handoff/PID/preload/RANDOM", returned in
 * addr. fds are the supervisor's sockets (borrowed, not closed here), in
 * the order HANDOFF_PRELOAD lists them. 0 or -errno. */
int pl_broker_open(const int *fds, size_t n, struct pl_broker **out, char *addr, size_t addrlen);
/* Its socket, to wait on for input. */
int pl_broker_fd(const struct pl_broker *b);
/* The sockets as described to the shim (pl_env.held). */
const struct pl_sock *pl_broker_held(const struct pl_broker *b, size_t *n);
/* Answers every pending request (at most 64 per call). */
void pl_broker_on_event(struct pl_broker *b, const struct pl_broker_ops *ops);
/* The two variables a worker gets, malloc'd "NAME=value" strings:
 * LD_PRELOAD (cur, the supervisor's own value or NULL, with lib appended)
 * and HANDOFF_PRELOAD (the broker's sockets and address, and the other
 * fields of struct pl_env; its last PL_PID_DIGITS characters are the pid
 * slot for pl_put_pid()). 0, or -EINVAL (lib unusable in LD_PRELOAD) or
 * -ENOMEM. */
int pl_broker_worker_env(const struct pl_broker *b, const char *lib, const char *cur, int depth, bool ready,
                         int log, int stop_signal, char **ld_preload, char **handoff_preload);
void pl_broker_close(struct pl_broker *b);

#endif

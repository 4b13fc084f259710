/*
 * handshake.h - the messages on the handshake socket (handshake.c), an
 * AF_UNIX SOCK_SEQPACKET socketpair between a generation and the
 * successor it starts (docs/protocol.md section 4). No handle here: plain
 * fds in and out, so the format can be read (and extended) in one place.
 *
 *   parent -> child, queued before fork(): HELLO, one datagram of
 *       "HELLO=1\n" "DRAINING=<pid>/<generation>,...\n" (optional)
 *     with SCM_RIGHTS carrying one pidfd per DRAINING entry, in order:
 *     the generations that will be draining once the child is ready (the
 *     parent's own draining predecessors and the parent itself).
 *   child -> parent: READY, "READY=1" and (with migration, see
 *     migrate_wire.h) more lines; the parent checks its SCM_CREDENTIALS.
 *
 * Unknown KEY=VALUE lines are ignored, so either side may add keys
 * (capabilities) without breaking an older peer; an older child never
 * reads HELLO at all (its fds are freed with the socket).
 */
#ifndef HANDOFF_HANDSHAKE_H
#define HANDOFF_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define HF_HELLO_MAX 64 /* pidfds in one HELLO (SCM_RIGHTS allows 253) */

/* A generation that drains (or will once our successor is ready). */
struct hf_pred {
    int pidfd;
    pid_t pid;
    unsigned generation;
};

/* Parent: queues HELLO on sock with n entries (n <= HF_HELLO_MAX).
 * 0 or -errno. */
int handoff__hello_send(int sock, const struct hf_pred *preds, size_t n);

/* Child: reads a queued HELLO from fd without blocking. On success *out
 * (malloc'd, *n entries, each pidfd close-on-exec and checked to be a
 * pidfd) belongs to the caller. Returns 1 with a HELLO, 0 if none was
 * queued (an older parent), -EBADMSG for a malformed one (its fds are
 * closed), or -ENOMEM. */
int handoff__hello_recv(int fd, struct hf_pred **out, size_t *n);

/* Child: sends the READY message msg ("READY=1\n..."). 0 or -errno
 * (-EPIPE: the parent is gone). */
int handoff__ready_send(int fd, const char *msg);

/* Parent: reads one message from sock without blocking. Returns 1 for a
 * message sent by pid expect (its text, NUL-terminated, in buf, *len bytes;
 * the caller parses it), 0 for nothing or a message from anyone else (*who
 * is then the sender's pid, or -1 without credentials; 0 if nothing was
 * read), -EPIPE when the peer closed its end, or another -errno. Any fds
 * attached are closed. */
int handoff__ready_recv(int sock, pid_t expect, pid_t *who, char *buf, size_t size, size_t *len);

#endif

/*
 * shared/sockaddr.h - socket addresses as handoff_addr values, the stale
 * unix socket probe, and receiving on control sockets (a message and its
 * credentials and fds).
 */
#ifndef HANDOFF_SHARED_SOCKADDR_H
#define HANDOFF_SHARED_SOCKADDR_H

#include "handoff.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* Fills *out from a struct sockaddr of salen bytes and a SO_TYPE. Returns
 * 0, -EINVAL (bad length), -EPROTOTYPE (a type handoff does not speak for
 * that family: unix datagram, raw, ...) or -EAFNOSUPPORT. *out is filled
 * as far as it could be even on failure. */
int handoff__sockaddr_to_addr(const void *sa, uint32_t salen, int socktype, handoff_addr *out);

/* The local address of socket fd (getsockname() and SO_TYPE); as
 * handoff__sockaddr_to_addr(), or -ENOTSOCK, -EBADF, ... */
int handoff__fd_addr(int fd, handoff_addr *out);

/* Same family, type and address; any_port ignores the port. For unix
 * sockets the path bytes are compared (the kernel reports a filesystem
 * path with or without its trailing NUL). */
bool handoff__addr_equal(const handoff_addr *a, const handoff_addr *b, bool any_port);

/* Copies the filesystem path of a unix address into buf (NUL-terminated).
 * Returns its length, 0 if a is not a filesystem unix address (abstract,
 * unnamed, or another family), or -ENAMETOOLONG if buf is too small. */
int handoff__unix_path(const handoff_addr *a, char *buf, size_t len);

/* A filesystem unix socket that nobody accepts on is stale (its server
 * died); one that accepts belongs to a live server and must not be taken.
 * Removes path if it is a socket file on which connect() is refused.
 * The probe never blocks (a live server with a full backlog counts as
 * live). Returns 0 if it was removed, -EADDRINUSE if it is live, not a
 * socket or gone, or another -errno. */
int handoff__unix_unlink_stale(const char *path);

/* recvmsg() for the library's and the command's control sockets: never
 * blocks (MSG_DONTWAIT), fds received are close-on-exec
 * (MSG_CMSG_CLOEXEC), EINTR is retried. Returns the bytes read, or -errno
 * (-EAGAIN when nothing is waiting). */
ssize_t handoff__recvmsg_nb(int fd, struct msghdr *msg);

/* The ancillary data of a message handoff__recvmsg_nb() received: the
 * sender's SCM_CREDENTIALS into *cred (if cred is not NULL), its
 * SCM_RIGHTS fds into fds[0..maxfds) (*nfds of them, if nfds is not
 * NULL); every fd past maxfds is closed at once (maxfds 0: every fd), so
 * that none leaks or pins a socket. Returns true if credentials came
 * (*cred is left alone otherwise). */
struct ucred;
bool handoff__msg_take(struct msghdr *msg, struct ucred *cred, int *fds, size_t maxfds, size_t *nfds);

#endif

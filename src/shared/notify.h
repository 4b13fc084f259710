/*
 * shared/notify.h - sending sd_notify messages without libsystemd.
 *
 * The protocol (sd_notify(3)) is one datagram of newline-separated
 * KEY=VALUE lines to the AF_UNIX socket named by $NOTIFY_SOCKET; a leading
 * '@' means the abstract namespace. The socket is made once, when the
 * notifier is opened, so that sending needs no new fd (a process at its fd
 * limit can still report), and it never blocks: a receiver that stopped
 * reading costs the message (-EAGAIN), never a frozen process.
 */
#ifndef HANDOFF_SHARED_NOTIFY_H
#define HANDOFF_SHARED_NOTIFY_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

struct handoff__notifier {
    int fd;                  /* -1: closed */
    socklen_t len;
    struct sockaddr_un sun;
};

#define HANDOFF__NOTIFIER_INIT {.fd = -1}

/* Parses path ("/run/systemd/notify" or "@abstract") into *n and creates
 * its close-on-exec, non-blocking datagram socket. Returns 0,
 * -EAFNOSUPPORT for a path that is neither absolute nor abstract (or too
 * long for sockaddr_un), or -errno from socket(). */
int handoff__notifier_open(struct handoff__notifier *n, const char *path);

/* Sends msg (len bytes) as one datagram. Returns 1 if sent, 0 if n is not
 * open, -EAGAIN if the receiver's queue is full (dropped), -EMSGSIZE if
 * the kernel took only part of it, or another -errno. EINTR is retried.
 * Thread-safe: yes. */
int handoff__notifier_send(const struct handoff__notifier *n, const char *msg, size_t len);

/* Closes the socket; n may be sent to again only after an open. */
void handoff__notifier_close(struct handoff__notifier *n);

#endif

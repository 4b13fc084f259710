/*
 * notify.c - sd_notify without libsystemd (the protocol is stable and
 * documented in sd_notify(3): one datagram of newline-separated KEY=VALUE
 * lines to the AF_UNIX socket named by $NOTIFY_SOCKET; '@' means the
 * abstract namespace).
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int notify_send(const char *path, const char *msg, size_t len)
{
    struct sockaddr_un sun;
    size_t plen = strlen(path);
    socklen_t salen;
    ssize_t n;
    int fd, r = 0;

    if (plen == 0 || plen >= sizeof sun.sun_path || (path[0] != '/' && path[0] != '@'))
        return -EAFNOSUPPORT;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, plen);
    if (path[0] == '@')
        sun.sun_path[0] = '\0';
    salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen +
                        (path[0] == '@' ? 0 : 1));
    /* Never block: a receiver that stopped reading (a wedged manager, a
     * test double) must not freeze the server. A full queue drops the
     * message with -EAGAIN, reported as a warning. */
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    /* The kernel attaches our credentials for receivers with SO_PASSCRED,
     * which is how systemd attributes the message to this pid. */
    n = sendto(fd, msg, len, MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&sun, salen);
    if (n < 0)
        r = -errno;
    else if ((size_t)n != len)
        r = -EMSGSIZE;
    (void)close(fd);
    return r;
}

int handoff__notify(handoff_t *h, const char *fmt, ...)
{
    char msg[4096];
    va_list ap;
    int r, n;

    if (!h->notify_socket || (h->flags & HANDOFF_NO_NOTIFY))
        return 0;
    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof msg, fmt, ap); /* NOLINT(clang-analyzer-valist.Uninitialized): va_start above */
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof msg)
        return handoff__fail(h, -EMSGSIZE, "sd_notify: message longer than %zu bytes",
                             sizeof msg - 1);
    r = notify_send(h->notify_socket, msg, strlen(msg));
    if (r < 0) {
        handoff__log(h, HANDOFF_LOG_WARNING, "sd_notify to %s failed: %s",
                     h->notify_socket, strerror(-r));
        return r;
    }
    return 1;
}

int handoff_notify(handoff_t *h, const char *msg)
{
    if (!h || !msg)
        return -EINVAL;
    return handoff__notify(h, "%s", msg);
}

/*
 * shared/notify.c - the sd_notify sender.
 */
#include "shared/notify.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

int handoff__notifier_open(struct handoff__notifier *n, const char *path)
{
    size_t plen = path ? strlen(path) : 0;

    n->fd = -1;
    if (plen == 0 || plen >= sizeof n->sun.sun_path || (path[0] != '/' && path[0] != '@'))
        return -EAFNOSUPPORT;
    memset(&n->sun, 0, sizeof n->sun);
    n->sun.sun_family = AF_UNIX;
    memcpy(n->sun.sun_path, path, plen);
    if (path[0] == '@')
        n->sun.sun_path[0] = '\0'; /* abstract: no trailing NUL counted */
    n->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (path[0] == '@' ? 0 : 1));
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    return n->fd < 0 ? -errno : 0;
}

int handoff__notifier_send(const struct handoff__notifier *n, const char *msg, size_t len)
{
    ssize_t r;

    if (n->fd < 0)
        return 0;
    /* The kernel attaches our credentials for receivers with SO_PASSCRED,
     * which is how systemd attributes the message to this pid. */
    do {
        r = sendto(n->fd, msg, len, MSG_NOSIGNAL | MSG_DONTWAIT, (const struct sockaddr *)&n->sun,
                   n->len);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return (size_t)r == len ? 1 : -EMSGSIZE;
}

void handoff__notifier_close(struct handoff__notifier *n)
{
    if (n->fd >= 0)
        (void)close(n->fd);
    n->fd = -1;
}

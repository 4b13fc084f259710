/*
 * shared/sockaddr.c - socket addresses and the stale unix socket probe.
 */
#include "shared/sockaddr.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int handoff__sockaddr_to_addr(const void *sa, uint32_t salen, int socktype, handoff_addr *out)
{
    const struct sockaddr *s = sa;

    memset(out, 0, sizeof *out);
    if (salen > sizeof out->sa.raw || salen < sizeof(sa_family_t))
        return -EINVAL;
    memcpy(out->sa.raw, sa, salen);
    out->len = salen;
    out->family = s->sa_family;
    out->socktype = socktype;
    switch (s->sa_family) {
    case AF_INET:
    case AF_INET6:
        if (socktype == SOCK_STREAM)
            out->kind = HANDOFF_ADDR_TCP;
        else if (socktype == SOCK_DGRAM)
            out->kind = HANDOFF_ADDR_UDP;
        else
            return -EPROTOTYPE;
        return 0;
    case AF_UNIX:
        out->kind = HANDOFF_ADDR_UNIX;
        return socktype == SOCK_STREAM ? 0 : -EPROTOTYPE;
    default:
        return -EAFNOSUPPORT;
    }
}

int handoff__fd_addr(int fd, handoff_addr *out)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int type = 0;
    socklen_t tlen = sizeof type;

    memset(&ss, 0, sizeof ss);
    memset(out, 0, sizeof *out);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) < 0)
        return -errno;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    return handoff__sockaddr_to_addr(&ss, len, type, out);
}

bool handoff__addr_equal(const handoff_addr *a, const handoff_addr *b, bool any_port)
{
    if (a->family != b->family || a->socktype != b->socktype)
        return false;
    switch (a->family) {
    case AF_INET: {
        const struct sockaddr_in *x = (const void *)a->sa.raw, *y = (const void *)b->sa.raw;
        return x->sin_addr.s_addr == y->sin_addr.s_addr && (any_port || x->sin_port == y->sin_port);
    }
    case AF_INET6: {
        const struct sockaddr_in6 *x = (const void *)a->sa.raw, *y = (const void *)b->sa.raw;
        return memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0 &&
               (any_port || x->sin6_port == y->sin6_port);
    }
    case AF_UNIX: {
        const struct sockaddr_un *x = (const void *)a->sa.raw, *y = (const void *)b->sa.raw;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t lx = a->len > off ? a->len - off : 0, ly = b->len > off ? b->len - off : 0;
        if (lx > 0 && x->sun_path[0] != '\0')
            lx = strnlen(x->sun_path, lx);
        if (ly > 0 && y->sun_path[0] != '\0')
            ly = strnlen(y->sun_path, ly);
        return lx == ly && lx > 0 && memcmp(x->sun_path, y->sun_path, lx) == 0;
    }
    default:
        return false;
    }
}

int handoff__unix_path(const handoff_addr *a, char *buf, size_t len)
{
    const struct sockaddr_un *sun = (const void *)a->sa.raw;
    size_t off = offsetof(struct sockaddr_un, sun_path), n;

    if (len > 0)
        buf[0] = '\0';
    if (a->family != AF_UNIX || a->len <= off || sun->sun_path[0] == '\0')
        return 0;
    n = strnlen(sun->sun_path, a->len - off);
    if (n >= len)
        return -ENAMETOOLONG;
    memcpy(buf, sun->sun_path, n);
    buf[n] = '\0';
    return (int)n;
}

int handoff__unix_unlink_stale(const char *path)
{
    struct sockaddr_un sun;
    size_t n = strlen(path);
    struct stat st;
    int fd, r;

    if (n == 0 || n >= sizeof sun.sun_path)
        return -ENAMETOOLONG;
    if (lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode))
        return -EADDRINUSE;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, n);
    /* Non-blocking: a live server whose backlog is full answers EAGAIN
     * instead of keeping us waiting; it is live all the same. */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    r = connect(fd, (const struct sockaddr *)&sun,
                (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1));
    if (r < 0 && errno == ECONNREFUSED)
        r = unlink(path) < 0 && errno != ENOENT ? -errno : 0;
    else
        r = -EADDRINUSE;
    (void)close(fd);
    return r;
}

ssize_t handoff__recvmsg_nb(int fd, struct msghdr *msg)
{
    ssize_t n;

    do {
        n = recvmsg(fd, msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

bool handoff__msg_take(struct msghdr *msg, struct ucred *cred, int *fds, size_t maxfds, size_t *nfds)
{
    bool have_cred = false;
    size_t kept = 0;

    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET)
            continue;
        if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len == CMSG_LEN(sizeof(struct ucred))) {
            if (cred)
                memcpy(cred, CMSG_DATA(c), sizeof *cred);
            have_cred = true;
        } else if (c->cmsg_type == SCM_RIGHTS) {
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int f;
                memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
                if (kept < maxfds)
                    fds[kept++] = f;
                else
                    (void)close(f);
            }
        }
    }
    if (nfds)
        *nfds = kept;
    return have_cred;
}

/*
 * sockinfo.c - what the kernel says about a socket, as a struct pl_sock.
 *
 * Used by the shim on the server's fresh socket at bind() (type, protocol,
 * IPV6_V6ONLY and device, all set by the server before it binds) and by
 * the supervisor on its own sockets. Only system calls that are
 * async-signal-safe in practice (getsockopt, getsockname, fstatat).
 */
#include "preload.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#ifndef SO_BINDTOIFINDEX
#define SO_BINDTOIFINDEX 62
#endif

static int get_int(int fd, int level, int name, int *out)
{
    socklen_t len = sizeof *out;
    *out = 0;
    return getsockopt(fd, level, name, out, &len) < 0 ? -errno : 0;
}

int pl_unix_file_id(int dirfd, const char *path, uint64_t *dev, uint64_t *ino)
{
    struct stat st;

    if (fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    if (!S_ISSOCK(st.st_mode))
        return -ENOTSOCK;
    *dev = (uint64_t)st.st_dev;
    *ino = (uint64_t)st.st_ino;
    return 0;
}

int pl_sock_from_fd(int fd, bool bound, struct pl_sock *s)
{
    int domain, r;

    memset(s, 0, sizeof *s);
    if ((r = get_int(fd, SOL_SOCKET, SO_TYPE, &s->type)) < 0)
        return r;
    if ((r = get_int(fd, SOL_SOCKET, SO_DOMAIN, &domain)) < 0)
        return r;
    (void)get_int(fd, SOL_SOCKET, SO_PROTOCOL, &s->protocol);
    /* Fails before Linux 5.0: the device is then taken as "any". */
    (void)get_int(fd, SOL_SOCKET, SO_BINDTOIFINDEX, &s->ifindex);
    s->family = domain;
    if (domain == AF_INET6)
        (void)get_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, &s->v6only);
    if (domain == AF_UNIX)
        s->protocol = 0;
    if (bound) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int type = s->type, proto = s->protocol, v6 = s->v6only, ifx = s->ifindex;
        if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
            return -errno;
        if (pl_sock_from_addr(s, &ss, len) < 0)
            return -EAFNOSUPPORT;
        s->type = type;
        s->protocol = proto;
        s->v6only = v6;
        s->ifindex = ifx;
        if (s->family == AF_UNIX && s->ukind == PL_UNIX_PATH)
            (void)pl_unix_file_id(AT_FDCWD, s->name, &s->dev, &s->ino);
    }
    return 0;
}

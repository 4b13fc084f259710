/*
 * notify.c - the NOTIFY_SOCKET the supervisor gives its workers.
 *
 * The supervisor speaks the sd_notify protocol as a receiver: an AF_UNIX
 * datagram socket in the abstract namespace with SO_PASSCRED, so the
 * kernel attaches the sender's real pid to every message. A message is
 * accepted from a worker's own pid or from one of its descendants (a shell
 * wrapper that did not exec, a master that forks its workers first); the
 * supervisor checks that through /proc (see pid_descends_from()).
 *
 * The supervisor's own NOTIFY_SOCKET (from systemd) never reaches a
 * worker. The supervisor speaks to it itself (sd_open(), sd_send()) with
 * a non-blocking socket: a receiver that does not read (its queue holds
 * net.unix.max_dgram_qlen messages, 10 by default) must not block the
 * supervisor; the message is dropped instead.
 */
#include "tool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int notify_open(char *path, size_t len)
{
    struct sockaddr_un sun;
    uint64_t rnd = 0;
    int fd, one = 1, n;

    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) < 0)
        rnd = handoff_now_usec();
    n = snprintf(path, len, "@handoff/%ld/notify/%016llx", (long)getpid(),
                 (unsigned long long)rnd);
    if (n < 0 || (size_t)n >= len || (size_t)n >= sizeof sun.sun_path)
        return -ENAMETOOLONG;
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path + 1, path + 1, (size_t)n - 1); /* leading NUL: abstract */
    if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&sun, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n)) < 0) {
        int e = errno;
        (void)close(fd);
        return -e;
    }
    return fd;
}

static struct {
    int fd;
    struct sockaddr_un sun;
    socklen_t len;
} sd = {.fd = -1};

int sd_open(const char *path)
{
    size_t n = strlen(path);

    if (sd.fd >= 0)
        return 0;
    if (n == 0 || n >= sizeof sd.sun.sun_path || (path[0] != '/' && path[0] != '@'))
        return -EAFNOSUPPORT; /* not a unix socket address systemd would give */
    memset(&sd.sun, 0, sizeof sd.sun);
    sd.sun.sun_family = AF_UNIX;
    memcpy(sd.sun.sun_path, path, n);
    if (path[0] == '@')
        sd.sun.sun_path[0] = '\0'; /* abstract: no trailing NUL counted */
    sd.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '@' ? 0 : 1));
    /* Created now, so that notifying needs no new fd later (at the limit). */
    sd.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    return sd.fd < 0 ? -errno : 0;
}

int sd_send(const char *msg)
{
    size_t len = strlen(msg);
    ssize_t n;

    if (sd.fd < 0)
        return 0;
    do {
        n = sendto(sd.fd, msg, len, MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&sd.sun, sd.len);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    return (size_t)n == len ? 1 : -EMSGSIZE;
}

void sd_close(void)
{
    if (sd.fd >= 0)
        (void)close(sd.fd);
    sd.fd = -1;
}

static void parse_line(struct notify_msg *m, const char *line, size_t len)
{
#define IS(k) (len >= sizeof(k) - 1 && memcmp(line, k, sizeof(k) - 1) == 0)
    if (len == 7 && IS("READY=1"))
        m->ready = true;
    else if (len == 10 && IS("STOPPING=1"))
        m->stopping = true;
    else if (len == 11 && IS("RELOADING=1"))
        m->reloading = true;
    else if (IS("STATUS=")) {
        size_t n = len - 7;
        if (n >= sizeof m->status)
            n = sizeof m->status - 1;
        memcpy(m->status, line + 7, n);
        m->status[n] = '\0';
        m->has_status = true;
    } else if (IS("EXTEND_TIMEOUT_USEC=")) {
        char num[24];
        size_t n = len - 20;
        if (n > 0 && n < sizeof num) {
            memcpy(num, line + 20, n);
            num[n] = '\0';
            m->extend_usec = strtoull(num, NULL, 10);
        }
    }
#undef IS
}

int notify_read(int fd, struct notify_msg *m)
{
    char buf[4097];
    union {
        struct cmsghdr hdr;
        char space[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 253)];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf - 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl,
                         .msg_controllen = sizeof ctl};
    bool have_cred = false;
    ssize_t n;

    memset(m, 0, sizeof *m);
    do {
        n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN ? 0 : -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET)
            continue;
        if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len == CMSG_LEN(sizeof(struct ucred))) {
            struct ucred cred;
            memcpy(&cred, CMSG_DATA(c), sizeof cred);
            m->pid = cred.pid;
            have_cred = true;
        } else if (c->cmsg_type == SCM_RIGHTS) {
            /* FDSTORE=1 and friends: the supervisor keeps no fds for its
             * workers; close them so they cannot leak or pin sockets. */
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k; i++) {
                int rfd;
                memcpy(&rfd, CMSG_DATA(c) + i * sizeof(int), sizeof rfd);
                (void)close(rfd);
            }
        }
    }
    if (!have_cred || m->pid <= 0)
        return 0;
    buf[n] = '\0';
    for (char *p = buf, *end = buf + n; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        parse_line(m, p, len);
        p += len + 1;
    }
    return 1;
}

static pid_t parent_of(pid_t pid)
{
    char path[64], buf[512];
    ssize_t n;
    int fd;

    (void)snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    n = read(fd, buf, sizeof buf - 1);
    (void)close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* "pid (comm) state ppid ...": comm may contain spaces and ')'. */
    char *rp = strrchr(buf, ')');
    if (!rp || rp[1] != ' ' || !rp[2] || rp[3] != ' ')
        return -1;
    return (pid_t)strtol(rp + 4, NULL, 10);
}

bool pid_descends_from(pid_t pid, pid_t ancestor)
{
    for (int depth = 0; depth < 64 && pid > 1; depth++) {
        if (pid == ancestor)
            return true;
        pid = parent_of(pid);
    }
    return false;
}

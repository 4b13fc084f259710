/*
 * handshake.c - the messages on the handshake socket (see handshake.h).
 */
#include "handshake.h"

#include "shared/sockaddr.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define HF_HELLO_BUF 2048

int handoff__hello_send(int sock, const struct hf_pred *preds, size_t n)
{
    char buf[HF_HELLO_BUF];
    union {
        struct cmsghdr hdr;
        char space[CMSG_SPACE(sizeof(int) * HF_HELLO_MAX)];
    } ctl;
    struct iovec iov = {.iov_base = buf};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    size_t len;
    ssize_t r;

    if (n > HF_HELLO_MAX)
        return -E2BIG;
    len = (size_t)snprintf(buf, sizeof buf, "HELLO=1\n");
    if (n > 0) {
        len += (size_t)snprintf(buf + len, sizeof buf - len, "DRAINING=");
        for (size_t i = 0; i < n; i++)
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%ld/%u", i ? "," : "",
                                    (long)preds[i].pid, preds[i].generation);
        len += (size_t)snprintf(buf + len, sizeof buf - len, "\n");
        memset(&ctl, 0, sizeof ctl);
        msg.msg_control = &ctl;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * n);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * n);
        for (size_t i = 0; i < n; i++)
            memcpy(CMSG_DATA(c) + i * sizeof(int), &preds[i].pidfd, sizeof(int));
    }
    iov.iov_len = len;
    do {
        r = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    return (size_t)r == len ? 0 : -EMSGSIZE;
}

/* Strict decimal of at most 10 digits. */
static bool parse_num(const char **p, unsigned long *out)
{
    unsigned long v = 0;
    int k = 0;

    while (**p >= '0' && **p <= '9' && k < 10) {
        v = v * 10 + (unsigned long)(**p - '0');
        (*p)++;
        k++;
    }
    *out = v;
    return k > 0 && !(**p >= '0' && **p <= '9');
}

/* "pid/gen,pid/gen" (up to the end of the line) into preds[0..max). */
static int parse_draining(const char *p, const char *end, struct hf_pred *preds, size_t max)
{
    size_t n = 0;
    unsigned long pid, gen;

    while (p < end) {
        if (n == max || !parse_num(&p, &pid) || *p != '/' || (p++, !parse_num(&p, &gen)) ||
            pid == 0 || pid > 0x7fffffffUL || gen > 1000000000UL)
            return -1;
        preds[n].pid = (pid_t)pid;
        preds[n].generation = (unsigned)gen;
        n++;
        if (p < end && *p++ != ',')
            return -1;
    }
    return (int)n;
}

int handoff__hello_recv(int fd, struct hf_pred **out, size_t *nout)
{
    char buf[HF_HELLO_BUF + 1];
    union {
        struct cmsghdr hdr;
        char space[CMSG_SPACE(sizeof(int) * HF_HELLO_MAX)];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf - 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl,
                         .msg_controllen = sizeof ctl};
    int fds[HF_HELLO_MAX];
    struct hf_pred preds[HF_HELLO_MAX];
    size_t nfds = 0;
    int npreds = 0, r = -EBADMSG; /* every "goto out" below reports this, but ENOMEM */
    ssize_t n;

    *out = NULL;
    *nout = 0;
    n = handoff__recvmsg_nb(fd, &msg);
    if (n < 0)
        return n == -EAGAIN ? 0 : (int)n;
    (void)handoff__msg_take(&msg, NULL, fds, HF_HELLO_MAX, &nfds);
    buf[n] = '\0';
    if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || strncmp(buf, "HELLO=1\n", 8) != 0) {
        goto out;
    }
    for (const char *p = buf + 8; *p;) {
        const char *nl = strchr(p, '\n');
        const char *end = nl ? nl : p + strlen(p);
        if (strncmp(p, "DRAINING=", 9) == 0) {
            npreds = parse_draining(p + 9, end, preds, HF_HELLO_MAX);
            if (npreds < 0) {
                goto out;
            }
        }
        /* Other keys: for later versions; ignored. */
        p = nl ? nl + 1 : end;
    }
    if ((size_t)npreds != nfds) {
        goto out;
    }
    for (size_t i = 0; i < nfds; i++) {
        /* Signal 0 through it: 0 or ESRCH for a pidfd (alive or not),
         * EBADF for any other kind of fd. */
        if (syscall(SYS_pidfd_send_signal, fds[i], 0, NULL, 0) < 0 && errno != ESRCH) {
            goto out;
        }
        preds[i].pidfd = fds[i];
    }
    if (nfds > 0) {
        *out = malloc(nfds * sizeof **out);
        if (!*out) {
            r = -ENOMEM;
            goto out;
        }
        memcpy(*out, preds, nfds * sizeof **out);
        *nout = nfds;
    }
    return 1;
out:
    for (size_t i = 0; i < nfds; i++)
        (void)close(fds[i]);
    return r;
}

int handoff__ready_send(int fd, const char *msg)
{
    size_t len = strlen(msg);
    ssize_t n;

    /* The receiver has SO_PASSCRED, so the kernel attaches our verified
     * pid/uid/gid to this message. */
    do {
        n = send(fd, msg, len, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    return n == (ssize_t)len ? 0 : -EIO;
}

int handoff__ready_recv(int sock, pid_t expect, pid_t *who, char *buf, size_t size, size_t *len)
{
    union {
        struct cmsghdr hdr;
        char space[CMSG_SPACE(sizeof(struct ucred))];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = size - 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl,
                         .msg_controllen = sizeof ctl};
    struct ucred cred = {0};
    bool have_cred;
    ssize_t n;

    *who = 0;
    *len = 0;
    n = handoff__recvmsg_nb(sock, &msg);
    if (n < 0)
        return n == -EAGAIN ? 0 : (int)n;
    if (n == 0)
        return -EPIPE;
    /* Nobody is supposed to send fds this way: never keep them. */
    have_cred = handoff__msg_take(&msg, &cred, NULL, 0, NULL);
    buf[n] = '\0';
    *who = have_cred ? cred.pid : -1;
    if (!have_cred || cred.pid != expect)
        return 0;
    *len = (size_t)n;
    return 1;
}

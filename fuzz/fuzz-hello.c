/* libFuzzer harness: the HELLO message of the handshake (src/handshake.c,
 * handoff__hello_recv()). The input is sent as one datagram on a
 * SOCK_SEQPACKET socketpair; a leading digit d (1 to 3) is taken off and
 * stands for d pidfds of this process riding along with it. Invariants: no
 * crash, a result of 1, 0 or -EBADMSG, and no entries unless 1. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "handshake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    union {
        struct cmsghdr hdr;
        char space[CMSG_SPACE(sizeof(int) * 3)];
    } ctl;
    struct iovec iov = {.iov_base = (void *)data, .iov_len = size};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    struct hf_pred *preds = NULL;
    int sv[2], fds[3], nfds = 0;
    size_t n = 0;

    if (size == 0 || size > 4000)
        return 0;
    if (data[0] >= '1' && data[0] <= '3') {
        nfds = data[0] - '0';
        data++;
        size--;
        iov.iov_base = (void *)data;
        iov.iov_len = size;
    }
    if (size == 0 || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    for (int i = 0; i < nfds; i++)
        fds[i] = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (nfds > 0 && fds[nfds - 1] >= 0) {
        memset(&ctl, 0, sizeof ctl);
        msg.msg_control = &ctl;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    if (sendmsg(sv[0], &msg, 0) == (ssize_t)size) {
        int r = handoff__hello_recv(sv[1], &preds, &n);
        if (r != 1 && r != 0 && r != -EBADMSG)
            abort();
        if (r != 1 && (preds || n))
            abort();
        for (size_t i = 0; i < n; i++)
            (void)close(preds[i].pidfd);
        free(preds);
    }
    for (int i = 0; i < nfds; i++)
        if (fds[i] >= 0)
            (void)close(fds[i]);
    (void)close(sv[0]);
    (void)close(sv[1]);
    return 0;
}

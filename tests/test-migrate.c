/*
 * test-migrate.c - connection migration: the wire format (migrate_wire.c)
 * and the runtime (migrate.c) with the test playing the other generation
 * over a socketpair attached to the handle's channel ends.
 *
 * "Connections" are AF_UNIX stream socketpairs: the library sees one end,
 * the test keeps the other as the client, so it can check which copy
 * serves a connection after a hand-over.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "internal.h"
#include "migrate.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    struct dirent *e;

    assert_non_null(d);
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the DIR's own fd */
}

/* The handle of the running test, freed by teardown() if the test failed
 * half-way, so that one failure does not fail every later test (only one
 * handle may exist at a time). */
static handoff_t *cur_h;

static void free_handle(handoff_t *h)
{
    handoff_free(h);
    cur_h = NULL;
}

static int teardown(void **st)
{
    (void)st;
    if (cur_h)
        free_handle(cur_h);
    return 0;
}

static handoff_t *new_handle(unsigned flags, uint64_t drain_timeout)
{
    handoff_options o = HANDOFF_OPTIONS_INIT;
    handoff_t *h = NULL;
    static char *argv[] = {"test-migrate", NULL};

    o.argv = argv;
    o.flags = HANDOFF_NO_SIGNALS | flags;
    o.drain_timeout_usec = drain_timeout;
    o.log_level = getenv("TEST_VERBOSE") ? HANDOFF_LOG_DEBUG : 1;
    assert_int_equal(handoff_new(&o, &h), 0);
    cur_h = h;
    return h;
}

/* A connected stream pair: *app goes to the library, *client stays. */
static void conn_pair(int *app, int *client)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    *app = sv[0];
    *client = sv[1];
}

static void chan_pair(int *lib, int *test)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    *lib = sv[0];
    *test = sv[1];
}

/* The channel to a "successor" played by the test; acknowledgements are
 * due within 10 minutes (the default 5 s is the subject of one test only:
 * a busy machine must not fail the others). */
static int attach_out(handoff_t *h, int fd, pid_t peer)
{
    int r = handoff__mig_attach_out(h, fd, peer);
    if (r == 0)
        handoff__mig_set_ack_timeout(h, 600 * HANDOFF_USEC_PER_SEC);
    return r;
}

/* Events until none is pending; counts ADOPT and remembers STOP. */
struct seen {
    int adopt, stop, stop_reason, drain;
};

static void pump(handoff_t *h, struct seen *s)
{
    handoff_event ev;
    int r;
    while ((r = handoff_next_event(h, &ev)) > 0) {
        if (ev.type == HANDOFF_EVENT_ADOPT)
            s->adopt++;
        if (ev.type == HANDOFF_EVENT_DRAIN)
            s->drain++;
        if (ev.type == HANDOFF_EVENT_STOP) {
            s->stop++;
            s->stop_reason = ev.reason;
        }
    }
    assert_int_equal(r, 0);
}

/* Waits up to ms for the event fd, then pumps. */
static void pump_wait(handoff_t *h, struct seen *s, int ms)
{
    struct pollfd p = {.fd = handoff_event_fd(h), .events = POLLIN};
    (void)poll(&p, 1, ms);
    pump(h, s);
}

/* Receives one message with its fds (blocking up to 2 s). */
static ssize_t recv_fds(int fd, void *buf, size_t cap, int *fds, size_t *nfds, int *flags)
{
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(int) * 256) + CMSG_SPACE(sizeof(struct ucred))];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.space,
                         .msg_controllen = sizeof ctl.space};
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ssize_t n;

    *nfds = 0;
    if (poll(&p, 1, 10000) != 1)
        return -ETIMEDOUT;
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0)
        return -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            memcpy(fds + *nfds, CMSG_DATA(c), k * sizeof(int));
            *nfds += k;
        }
    if (flags)
        *flags = msg.msg_flags;
    return n;
}

static int send_fds(int fd, const void *buf, size_t len, const int *fds, size_t nfds)
{
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(int) * 256)];
    } ctl;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};

    memset(&ctl, 0, sizeof ctl);
    if (nfds) {
        struct cmsghdr *c;
        msg.msg_control = ctl.space;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    return sendmsg(fd, &msg, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -errno;
}

static void send_ack(int fd, uint32_t seq, uint32_t count, uint32_t received,
                     const uint8_t *bits)
{
    struct hf_mig_ack ack = {.seq = seq, .count = count, .received = received};
    unsigned char buf[HF_MIG_ACK_MAX];
    size_t n;

    if (bits)
        memcpy(ack.bits, bits, (count + 7) / 8);
    n = handoff__mig_ack_write(buf, &ack);
    assert_int_equal(send(fd, buf, n, MSG_NOSIGNAL), (ssize_t)n);
}

static void ack_all(int fd, uint32_t seq, uint32_t count)
{
    uint8_t bits[32];
    memset(bits, 0, sizeof bits);
    for (uint32_t i = 0; i < count; i++)
        bits[i / 8] |= (uint8_t)(1u << (i % 8));
    send_ack(fd, seq, count, count, bits);
}

/* Builds a batch message; returns its length. */
static size_t build_batch(unsigned char *buf, uint32_t seq, uint32_t count,
                          const char *const *states)
{
    struct hf_mig_hdr hdr = {.version = HF_MIG_VERSION, .type = HF_MIG_T_BATCH, .seq = seq,
                             .count = count};
    size_t off = HF_MIG_HDR;

    handoff__mig_hdr_write(buf, &hdr);
    for (uint32_t i = 0; i < count; i++) {
        uint32_t n = states ? (uint32_t)strlen(states[i]) : 0;
        buf[off] = (unsigned char)n;
        buf[off + 1] = (unsigned char)(n >> 8);
        buf[off + 2] = (unsigned char)(n >> 16);
        buf[off + 3] = (unsigned char)(n >> 24);
        if (n)
            memcpy(buf + off + 4, states[i], n);
        off += 4 + n;
    }
    return off;
}

/* The client end reaches whoever holds the other end now. */
static void check_serves(int holder, int client)
{
    char c = 0;
    assert_int_equal(write(client, "p", 1), 1);
    assert_int_equal(read(holder, &c, 1), 1);
    assert_int_equal(c, 'p');
}

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

/* ------------------------------------------------------------------------ */
/* Wire format                                                              */

static void test_wire_header(void **st)
{
    unsigned char buf[32];
    struct hf_mig_hdr in = {.version = 1, .type = HF_MIG_T_BATCH, .seq = 0x01020304,
                            .count = 252}, out;
    (void)st;
    handoff__mig_hdr_write(buf, &in);
    assert_memory_equal(buf, "HMIG", 4);
    assert_int_equal(handoff__mig_hdr_parse(buf, HF_MIG_HDR, &out), 0);
    assert_int_equal(out.seq, 0x01020304);
    assert_int_equal(out.count, 252);
    assert_int_equal(out.type, HF_MIG_T_BATCH);
    assert_int_equal(handoff__mig_hdr_parse(buf, HF_MIG_HDR - 1, &out), -EPROTO);
    buf[0] = 'X';
    assert_int_equal(handoff__mig_hdr_parse(buf, HF_MIG_HDR, &out), -EPROTO);
    buf[0] = 'H';
    buf[4] = 2; /* version */
    assert_int_equal(handoff__mig_hdr_parse(buf, HF_MIG_HDR, &out), -EPROTO);
    buf[4] = 1;
    buf[5] = 9; /* type */
    assert_int_equal(handoff__mig_hdr_parse(buf, HF_MIG_HDR, &out), -EBADMSG);
    buf[5] = HF_MIG_T_ACK;
    buf[7] = 1; /* reserved flags */
    assert_int_equal(handoff__mig_hdr_parse(buf, HF_MIG_HDR, &out), -EBADMSG);
}

static void test_wire_batch(void **st)
{
    static unsigned char buf[HF_MIG_MSG_MAX + 16];
    struct hf_mig_rec recs[HF_MIG_BATCH_FDS];
    struct hf_mig_hdr hdr;
    const char *states[] = {"", "hello", "x"};
    size_t n;
    (void)st;

    n = build_batch(buf, 7, 3, states);
    assert_int_equal(n, HF_MIG_HDR + 12 + 6);
    assert_int_equal(handoff__mig_batch_parse(buf, n, &hdr, recs), 3);
    assert_int_equal(hdr.seq, 7);
    assert_int_equal(recs[0].len, 0);
    assert_int_equal(recs[1].len, 5);
    assert_memory_equal(recs[1].state, "hello", 5);
    /* Exact length: one byte more or less is malformed, with the header
     * still usable for an acknowledgement. */
    assert_int_equal(handoff__mig_batch_parse(buf, n + 1, &hdr, recs), -EBADMSG);
    assert_int_equal(hdr.seq, 7);
    assert_int_equal(handoff__mig_batch_parse(buf, n - 1, &hdr, recs), -EBADMSG);
    /* A record length past the end. */
    buf[HF_MIG_HDR + 4 + 2] = 0xff;
    assert_int_equal(handoff__mig_batch_parse(buf, n, &hdr, recs), -EBADMSG);
    /* count 0 and 253 */
    n = build_batch(buf, 1, 0, NULL);
    assert_int_equal(handoff__mig_batch_parse(buf, n, &hdr, recs), -EBADMSG);
    n = build_batch(buf, 1, 253, NULL);
    assert_int_equal(handoff__mig_batch_parse(buf, n, &hdr, recs), -EBADMSG);
    n = build_batch(buf, 1, 252, NULL);
    assert_int_equal(handoff__mig_batch_parse(buf, n, &hdr, recs), 252);
    /* A state of HANDOFF_MIGRATE_STATE_MAX passes, one byte more does not. */
    {
        struct hf_mig_hdr h1 = {.version = 1, .type = HF_MIG_T_BATCH, .seq = 2, .count = 1};
        uint32_t big = HANDOFF_MIGRATE_STATE_MAX;
        handoff__mig_hdr_write(buf, &h1);
        memcpy(buf + HF_MIG_HDR, &big, 4); /* little-endian host */
        memset(buf + HF_MIG_HDR + 4, 'a', big + 1);
        assert_int_equal(handoff__mig_batch_parse(buf, HF_MIG_HDR + 4 + big, &hdr, recs), 1);
        big++;
        memcpy(buf + HF_MIG_HDR, &big, 4);
        assert_int_equal(handoff__mig_batch_parse(buf, HF_MIG_HDR + 4 + big, &hdr, recs),
                         -EBADMSG);
    }
    /* An acknowledgement is not a batch. */
    {
        struct hf_mig_ack ack = {.seq = 1, .count = 1, .received = 1, .bits = {1}};
        n = handoff__mig_ack_write(buf, &ack);
        assert_int_equal(handoff__mig_batch_parse(buf, n, &hdr, recs), -EPROTO);
    }
}

static void test_wire_ack(void **st)
{
    unsigned char buf[HF_MIG_ACK_MAX + 4];
    struct hf_mig_ack in = {.seq = 9, .count = 252, .received = 250}, out;
    size_t n;
    (void)st;

    in.bits[0] = 0x81;
    in.bits[31] = 0x02; /* record 249 */
    n = handoff__mig_ack_write(buf, &in);
    assert_int_equal(n, HF_MIG_ACK_MAX);
    assert_int_equal(handoff__mig_ack_parse(buf, n, &out), 0);
    assert_int_equal(out.seq, 9);
    assert_int_equal(out.received, 250);
    assert_memory_equal(out.bits, in.bits, 32);
    assert_int_equal(handoff__mig_ack_parse(buf, n - 1, &out), -EBADMSG);
    assert_int_equal(handoff__mig_ack_parse(buf, n + 1, &out), -EBADMSG);
    /* A record whose fd did not arrive cannot be adopted. */
    in.bits[31] = 0x04; /* record 250 */
    n = handoff__mig_ack_write(buf, &in);
    assert_int_equal(handoff__mig_ack_parse(buf, n, &out), -EBADMSG);
    in.bits[31] = 0;
    in.received = 253;
    n = handoff__mig_ack_write(buf, &in);
    assert_int_equal(handoff__mig_ack_parse(buf, n, &out), -EBADMSG);
    /* Padding bits past count must be zero too. */
    in = (struct hf_mig_ack){.seq = 1, .count = 3, .received = 3, .bits = {0x08}};
    n = handoff__mig_ack_write(buf, &in);
    assert_int_equal(handoff__mig_ack_parse(buf, n, &out), -EBADMSG);
    in.bits[0] = 0x07;
    n = handoff__mig_ack_write(buf, &in);
    assert_int_equal(handoff__mig_ack_parse(buf, n, &out), 0);
}

static void test_wire_caps(void **st)
{
    char buf[64];
    (void)st;
    assert_int_equal(handoff__mig_caps_parse("123,ready-lines,migrate-1", 123),
                     HF_CAP_READY_LINES | HF_CAP_MIGRATE1);
    assert_int_equal(handoff__mig_caps_parse("123,ready-lines", 123), HF_CAP_READY_LINES);
    assert_int_equal(handoff__mig_caps_parse("123", 123), 0);
    /* Written for another process (an older parent passed its parent's
     * value on unchanged): ignored. */
    assert_int_equal(handoff__mig_caps_parse("124,ready-lines,migrate-1", 123), 0);
    assert_int_equal(handoff__mig_caps_parse("0123,migrate-1", 123), 0);
    assert_int_equal(handoff__mig_caps_parse("123,future-thing,migrate-1", 123),
                     HF_CAP_MIGRATE1);
    assert_int_equal(handoff__mig_caps_parse("123,migrate-1x", 123), 0);
    assert_int_equal(handoff__mig_caps_parse("123,,migrate-1", 123), 0);
    assert_int_equal(handoff__mig_caps_parse("123,Migrate-1", 123), 0);
    assert_int_equal(handoff__mig_caps_parse("123,migrate-1,", 123), 0);
    assert_int_equal(handoff__mig_caps_parse(" 123,migrate-1", 123), 0);
    assert_int_equal(handoff__mig_caps_parse("99999999999,migrate-1", 123), 0);
    assert_int_equal(handoff__mig_caps_parse(NULL, 123), 0);
    assert_int_equal(handoff__mig_caps_parse("", 123), 0);
    assert_int_equal(handoff__mig_caps_format(buf, sizeof buf, 4242,
                                              HF_CAP_READY_LINES | HF_CAP_MIGRATE1),
                     (int)strlen("4242,ready-lines,migrate-1"));
    assert_string_equal(buf, "4242,ready-lines,migrate-1");
    assert_int_equal(handoff__mig_caps_parse(buf, 4242), HF_CAP_READY_LINES | HF_CAP_MIGRATE1);
    assert_int_equal(handoff__mig_caps_format(buf, 8, 4242, HF_CAP_MIGRATE1), -ENOSPC);
}

static void test_wire_ready(void **st)
{
    unsigned a;
    (void)st;
#define RP(s) handoff__mig_ready_parse(s, strlen(s), &a)
    assert_int_equal(RP("READY=1"), 0);
    assert_int_equal(a, 0);
    assert_int_equal(RP("READY=1\nADOPT=1"), 0);
    assert_int_equal(a, 1);
    assert_int_equal(RP("READY=1\nADOPT=2,1"), 0);
    assert_int_equal(a, 1);
    assert_int_equal(RP("READY=1\nADOPT=2"), 0);
    assert_int_equal(a, 0);
    assert_int_equal(RP("READY=1\nFUTURE_KEY=x\nADOPT=1"), 0);
    assert_int_equal(a, 1);
    assert_int_equal(RP("READY=1\n"), -EINVAL);
    assert_int_equal(RP("READY=12"), -EINVAL);
    assert_int_equal(RP("READY=0"), -EINVAL);
    assert_int_equal(RP("READY=1\nADOPT="), -EINVAL);
    assert_int_equal(RP("READY=1\nadopt=1"), -EINVAL);
    assert_int_equal(RP("READY=1\nADOPT=1,"), -EINVAL);
    assert_int_equal(RP("READY=1\nADOPT=x"), -EINVAL);
    assert_int_equal(RP("READY=1\nADOPT=1 2"), -EINVAL);
    assert_int_equal(RP("READY=1\nADOPT=1234567"), -EINVAL);
    assert_int_equal(RP(""), -EINVAL);
#undef RP
    /* Embedded NUL (the receiver hands the length): not a line. */
    assert_int_equal(handoff__mig_ready_parse("READY=1\0ADOPT=1", 15, &a), -EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Old generation: batching, acknowledgements, returns                      */

static void test_migrate_errors(void **st)
{
    handoff_t *h = new_handle(0, 0);
    handoff_adopted ad;
    int app, client, p[2], u;
    (void)st;

    conn_pair(&app, &client);
    /* Without HANDOFF_MIGRATE nothing migrates. */
    assert_int_equal(handoff_successor_adopts(h), 0);
    assert_int_equal(handoff_migrate(h, app, "x", 1), -ENOTCONN);
    assert_int_equal(handoff_adopt(h, &ad), 0);
    assert_int_equal(ad.fd, -1);
    free_handle(h);

    h = new_handle(HANDOFF_MIGRATE, 0);
    assert_int_equal(handoff_migrate(h, app, "x", 1), -ENOTCONN);
    int lib, test;
    chan_pair(&lib, &test);
    assert_int_equal(attach_out(h, lib, getpid()), 0);
    assert_int_equal(handoff_successor_adopts(h), 1);
    assert_int_equal(handoff_migrate(h, app, NULL, 1), -EINVAL);
    assert_int_equal(handoff_migrate(h, app, "x", HANDOFF_MIGRATE_STATE_MAX + 1), -EMSGSIZE);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_int_equal(handoff_migrate(h, p[0], NULL, 0), -ENOTSOCK);
    u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_int_equal(handoff_migrate(h, u, NULL, 0), -EINVAL);
    close(u);
    u = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(handoff_migrate(h, u, NULL, 0), -EINVAL); /* not connected */
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(u, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(listen(u, 1), 0);
    assert_int_equal(handoff_migrate(h, u, NULL, 0), -EINVAL); /* listening */
    close(u);
    assert_int_equal(handoff_migrate(h, -1, NULL, 0), -EINVAL);
    {
        int closed = dup(app);
        close(closed);
        assert_int_equal(handoff_migrate(h, closed, NULL, 0), -EBADF);
    }
    assert_int_equal(handoff_migrate(NULL, app, NULL, 0), -EINVAL);
    assert_int_equal(handoff_adopt(h, NULL), -EINVAL);
    /* Nothing was taken: the caller still owns every fd. */
    assert_true(fd_open(app) && fd_open(p[0]));
    assert_int_equal(handoff_conn_count(h), 0);
    close(p[0]);
    close(p[1]);
    close(app);
    close(client);
    close(test);
    free_handle(h);
}

/* 600 connections: two full batches go out at once, the partial one at
 * the next handoff_next_event(); acknowledgements close the library's
 * copies and return what was refused, with its state. */
static void test_migrate_batches(void **st)
{
    enum { N = 600 };
    static int app[N], client[N];
    static unsigned char buf[HF_MIG_MSG_MAX];
    struct hf_mig_rec recs[HF_MIG_BATCH_FDS];
    struct hf_mig_hdr hdr;
    int fds[256], lib, test, flags;
    size_t nfds;
    ssize_t n;
    struct seen s = {0};
    handoff_t *h = new_handle(HANDOFF_MIGRATE, 0);
    int base = count_fds();
    (void)st;

    chan_pair(&lib, &test);
    assert_int_equal(attach_out(h, lib, getpid()), 0);
    for (int i = 0; i < N; i++) {
        char state[32];
        conn_pair(&app[i], &client[i]);
        snprintf(state, sizeof state, "conn %d", i);
        assert_int_equal(handoff_migrate(h, app[i], state, strlen(state)), 0);
    }
    assert_int_equal(handoff_conn_count(h), N);
    /* Batches 1 and 2 are on the wire already. */
    for (uint32_t b = 0; b < 2; b++) {
        n = recv_fds(test, buf, sizeof buf, fds, &nfds, &flags);
        assert_true(n > 0);
        assert_int_equal(flags & (MSG_CTRUNC | MSG_TRUNC), 0);
        assert_int_equal(handoff__mig_batch_parse(buf, (size_t)n, &hdr, recs), 252);
        assert_int_equal(hdr.seq, b + 1);
        assert_int_equal(nfds, 252);
        for (uint32_t i = 0; i < 252; i++) {
            char want[32];
            int k = (int)(b * 252 + i);
            snprintf(want, sizeof want, "conn %d", k);
            assert_int_equal(recs[i].len, strlen(want));
            assert_memory_equal(recs[i].state, want, recs[i].len);
            /* fd i is connection k: the client reaches it. */
            check_serves(fds[i], client[k]);
            close(fds[i]);
        }
    }
    assert_int_equal(recv(test, buf, sizeof buf, MSG_DONTWAIT), -1);
    /* The partial batch follows the next handoff_next_event(). */
    pump_wait(h, &s, 100);
    n = recv_fds(test, buf, sizeof buf, fds, &nfds, NULL);
    assert_int_equal(handoff__mig_batch_parse(buf, (size_t)n, &hdr, recs), N - 504);
    assert_int_equal(hdr.seq, 3);
    for (size_t i = 0; i < nfds; i++)
        close(fds[i]);

    /* Batch 1: all adopted. Batch 2: every other one refused. Batch 3:
     * nothing arrived (MSG_CTRUNC at the successor). */
    ack_all(test, 1, 252);
    uint8_t bits[32];
    memset(bits, 0x55, sizeof bits);
    bits[31] &= 0x0f; /* no bit past record 251 */
    send_ack(test, 2, 252, 252, bits);
    send_ack(test, 3, N - 504, 0, NULL);
    pump_wait(h, &s, 5000);
    assert_int_equal(s.adopt, 1);
    for (int i = 0; i < 252; i++)
        assert_false(fd_open(app[i])); /* our copy closed */
    int got = 0;
    handoff_adopted ad;
    while (handoff_adopt(h, &ad) == 1) {
        int k;
        char want[32], text[32];
        assert_int_equal(ad.returned, 1);
        assert_true(ad.len < sizeof text);
        memcpy(text, ad.state, ad.len);
        text[ad.len] = '\0';
        assert_int_equal(sscanf(text, "conn %d", &k), 1);
        snprintf(want, sizeof want, "conn %d", k);
        assert_int_equal(ad.len, strlen(want));
        assert_memory_equal(ad.state, want, ad.len);
        assert_true(k >= 252);
        if (k < 504)
            assert_int_equal((k - 252) % 2, 1);
        assert_int_equal(ad.fd, app[k]); /* the same fd comes back */
        check_serves(ad.fd, client[k]);
        assert_true(fcntl(ad.fd, F_GETFD) & FD_CLOEXEC);
        close(ad.fd);
        handoff_conn_end(h);
        got++;
    }
    assert_int_equal(got, 126 + 96);
    assert_int_equal(handoff_conn_count(h), 0);
    assert_int_equal(handoff_successor_adopts(h), 1);
    for (int i = 0; i < N; i++)
        close(client[i]);
    /* Every library fd is accounted for: only the channel and its timer. */
    /* Every library fd is accounted for: the channel (both ends) and its
     * timer. */
    assert_int_equal(count_fds(), base + 3);
    close(test);
    free_handle(h);
}

/* A message stays below the size limit: big states mean small batches. */
static void test_migrate_message_size(void **st)
{
    static unsigned char buf[HF_MIG_MSG_MAX + 1];
    static char state[60000];
    struct hf_mig_rec recs[HF_MIG_BATCH_FDS];
    struct hf_mig_hdr hdr;
    int app[5], client[5], fds[256], lib, test, flags;
    size_t nfds;
    handoff_t *h = new_handle(HANDOFF_MIGRATE, 0);
    struct seen s = {0};
    (void)st;

    memset(state, 's', sizeof state);
    chan_pair(&lib, &test);
    assert_int_equal(attach_out(h, lib, getpid()), 0);
    for (int i = 0; i < 5; i++) {
        conn_pair(&app[i], &client[i]);
        assert_int_equal(handoff_migrate(h, app[i], state, sizeof state), 0);
    }
    pump_wait(h, &s, 100);
    for (int b = 0; b < 3; b++) {
        ssize_t n = recv_fds(test, buf, sizeof buf, fds, &nfds, &flags);
        assert_true(n > 0 && (size_t)n <= HF_MIG_MSG_MAX);
        assert_int_equal(flags & MSG_TRUNC, 0);
        assert_int_equal(handoff__mig_batch_parse(buf, (size_t)n, &hdr, recs), b < 2 ? 2 : 1);
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        ack_all(test, hdr.seq, hdr.count);
    }
    pump_wait(h, &s, 5000);
    assert_int_equal(handoff_conn_count(h), 0);
    for (int i = 0; i < 5; i++)
        close(client[i]);
    close(test);
    free_handle(h);
}

/* A successor that does not read: handoff_migrate() never blocks, memory
 * stays bounded (-ENOBUFS), and everything goes through once it reads. */
static void test_migrate_slow_successor(void **st)
{
    enum { N = 1200 };
    static int app[N], client[N];
    static char state[60000];
    static unsigned char buf[HF_MIG_MSG_MAX];
    struct hf_mig_rec recs[HF_MIG_BATCH_FDS];
    struct hf_mig_hdr hdr;
    int fds[256], lib, test, ok = 0, nobufs = 0;
    size_t nfds;
    handoff_t *h = new_handle(HANDOFF_MIGRATE, 0);
    struct seen s = {0};
    uint64_t worst = 0;
    (void)st;

    memset(state, 'z', sizeof state);
    chan_pair(&lib, &test);
    assert_int_equal(attach_out(h, lib, getpid()), 0);
    for (int i = 0; i < N; i++) {
        uint64_t t0 = handoff_now_usec();
        int r;
        conn_pair(&app[i], &client[i]);
        r = handoff_migrate(h, app[i], state, sizeof state);
        if (handoff_now_usec() - t0 > worst)
            worst = handoff_now_usec() - t0;
        if (r == 0) {
            ok++;
        } else {
            assert_int_equal(r, -ENOBUFS);
            nobufs++;
            close(app[i]);
            app[i] = -1;
        }
        if (i % 100 == 0)
            pump(h, &s);
    }
    /* 64 MiB of state at most: 1118 of 60000 bytes. */
    assert_int_equal(ok, (int)(HF_MIG_PENDING_BYTES / sizeof state));
    assert_int_equal(nobufs, N - ok);
    assert_true(worst < 2000000); /* never waited for the reader (that would hang) */
    pump(h, &s);
    /* Now the successor reads and acknowledges everything. */
    int adopted = 0;
    while (adopted < ok) {
        ssize_t n = recv_fds(test, buf, sizeof buf, fds, &nfds, NULL);
        assert_true(n > 0);
        assert_true(handoff__mig_batch_parse(buf, (size_t)n, &hdr, recs) > 0);
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        ack_all(test, hdr.seq, hdr.count);
        adopted += (int)hdr.count;
        pump(h, &s);
    }
    pump_wait(h, &s, 100);
    assert_int_equal(handoff_conn_count(h), 0);
    assert_int_equal(s.adopt, 0);
    for (int i = 0; i < N; i++)
        close(client[i]);
    close(test);
    free_handle(h);
}

/* The successor dies mid-adoption: what it acknowledged is its own, the
 * rest comes back; nothing is leaked. */
static void test_migrate_successor_gone(void **st)
{
    enum { N = 300 };
    static int app[N], client[N];
    static unsigned char buf[HF_MIG_MSG_MAX];
    int fds[256], lib, test, base = count_fds();
    size_t nfds;
    handoff_t *h = new_handle(HANDOFF_MIGRATE, 0);
    struct seen s = {0};
    handoff_adopted ad;
    (void)st;

    chan_pair(&lib, &test);
    assert_int_equal(attach_out(h, lib, getpid()), 0);
    for (int i = 0; i < N; i++) {
        conn_pair(&app[i], &client[i]);
        assert_int_equal(handoff_migrate(h, app[i], &i, sizeof i), 0);
    }
    assert_true(recv_fds(test, buf, sizeof buf, fds, &nfds, NULL) > 0);
    for (size_t i = 0; i < nfds; i++)
        close(fds[i]);
    ack_all(test, 1, 252);
    close(test); /* dies with batch 2 unacknowledged */
    pump_wait(h, &s, 5000);
    assert_int_equal(s.adopt, 1);
    assert_int_equal(handoff_successor_adopts(h), 0);
    int got = 0;
    while (handoff_adopt(h, &ad) == 1) {
        int k;
        assert_int_equal(ad.returned, 1);
        assert_int_equal(ad.len, sizeof k);
        memcpy(&k, ad.state, sizeof k);
        assert_true(k >= 252);
        check_serves(ad.fd, client[k]);
        close(ad.fd);
        handoff_conn_end(h);
        got++;
    }
    assert_int_equal(got, N - 252);
    assert_int_equal(handoff_conn_count(h), 0);
    int x = 1;
    assert_int_equal(handoff_migrate(h, client[0], &x, sizeof x), -ENOTCONN);
    for (int i = 0; i < N; i++)
        close(client[i]);
    free_handle(h);
    assert_int_equal(count_fds(), base);
}

/* A malformed or unexpected acknowledgement ends the channel. */
static void test_migrate_bad_ack(void **st)
{
    static unsigned char buf[HF_MIG_MSG_MAX];
    int fds[256], lib, test, app[3], client[3];
    size_t nfds;
    struct seen s = {0};
    handoff_adopted ad;
    (void)st;

    for (int variant = 0; variant < 3; variant++) {
        handoff_t *h = new_handle(HANDOFF_MIGRATE, 0);
        chan_pair(&lib, &test);
        assert_int_equal(attach_out(h, lib, getpid()), 0);
        for (int i = 0; i < 3; i++) {
            conn_pair(&app[i], &client[i]);
            assert_int_equal(handoff_migrate(h, app[i], "s", 1), 0);
        }
        pump_wait(h, &s, 100);
        assert_true(recv_fds(test, buf, sizeof buf, fds, &nfds, NULL) > 0);
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        if (variant == 0)
            assert_int_equal(send(test, "garbage", 7, 0), 7);
        else if (variant == 1)
            ack_all(test, 2, 3); /* a batch never sent */
        else
            ack_all(test, 1, 4); /* wrong count */
        pump_wait(h, &s, 5000);
        assert_int_equal(handoff_successor_adopts(h), 0);
        int got = 0;
        while (handoff_adopt(h, &ad) == 1) {
            assert_int_equal(ad.returned, 1);
            close(ad.fd);
            handoff_conn_end(h);
            got++;
        }
        assert_int_equal(got, 3);
        /* The successor's acknowledgement now fails: it knows we kept them. */
        uint8_t bits[1] = {7};
        struct hf_mig_ack ack = {.seq = 1, .count = 3, .received = 3};
        memcpy(ack.bits, bits, 1);
        unsigned char a[HF_MIG_ACK_MAX];
        size_t an = handoff__mig_ack_write(a, &ack);
        assert_int_equal(send(test, a, an, MSG_NOSIGNAL), -1);
        assert_int_equal(errno, EPIPE);
        for (int i = 0; i < 3; i++)
            close(client[i]);
        close(test);
        free_handle(h);
    }
}

/* No acknowledgement in time: the channel is shut down (so a late
 * acknowledgement fails) and everything comes back. */
static void test_migrate_ack_timeout(void **st)
{
    static unsigned char buf[HF_MIG_MSG_MAX];
    struct hf_mig_rec recs[HF_MIG_BATCH_FDS];
    struct hf_mig_hdr hdr;
    int fds[256], lib, test, app[10], client[10];
    size_t nfds;
    ssize_t n;
    struct seen s = {0};
    handoff_adopted ad;
    /* drain timeout 400 ms: acknowledgements are due within 200 ms */
    handoff_t *h = new_handle(HANDOFF_MIGRATE, 400 * HANDOFF_USEC_PER_MSEC);
    uint64_t t0;
    (void)st;

    chan_pair(&lib, &test);
    assert_int_equal(handoff__mig_attach_out(h, lib, getpid()), 0);
    for (int i = 0; i < 10; i++) {
        conn_pair(&app[i], &client[i]);
        assert_int_equal(handoff_migrate(h, app[i], "t", 1), 0);
    }
    pump(h, &s);
    t0 = handoff_now_usec();
    while (s.adopt == 0 && handoff_now_usec() - t0 < 3 * HANDOFF_USEC_PER_SEC)
        pump_wait(h, &s, 50);
    assert_int_equal(s.adopt, 1);
    assert_true(handoff_now_usec() - t0 >= 150 * HANDOFF_USEC_PER_MSEC);
    assert_int_equal(handoff_successor_adopts(h), 0);
    int got = 0;
    while (handoff_adopt(h, &ad) == 1) {
        close(ad.fd);
        handoff_conn_end(h);
        got++;
    }
    assert_int_equal(got, 10);
    /* The batch is still queued for the successor, but acknowledging it
     * fails: it must close what it received. */
    n = recv_fds(test, buf, sizeof buf, fds, &nfds, NULL);
    assert_int_equal(handoff__mig_batch_parse(buf, (size_t)n, &hdr, recs), 10);
    unsigned char a[HF_MIG_ACK_MAX];
    struct hf_mig_ack ack = {.seq = 1, .count = 10, .received = 10, .bits = {0xff, 0x03}};
    size_t an = handoff__mig_ack_write(a, &ack);
    assert_int_equal(send(test, a, an, MSG_NOSIGNAL), -1);
    assert_int_equal(errno, EPIPE);
    for (size_t i = 0; i < nfds; i++)
        close(fds[i]);
    for (int i = 0; i < 10; i++)
        close(client[i]);
    close(test);
    free_handle(h);
}

/* Only the successor's own pid may acknowledge. */
static void test_migrate_ack_wrong_pid(void **st)
{
    static unsigned char buf[HF_MIG_MSG_MAX];
    int fds[256], lib, test, app, client;
    size_t nfds;
    struct seen s = {0};
    handoff_t *h = new_handle(HANDOFF_MIGRATE, 0);
    pid_t pid;
    int status;
    (void)st;

    chan_pair(&lib, &test);
    /* The "successor" is a pid that is not us. */
    assert_int_equal(attach_out(h, lib, (pid_t)INT32_MAX), 0);
    conn_pair(&app, &client);
    assert_int_equal(handoff_migrate(h, app, NULL, 0), 0);
    pump(h, &s);
    assert_true(recv_fds(test, buf, sizeof buf, fds, &nfds, NULL) > 0);
    close(fds[0]);
    /* An acknowledgement from this process (a pid other than the
     * successor's) is ignored: the connection stays pending. */
    ack_all(test, 1, 1);
    pump_wait(h, &s, 200);
    assert_int_equal(handoff_conn_count(h), 1);
    assert_true(fd_open(app));
    assert_int_equal(handoff_successor_adopts(h), 1);
    /* So is one from a forked child. */
    pid = fork();
    if (pid == 0) {
        ack_all(test, 1, 1);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    pump_wait(h, &s, 200);
    assert_int_equal(handoff_conn_count(h), 1);
    assert_true(fd_open(app));
    close(client);
    close(test);
    free_handle(h);
}

/* STOP(DRAINED) waits until every handed connection is acknowledged. */
static void test_migrate_stop_waits(void **st)
{
    static unsigned char buf[HF_MIG_MSG_MAX];
    int fds[256], lib, test, app, client;
    size_t nfds;
    struct seen s = {0};
    handoff_t *h = new_handle(HANDOFF_MIGRATE, 0);
    (void)st;

    chan_pair(&lib, &test);
    assert_int_equal(attach_out(h, lib, getpid()), 0);
    conn_pair(&app, &client);
    handoff_conn_begin(h); /* the application's count, as handoff_accept() */
    assert_int_equal(handoff_shutdown(h, 0), 0);
    pump(h, &s);
    assert_int_equal(s.drain, 1);
    assert_int_equal(handoff_migrate(h, app, NULL, 0), 0);
    handoff_conn_end(h); /* the application counts it as ended */
    pump_wait(h, &s, 200);
    assert_int_equal(s.stop, 0);
    assert_true(recv_fds(test, buf, sizeof buf, fds, &nfds, NULL) > 0);
    close(fds[0]);
    ack_all(test, 1, 1);
    pump_wait(h, &s, 5000);
    assert_int_equal(s.stop, 1);
    assert_int_equal(s.stop_reason, HANDOFF_STOP_DRAINED);
    close(client);
    close(test);
    free_handle(h);
}

/* ------------------------------------------------------------------------ */
/* Successor: receiving batches                                             */

static int lib_in, test_out;
static handoff_t *in_handle(void)
{
    handoff_t *h = new_handle(HANDOFF_MIGRATE, 0);
    chan_pair(&lib_in, &test_out);
    assert_int_equal(handoff__mig_attach_in(h, lib_in, getpid()), 0);
    return h;
}

/* A generation whose predecessor may still hand it connections does not
 * stop before the predecessor is done (back-to-back restarts: N stopping
 * first would bounce N-1's connections back to a generation that can no
 * longer pass them on). */
static void test_stop_waits_for_predecessor(void **st)
{
    struct seen s = {0};
    handoff_t *h = in_handle();
    (void)st;

    assert_int_equal(handoff_shutdown(h, 0), 0);
    pump_wait(h, &s, 100);
    assert_int_equal(s.drain, 1);
    pump_wait(h, &s, 200);
    assert_int_equal(handoff_conn_count(h), 0);
    assert_int_equal(s.stop, 0);
    close(test_out); /* the predecessor exits */
    pump_wait(h, &s, 5000);
    assert_int_equal(s.stop, 1);
    assert_int_equal(s.stop_reason, HANDOFF_STOP_DRAINED);
    free_handle(h);
}

static void recv_ack(int fd, struct hf_mig_ack *ack)
{
    unsigned char buf[HF_MIG_ACK_MAX + 8];
    int fds[4];
    size_t nfds;
    ssize_t n = recv_fds(fd, buf, sizeof buf, fds, &nfds, NULL);
    assert_true(n > 0);
    assert_int_equal(nfds, 0);
    assert_int_equal(handoff__mig_ack_parse(buf, (size_t)n, ack), 0);
}

/* The successor checks every fd: only connected stream sockets pass;
 * every adopted fd is close-on-exec; the rest is closed and refused. */
static void test_adopt_validates(void **st)
{
    static unsigned char buf[4096];
    const char *states[] = {"a", "bb", "udp", "listen", "pipe", "ccc"};
    int app[3], client[3], p[2], u, l, fds[6];
    struct seen s = {0};
    struct hf_mig_ack ack;
    handoff_adopted ad;
    handoff_t *h = in_handle();
    int base;
    (void)st;

    for (int i = 0; i < 3; i++)
        conn_pair(&app[i], &client[i]);
    assert_int_equal(pipe(p), 0); /* no O_CLOEXEC on purpose */
    u = socket(AF_INET, SOCK_DGRAM, 0);
    l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(l, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(listen(l, 1), 0);
    fds[0] = app[0];
    fds[1] = app[1];
    fds[2] = u;
    fds[3] = l;
    fds[4] = p[0];
    fds[5] = app[2];
    base = count_fds();
    size_t n = build_batch(buf, 1, 6, states);
    assert_int_equal(send_fds(test_out, buf, n, fds, 6), 0);
    pump_wait(h, &s, 5000);
    recv_ack(test_out, &ack);
    assert_int_equal(ack.seq, 1);
    assert_int_equal(ack.count, 6);
    assert_int_equal(ack.received, 6);
    assert_int_equal(ack.bits[0], 0x23); /* records 0, 1, 5 */
    assert_int_equal(s.adopt, 1);
    assert_int_equal(handoff_conn_count(h), 3);
    /* Refused fds were closed: only the 3 adopted ones are new. */
    assert_int_equal(count_fds(), base + 3);
    const int want[] = {0, 1, 5};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(handoff_adopt(h, &ad), 1);
        assert_int_equal(ad.returned, 0);
        assert_int_equal(ad.len, strlen(states[want[i]]));
        assert_memory_equal(ad.state, states[want[i]], ad.len);
        assert_true(fcntl(ad.fd, F_GETFD) & FD_CLOEXEC);
        check_serves(ad.fd, client[i]);
        close(ad.fd);
        handoff_conn_end(h);
    }
    assert_int_equal(handoff_adopt(h, &ad), 0);
    assert_int_equal(handoff_conn_count(h), 0);
    for (int i = 0; i < 3; i++) {
        close(app[i]);
        close(client[i]);
    }
    close(p[0]);
    close(p[1]);
    close(u);
    close(l);
    close(test_out);
    free_handle(h);
}

/* Malformed batches: a bad record is refused whole (acknowledged with
 * nothing adopted); a bad header ends the channel. Nothing leaks. */
static void test_adopt_malformed(void **st)
{
    static unsigned char buf[4096];
    const char *states[] = {"one", "two"};
    int app[2], client[2];
    struct seen s = {0};
    struct hf_mig_ack ack;
    handoff_adopted ad;
    handoff_t *h = in_handle();
    int base;
    size_t n;
    (void)st;

    for (int i = 0; i < 2; i++)
        conn_pair(&app[i], &client[i]);
    base = count_fds();
    /* A record length past the end. */
    n = build_batch(buf, 1, 2, states);
    buf[HF_MIG_HDR] = 200;
    assert_int_equal(send_fds(test_out, buf, n, app, 2), 0);
    pump_wait(h, &s, 5000);
    recv_ack(test_out, &ack);
    assert_int_equal(ack.seq, 1);
    assert_int_equal(ack.received, 2);
    assert_int_equal(ack.bits[0], 0);
    /* More fds than records. */
    n = build_batch(buf, 2, 1, states);
    assert_int_equal(send_fds(test_out, buf, n, app, 2), 0);
    pump_wait(h, &s, 5000);
    recv_ack(test_out, &ack);
    assert_int_equal(ack.seq, 2);
    assert_int_equal(ack.count, 1);
    assert_int_equal(ack.bits[0], 0);
    /* Fewer fds than records (as after MSG_CTRUNC at the sender's side):
     * what arrived is adopted. */
    n = build_batch(buf, 3, 2, states);
    assert_int_equal(send_fds(test_out, buf, n, app, 1), 0);
    pump_wait(h, &s, 5000);
    recv_ack(test_out, &ack);
    assert_int_equal(ack.received, 1);
    assert_int_equal(ack.bits[0], 1);
    assert_int_equal(handoff_adopt(h, &ad), 1);
    assert_memory_equal(ad.state, "one", 3);
    close(ad.fd);
    handoff_conn_end(h);
    assert_int_equal(handoff_adopt(h, &ad), 0);
    assert_int_equal(count_fds(), base);
    /* A bad magic: no acknowledgement is possible; the channel closes. */
    n = build_batch(buf, 4, 2, states);
    buf[0] = 'X';
    assert_int_equal(send_fds(test_out, buf, n, app, 2), 0);
    pump_wait(h, &s, 5000);
    assert_int_equal(recv(test_out, buf, sizeof buf, MSG_DONTWAIT), 0); /* EOF */
    assert_int_equal(count_fds(), base - 1); /* the channel end too */
    assert_int_equal(handoff_adopt(h, &ad), 0);
    for (int i = 0; i < 2; i++) {
        check_serves(app[i], client[i]); /* the sender still has them */
        close(app[i]);
        close(client[i]);
    }
    close(test_out);
    free_handle(h);
}

/* At the fd limit the kernel installs a prefix of the fds and sets
 * MSG_CTRUNC: the acknowledgement says how many arrived. */
static void test_adopt_fd_limit(void **st)
{
    static unsigned char buf[4096];
    int app[10], client[10];
    struct seen s = {0};
    struct hf_mig_ack ack;
    handoff_adopted ad;
    struct rlimit old, low;
    handoff_t *h;
    int got = 0;
    size_t n;
    const char *pre = getenv("LD_PRELOAD");
    (void)st;

    /* Valgrind keeps its own fds above the limit it reports and only
     * emulates setrlimit(): the kernel would still deliver all ten. */
    if (pre && strstr(pre, "vgpreload")) {
        skip();
        return;
    }
    h = in_handle();
    for (int i = 0; i < 10; i++)
        conn_pair(&app[i], &client[i]);
    n = build_batch(buf, 1, 10, NULL);
    assert_int_equal(send_fds(test_out, buf, n, app, 10), 0);
    for (int i = 0; i < 10; i++)
        close(app[i]);
    /* Room for exactly 3 more fds in this process: fill every free number
     * below the highest open one, then put the limit 3 above it. */
    int top = 0, nfill = 0;
    static int fill[65536];
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && atoi(e->d_name) > top)
            top = atoi(e->d_name);
    closedir(d);
    for (;;) {
        int f = open("/dev/null", O_RDONLY | O_CLOEXEC);
        assert_true(f >= 0 && nfill < 65536);
        if (f > top) {
            close(f);
            break;
        }
        fill[nfill++] = f;
    }
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = (rlim_t)top + 1 + 3;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    pump_wait(h, &s, 5000);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    recv_ack(test_out, &ack);
    assert_int_equal(ack.count, 10);
    assert_int_equal(ack.received, 3);
    assert_int_equal(ack.bits[0], 0x07);
    assert_int_equal(ack.bits[1], 0);
    while (handoff_adopt(h, &ad) == 1) {
        check_serves(ad.fd, client[got]);
        close(ad.fd);
        handoff_conn_end(h);
        got++;
    }
    assert_int_equal(got, 3);
    /* The 7 that never arrived were closed by the kernel: their clients
     * see the end (the test dropped its copies). */
    for (int i = 3; i < 10; i++) {
        char c;
        assert_int_equal(read(client[i], &c, 1), 0);
    }
    for (int i = 0; i < 10; i++)
        close(client[i]);
    close(test_out);
    free_handle(h);
}

/* The acknowledgement is sent before the connections become ours: if the
 * predecessor has shut the channel (it took them back), the successor
 * closes them. */
static void test_adopt_ack_fails(void **st)
{
    static unsigned char buf[4096];
    int app[2], client[2];
    struct seen s = {0};
    handoff_adopted ad;
    handoff_t *h = in_handle();
    int base;
    size_t n;
    (void)st;

    for (int i = 0; i < 2; i++)
        conn_pair(&app[i], &client[i]);
    base = count_fds();
    n = build_batch(buf, 1, 2, NULL);
    assert_int_equal(send_fds(test_out, buf, n, app, 2), 0);
    assert_int_equal(shutdown(test_out, SHUT_RDWR), 0);
    pump_wait(h, &s, 5000);
    assert_int_equal(s.adopt, 0);
    assert_int_equal(handoff_adopt(h, &ad), 0);
    assert_int_equal(handoff_conn_count(h), 0);
    assert_int_equal(count_fds(), base - 1); /* received fds closed; channel closed */
    for (int i = 0; i < 2; i++) {
        check_serves(app[i], client[i]);
        close(app[i]);
        close(client[i]);
    }
    close(test_out);
    free_handle(h);
}

/* A predecessor that does not read acknowledgements: the successor stops
 * reading batches instead of queueing acknowledgements without bound,
 * and resumes when it can send again. Nothing is lost. */
static void test_adopt_ack_backpressure(void **st)
{
    enum { N = 400 };
    static unsigned char buf[256];
    static int app[N], client[N];
    struct seen s = {0};
    handoff_adopted ad;
    handoff_t *h = in_handle();
    int sb = 4096, acks = 0, got = 0;
    (void)st;

    /* A small send buffer on the successor's side fills quickly. */
    assert_int_equal(setsockopt(lib_in, SOL_SOCKET, SO_SNDBUF, &sb, sizeof sb), 0);
    /* ... while the test's own batches all fit without a reader. */
    sb = 2 * 1024 * 1024;
    assert_int_equal(setsockopt(test_out, SOL_SOCKET, SO_SNDBUF, &sb, sizeof sb), 0);
    for (int i = 0; i < N; i++) {
        conn_pair(&app[i], &client[i]);
        size_t n = build_batch(buf, (uint32_t)i + 1, 1, NULL);
        assert_int_equal(send_fds(test_out, buf, n, &app[i], 1), 0);
        close(app[i]);
    }
    for (int round = 0; round < 200 && got < N; round++) {
        pump_wait(h, &s, 20);
        while (handoff_adopt(h, &ad) == 1) {
            check_serves(ad.fd, client[got]);
            close(ad.fd);
            handoff_conn_end(h);
            got++;
        }
        if (round == 0)
            assert_true(got < N); /* it stopped: acknowledgements did not fit */
        struct hf_mig_ack ack;
        unsigned char a[HF_MIG_ACK_MAX];
        ssize_t an;
        while ((an = recv(test_out, a, sizeof a, MSG_DONTWAIT)) > 0) {
            assert_int_equal(handoff__mig_ack_parse(a, (size_t)an, &ack), 0);
            assert_int_equal(ack.seq, (uint32_t)acks + 1);
            acks++;
        }
    }
    assert_int_equal(got, N);
    assert_int_equal(acks, N);
    for (int i = 0; i < N; i++)
        close(client[i]);
    close(test_out);
    free_handle(h);
}

/* A stopping successor refuses everything. */
static void test_adopt_stopping(void **st)
{
    static unsigned char buf[256];
    int app, client;
    struct seen s = {0};
    struct hf_mig_ack ack;
    handoff_adopted ad;
    handoff_t *h = in_handle();
    (void)st;

    conn_pair(&app, &client);
    assert_int_equal(handoff_shutdown(h, 1), 0);
    pump(h, &s);
    assert_int_equal(s.stop, 1);
    size_t n = build_batch(buf, 1, 1, NULL);
    assert_int_equal(send_fds(test_out, buf, n, &app, 1), 0);
    /* The application no longer calls handoff_next_event() after STOP,
     * but if it does, nothing is adopted. */
    pump_wait(h, &s, 5000);
    recv_ack(test_out, &ack);
    assert_int_equal(ack.received, 1);
    assert_int_equal(ack.bits[0], 0);
    assert_int_equal(handoff_adopt(h, &ad), 0);
    close(app);
    close(client);
    close(test_out);
    free_handle(h);
}

/* ------------------------------------------------------------------------ */
/* Both ends in one handle: the whole round trip, from several threads      */

struct worker {
    handoff_t *h;
    int first, n;
    int *app;
    atomic_int *done;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = w->first; i < w->first + w->n; i++) {
        int r;
        while ((r = handoff_migrate(w->h, w->app[i], &i, sizeof i)) == -ENOBUFS)
            usleep(1000);
        assert_int_equal(r, 0);
        handoff_conn_end(w->h);
    }
    atomic_fetch_add(w->done, 1);
    return NULL;
}

static void test_loopback_threads(void **st)
{
    enum { T = 4, PER = 250, N = T * PER };
    static int app[N], client[N], seen_k[N];
    pthread_t th[T];
    struct worker w[T];
    atomic_int done = 0;
    struct seen s = {0};
    handoff_adopted ad;
    int lib_o, lib_i, got = 0, base = count_fds();
    handoff_t *h = new_handle(HANDOFF_MIGRATE, 0);
    uint64_t t0;
    (void)st;

    {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        lib_o = sv[0];
        lib_i = sv[1];
    }
    assert_int_equal(attach_out(h, lib_o, getpid()), 0);
    assert_int_equal(handoff__mig_attach_in(h, lib_i, getpid()), 0);
    for (int i = 0; i < N; i++) {
        conn_pair(&app[i], &client[i]);
        handoff_conn_begin(h); /* accepted */
    }
    for (int t = 0; t < T; t++) {
        w[t] = (struct worker){.h = h, .first = t * PER, .n = PER, .app = app, .done = &done};
        assert_int_equal(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
    }
    t0 = handoff_now_usec();
    while (got < N && handoff_now_usec() - t0 < 10 * HANDOFF_USEC_PER_SEC) {
        pump_wait(h, &s, 10);
        while (handoff_adopt(h, &ad) == 1) {
            int k;
            assert_int_equal(ad.returned, 0);
            assert_int_equal(ad.len, sizeof k);
            memcpy(&k, ad.state, sizeof k);
            assert_true(k >= 0 && k < N);
            assert_int_equal(seen_k[k], 0);
            seen_k[k] = 1;
            check_serves(ad.fd, client[k]);
            close(ad.fd);
            handoff_conn_end(h);
            got++;
        }
    }
    for (int t = 0; t < T; t++)
        pthread_join(th[t], NULL);
    assert_int_equal(got, N);
    pump_wait(h, &s, 10);
    assert_int_equal(handoff_conn_count(h), 0);
    for (int i = 0; i < N; i++)
        close(client[i]);
    free_handle(h);
    assert_int_equal(count_fds(), base);
}

/* handoff_free() closes everything the library holds, in both roles. */
static void test_free_closes_all(void **st)
{
    static unsigned char buf[4096];
    int app[4], client[4], lib, test, base = count_fds();
    struct seen s = {0};
    handoff_t *h = in_handle();
    (void)st;

    chan_pair(&lib, &test);
    assert_int_equal(attach_out(h, lib, getpid() + 1), 0);
    for (int i = 0; i < 4; i++)
        conn_pair(&app[i], &client[i]);
    /* two adopted but never taken, two handed on but never acknowledged */
    size_t n = build_batch(buf, 1, 2, NULL);
    assert_int_equal(send_fds(test_out, buf, n, app, 2), 0);
    close(app[0]);
    close(app[1]);
    pump_wait(h, &s, 5000);
    assert_int_equal(s.adopt, 1);
    assert_int_equal(handoff_migrate(h, app[2], "x", 1), 0);
    assert_int_equal(handoff_migrate(h, app[3], "y", 1), 0);
    pump(h, &s);
    free_handle(h);
    close(test_out);
    close(test);
    /* Every connection is closed now (the test holds no other copy). */
    for (int i = 0; i < 4; i++) {
        char c;
        assert_int_equal(read(client[i], &c, 1), 0);
        close(client[i]);
    }
    assert_int_equal(count_fds(), base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_wire_header, teardown),
        cmocka_unit_test_teardown(test_wire_batch, teardown),
        cmocka_unit_test_teardown(test_wire_ack, teardown),
        cmocka_unit_test_teardown(test_wire_caps, teardown),
        cmocka_unit_test_teardown(test_wire_ready, teardown),
        cmocka_unit_test_teardown(test_migrate_errors, teardown),
        cmocka_unit_test_teardown(test_migrate_batches, teardown),
        cmocka_unit_test_teardown(test_migrate_message_size, teardown),
        cmocka_unit_test_teardown(test_migrate_slow_successor, teardown),
        cmocka_unit_test_teardown(test_migrate_successor_gone, teardown),
        cmocka_unit_test_teardown(test_migrate_bad_ack, teardown),
        cmocka_unit_test_teardown(test_migrate_ack_timeout, teardown),
        cmocka_unit_test_teardown(test_migrate_ack_wrong_pid, teardown),
        cmocka_unit_test_teardown(test_migrate_stop_waits, teardown),
        cmocka_unit_test_teardown(test_stop_waits_for_predecessor, teardown),
        cmocka_unit_test_teardown(test_adopt_validates, teardown),
        cmocka_unit_test_teardown(test_adopt_malformed, teardown),
        cmocka_unit_test_teardown(test_adopt_fd_limit, teardown),
        cmocka_unit_test_teardown(test_adopt_ack_fails, teardown),
        cmocka_unit_test_teardown(test_adopt_ack_backpressure, teardown),
        cmocka_unit_test_teardown(test_adopt_stopping, teardown),
        cmocka_unit_test_teardown(test_loopback_threads, teardown),
        cmocka_unit_test_teardown(test_free_closes_all, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * proto.c - the broker's datagrams.
 *
 * The shim sends one request from its own autobound AF_UNIX datagram
 * socket to the broker's abstract address; the kernel attaches the
 * sender's credentials (the broker sets SO_PASSCRED), so the pid the
 * broker authorises is the kernel's, not a claim. The broker answers with
 * one reply, and the socket in SCM_RIGHTS when status is 0.
 *
 * Both sides run on the same host and the same build, but the layout is
 * still fixed (explicit offsets, no struct copied whole): a supervisor and
 * a shim of different versions must fail cleanly on the magic and version,
 * never misread each other.
 *
 * Request (PL_REQ_SIZE = 168 bytes):
 *   0 magic "HPL1"  4 u16 version  6 u16 op  8 u32 flags  12 i32 type
 *   16 i32 protocol  20 i32 v6only  24 i32 ifindex  28 u32 addrlen
 *   32..143 sockaddr (112 bytes)  144 u64 dev  152 u64 ino (a unix
 *   socket file's identity, 0 unknown)  160 u64 mask (READY)
 *   [host byte order throughout; a READY request has no address]
 * Reply (PL_REP_SIZE = 216 bytes):
 *   0 magic "HPL1"  4 u16 version  6 u16 zero  8 i32 status  12 i32 index
 *   16..215 message, NUL-terminated
 */
#include "preload.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#define VERSION 1
static const uint8_t MAGIC[4] = {'H', 'P', 'L', '1'};
#define ADDR_MAX 112

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void put16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}

static uint16_t get16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* Layout of a request. */
enum {
    RQ_MAGIC = 0, RQ_VERSION = 4, RQ_OP = 6, RQ_FLAGS = 8, RQ_TYPE = 12, RQ_PROTO = 16,
    RQ_V6ONLY = 20, RQ_IFINDEX = 24, RQ_ADDRLEN = 28, RQ_ADDR = 32, RQ_DEV = RQ_ADDR + ADDR_MAX,
    RQ_INO = RQ_DEV + 8, RQ_MASK = RQ_INO + 8, RQ_END = RQ_MASK + 8
};
_Static_assert(RQ_END == PL_REQ_SIZE, "request layout");

int pl_req_encode(const struct pl_req *r, uint8_t *buf, size_t len)
{
    uint8_t addr[ADDR_MAX];
    int alen;

    if (len < PL_REQ_SIZE)
        return -ENOSPC;
    alen = r->op == PL_OP_READY ? 0 : pl_sock_to_addr(&r->sock, addr, sizeof addr);
    if (alen < 0)
        return -EINVAL;
    memset(buf, 0, PL_REQ_SIZE);
    memcpy(buf + RQ_MAGIC, MAGIC, 4);
    put16(buf + RQ_VERSION, VERSION);
    put16(buf + RQ_OP, (uint16_t)r->op);
    put32(buf + RQ_FLAGS, r->flags);
    put32(buf + RQ_TYPE, (uint32_t)r->sock.type);
    put32(buf + RQ_PROTO, (uint32_t)r->sock.protocol);
    put32(buf + RQ_V6ONLY, (uint32_t)r->sock.v6only);
    put32(buf + RQ_IFINDEX, (uint32_t)r->sock.ifindex);
    put32(buf + RQ_ADDRLEN, (uint32_t)alen);
    memcpy(buf + RQ_ADDR, addr, (size_t)alen);
    memcpy(buf + RQ_DEV, &r->sock.dev, 8);
    memcpy(buf + RQ_INO, &r->sock.ino, 8);
    memcpy(buf + RQ_MASK, &r->mask, 8);
    return PL_REQ_SIZE;
}

int pl_req_decode(const uint8_t *buf, size_t len, struct pl_req *r)
{
    uint32_t alen, type, v6only;
    int32_t proto, ifindex;

    if (len != PL_REQ_SIZE || memcmp(buf + RQ_MAGIC, MAGIC, 4) != 0 || get16(buf + RQ_VERSION) != VERSION)
        return -EINVAL;
    memset(r, 0, sizeof *r);
    r->op = get16(buf + RQ_OP);
    r->flags = get32(buf + RQ_FLAGS);
    type = get32(buf + RQ_TYPE);
    proto = (int32_t)get32(buf + RQ_PROTO);
    v6only = get32(buf + RQ_V6ONLY);
    ifindex = (int32_t)get32(buf + RQ_IFINDEX);
    alen = get32(buf + RQ_ADDRLEN);
    memcpy(&r->mask, buf + RQ_MASK, 8);
    if (r->op == PL_OP_READY)
        return r->flags == 0 && alen == 0 && r->mask ? 0 : -EINVAL;
    if (r->op != PL_OP_BIND || (r->flags & ~PL_REQ_REUSEPORT) || alen > ADDR_MAX || v6only > 1 ||
        proto < 0 || ifindex < 0 ||
        (type != SOCK_STREAM && type != SOCK_DGRAM && type != SOCK_SEQPACKET))
        return -EINVAL;
    if (pl_sock_from_addr(&r->sock, buf + RQ_ADDR, alen) < 0)
        return -EINVAL;
    r->sock.type = (int)type;
    r->sock.protocol = proto;
    r->sock.v6only = (int)v6only;
    r->sock.ifindex = ifindex;
    memcpy(&r->sock.dev, buf + RQ_DEV, 8);
    memcpy(&r->sock.ino, buf + RQ_INO, 8);
    return 0;
}

enum { RP_MAGIC = 0, RP_VERSION = 4, RP_STATUS = 8, RP_INDEX = 12, RP_MSG = 16, RP_END = RP_MSG + PL_REP_MSG };
_Static_assert(RP_END == PL_REP_SIZE, "reply layout");

int pl_rep_encode(const struct pl_rep *r, uint8_t *buf, size_t len)
{
    size_t m = strnlen(r->msg, PL_REP_MSG - 1);

    if (len < PL_REP_SIZE)
        return -ENOSPC;
    memset(buf, 0, PL_REP_SIZE);
    memcpy(buf + RP_MAGIC, MAGIC, 4);
    put16(buf + RP_VERSION, VERSION);
    put32(buf + RP_STATUS, (uint32_t)r->status);
    put32(buf + RP_INDEX, (uint32_t)r->index);
    memcpy(buf + RP_MSG, r->msg, m);
    return PL_REP_SIZE;
}

int pl_rep_decode(const uint8_t *buf, size_t len, struct pl_rep *r)
{
    int32_t status, index;

    if (len != PL_REP_SIZE || memcmp(buf + RP_MAGIC, MAGIC, 4) != 0 || get16(buf + RP_VERSION) != VERSION ||
        get16(buf + RP_VERSION + 2) != 0)
        return -EINVAL;
    status = (int32_t)get32(buf + RP_STATUS);
    index = (int32_t)get32(buf + RP_INDEX);
    /* An errno is small and positive; the message must be terminated. */
    if (status < 0 || status > 4095 || index < -1 || index >= PL_MAX_HELD ||
        !memchr(buf + RP_MSG, '\0', PL_REP_MSG))
        return -EINVAL;
    r->status = status;
    r->index = index;
    memcpy(r->msg, buf + RP_MSG, PL_REP_MSG);
    return 0;
}

/* fdinfo: fields are separated by blanks; numbers are decimal (tfd) and
 * hexadecimal (events, data), as fs/eventpoll.c prints them. */
static const char *skip_blanks(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

static const char *field(const char *p, const char *end, const char *name)
{
    size_t n = strlen(name);
    p = skip_blanks(p, end);
    if ((size_t)(end - p) < n || memcmp(p, name, n) != 0)
        return NULL;
    return skip_blanks(p + n, end);
}

static const char *number(const char *p, const char *end, int base, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    const char *s = p;

    for (; p < end; p++) {
        unsigned d;
        if (*p >= '0' && *p <= '9')
            d = (unsigned)(*p - '0');
        else if (base == 16 && *p >= 'a' && *p <= 'f')
            d = (unsigned)(*p - 'a' + 10);
        else
            break;
        if (v > (max - d) / (unsigned)base)
            return NULL;
        v = v * (unsigned)base + d;
    }
    if (p == s)
        return NULL;
    *out = v;
    return p;
}

int pl_fdinfo_epoll_line(const char *line, size_t len, int *tfd, uint32_t *events, uint64_t *data)
{
    const char *p = line, *end = line + len;
    uint64_t t, ev, d;

    if (!(p = field(p, end, "tfd:")) || !(p = number(p, end, 10, INT32_MAX, &t)))
        return 0;
    if (!(p = field(p, end, "events:")) || !(p = number(p, end, 16, UINT32_MAX, &ev)))
        return 0;
    if (!(p = field(p, end, "data:")) || !number(p, end, 16, UINT64_MAX, &d))
        return 0;
    *tfd = (int)t;
    *events = (uint32_t)ev;
    *data = d;
    return 1;
}

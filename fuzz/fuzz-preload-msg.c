/* libFuzzer harness: the preload broker's datagrams and the other bytes
 * the shim reads (src/preload/proto.c, match.c). The first byte picks:
 *  0: a request (pl_req_decode): an accepted one encodes back to bytes
 *     that decode to the same request;
 *  1: a reply (pl_rep_decode): status and index in range, message
 *     terminated, and the same round trip;
 *  2: a line of /proc/self/fdinfo for an epoll fd (pl_fdinfo_epoll_line);
 *  3: a socket address (pl_sock_from_addr) as a bind() would pass it:
 *     formatted, converted back, and matched against a few held sockets,
 *     where a MATCH must be symmetric and an address always matches
 *     itself.
 * The rest of the input is copied into an exact-size heap buffer. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "preload.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct pl_sock held[4];
static bool held_ready;

static void make_held(void)
{
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(8080)};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons(8080)};
    uint8_t un[110] = {AF_UNIX, 0, '/', 'r', 'u', 'n', '/', 'a'};

    held[0].type = held[1].type = held[2].type = held[3].type = SOCK_STREAM;
    (void)pl_sock_from_addr(&held[0], &in, sizeof in);
    (void)pl_sock_from_addr(&held[1], &in6, sizeof in6);
    held[1].v6only = 1;
    (void)pl_sock_from_addr(&held[2], un, 9);
    un[2] = '\0';
    (void)pl_sock_from_addr(&held[3], un, 8);
    held_ready = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *p, buf[512];
    size_t n;

    if (size < 1)
        return 0;
    n = size - 1;
    p = malloc(n ? n : 1);
    if (!p)
        return 0;
    memcpy(p, data + 1, n);
    switch (data[0] & 3) {
    case 0: {
        struct pl_req a, b;
        if (pl_req_decode(p, n, &a) == 0) {
            if (pl_req_encode(&a, buf, sizeof buf) != PL_REQ_SIZE || pl_req_decode(buf, PL_REQ_SIZE, &b) != 0 ||
                a.op != b.op || a.flags != b.flags || a.mask != b.mask)
                abort();
            if (a.op == PL_OP_BIND && pl_match(&a.sock, 1, &b.sock, NULL, NULL) != PL_MATCH &&
                !(a.sock.family != AF_UNIX && a.sock.port == 0) && a.sock.ukind != PL_UNIX_UNNAMED)
                abort();
        }
        break;
    }
    case 1: {
        struct pl_rep a, b;
        if (pl_rep_decode(p, n, &a) == 0) {
            if (a.status < 0 || a.index < -1 || a.index >= PL_MAX_HELD || !memchr(a.msg, '\0', sizeof a.msg))
                abort();
            if (pl_rep_encode(&a, buf, sizeof buf) != PL_REP_SIZE || pl_rep_decode(buf, PL_REP_SIZE, &b) != 0 ||
                a.status != b.status || a.index != b.index || strcmp(a.msg, b.msg))
                abort();
        }
        break;
    }
    case 2: {
        int tfd;
        uint32_t ev;
        uint64_t d;
        if (pl_fdinfo_epoll_line((const char *)p, n, &tfd, &ev, &d) == 1 && tfd < 0)
            abort();
        break;
    }
    default: {
        struct pl_sock s, t;
        char f[300];
        size_t idx;
        if (!held_ready)
            make_held();
        memset(&s, 0, sizeof s);
        s.type = n && (p[0] & 1) ? SOCK_DGRAM : SOCK_STREAM;
        s.v6only = n && (p[0] & 2) ? 1 : 0;
        if (pl_sock_from_addr(&s, p, n) < 0)
            break;
        if (pl_sock_format(&s, f, sizeof f) >= sizeof f)
            abort();
        int alen = pl_sock_to_addr(&s, buf, sizeof buf);
        memset(&t, 0, sizeof t);
        t.type = s.type;
        t.v6only = s.v6only;
        if (alen < 0 || pl_sock_from_addr(&t, buf, (size_t)alen) < 0)
            abort();
        bool named = s.family == AF_UNIX ? s.ukind != PL_UNIX_UNNAMED : s.port != 0;
        if (named && pl_match(&s, 1, &t, &idx, NULL) != PL_MATCH)
            abort();
        for (size_t i = 0; i < 4; i++)
            if ((pl_match(&held[i], 1, &s, NULL, NULL) == PL_MATCH) !=
                (pl_match(&s, 1, &held[i], NULL, NULL) == PL_MATCH))
                abort();
        (void)pl_match(held, 4, &s, &idx, NULL);
        break;
    }
    }
    free(p);
    return 0;
}

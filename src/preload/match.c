/*
 * match.c - is a bind() one of the supervisor's sockets?
 *
 * The shim and the supervisor's broker both ask, so the answer is one pure
 * function over normalised addresses, never over raw sockaddr bytes (a
 * raw comparison, as huptime made, is defeated by padding, sin6_flowinfo
 * or the length a server passes).
 *
 * The overlap rules follow the kernel's bind conflict check
 * (inet_csk_bind_conflict, inet_bind_conflict): two IP sockets on the same
 * port of the same protocol conflict when their address sets intersect and
 * they are not bound to two different devices. A listening socket admits
 * no conflicting bind even with SO_REUSEADDR, and the supervisor never
 * sets SO_REUSEPORT, so every overlap that is not the same socket would be
 * EADDRINUSE without handoff too. The shim reports it as such instead of
 * handing out a socket that serves more, or less, than the server asked.
 */
#include "preload.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static bool is_linklocal6(const uint8_t *a)
{
    return a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
}

int pl_sock_from_addr(struct pl_sock *s, const void *sa, size_t len)
{
    sa_family_t fam;

    if (!sa || len < sizeof fam)
        return -EINVAL;
    memcpy(&fam, sa, sizeof fam);
    s->port = 0;
    s->scope = 0;
    s->ukind = PL_UNIX_UNNAMED;
    s->namelen = 0;
    memset(s->addr, 0, sizeof s->addr);
    memset(s->name, 0, sizeof s->name);
    if (fam == AF_INET) {
        struct sockaddr_in in;
        if (len < sizeof in)
            return -EINVAL;
        memcpy(&in, sa, sizeof in);
        s->family = AF_INET;
        s->port = ntohs(in.sin_port);
        memcpy(s->addr, &in.sin_addr, 4);
        return 0;
    }
    if (fam == AF_INET6) {
        struct sockaddr_in6 in6;
        if (len < sizeof in6)
            return -EINVAL;
        memcpy(&in6, sa, sizeof in6);
        s->family = AF_INET6;
        s->port = ntohs(in6.sin6_port);
        memcpy(s->addr, &in6.sin6_addr, 16);
        /* The kernel uses the scope id of link-local addresses only. */
        s->scope = is_linklocal6(s->addr) ? in6.sin6_scope_id : 0;
        return 0;
    }
    if (fam == AF_UNIX) {
        const char *p = (const char *)sa + offsetof(struct sockaddr_un, sun_path);
        size_t n = len - offsetof(struct sockaddr_un, sun_path);
        if (len < offsetof(struct sockaddr_un, sun_path) || n > sizeof s->name)
            return -EINVAL;
        s->family = AF_UNIX;
        if (n == 0)
            return 0; /* autobind */
        if (p[0] == '\0') {
            s->ukind = PL_UNIX_ABSTRACT;
            s->namelen = (uint32_t)(n - 1);
            memcpy(s->name, p + 1, n - 1);
            return 0;
        }
        /* A path ends at its first NUL, or at len (the kernel adds one). */
        size_t k = 0;
        while (k < n && p[k])
            k++;
        if (k >= sizeof s->name)
            return -EINVAL;
        s->ukind = PL_UNIX_PATH;
        s->namelen = (uint32_t)k;
        memcpy(s->name, p, k);
        s->name[k] = '\0';
        return 0;
    }
    return -EINVAL;
}

int pl_sock_to_addr(const struct pl_sock *s, void *buf, size_t len)
{
    if (s->family == AF_INET) {
        struct sockaddr_in in;
        if (len < sizeof in)
            return -EINVAL;
        memset(&in, 0, sizeof in);
        in.sin_family = AF_INET;
        in.sin_port = htons(s->port);
        memcpy(&in.sin_addr, s->addr, 4);
        memcpy(buf, &in, sizeof in);
        return (int)sizeof in;
    }
    if (s->family == AF_INET6) {
        struct sockaddr_in6 in6;
        if (len < sizeof in6)
            return -EINVAL;
        memset(&in6, 0, sizeof in6);
        in6.sin6_family = AF_INET6;
        in6.sin6_port = htons(s->port);
        memcpy(&in6.sin6_addr, s->addr, 16);
        in6.sin6_scope_id = s->scope;
        memcpy(buf, &in6, sizeof in6);
        return (int)sizeof in6;
    }
    if (s->family == AF_UNIX) {
        size_t off = offsetof(struct sockaddr_un, sun_path), n;
        sa_family_t fam = AF_UNIX;
        if (len < sizeof(struct sockaddr_un) || s->namelen > sizeof s->name - 1)
            return -EINVAL;
        memset(buf, 0, sizeof(struct sockaddr_un));
        memcpy(buf, &fam, sizeof fam);
        if (s->ukind == PL_UNIX_ABSTRACT) {
            memcpy((char *)buf + off + 1, s->name, s->namelen);
            n = off + 1 + s->namelen;
        } else if (s->ukind == PL_UNIX_PATH) {
            memcpy((char *)buf + off, s->name, s->namelen);
            n = off + s->namelen + 1;
        } else {
            n = off;
        }
        return (int)n;
    }
    return -EINVAL;
}

/* The port space: TCP, UDP, SCTP, ... (IPPROTO_*), from the protocol or,
 * when it is 0, from the type. */
static int port_space(const struct pl_sock *s)
{
    if (s->protocol)
        return s->protocol;
    if (s->type == SOCK_DGRAM)
        return IPPROTO_UDP;
    return IPPROTO_TCP;
}

/* The IPv4 address an IP socket covers: 1 with *a set (or *any for the
 * wildcard), 0 if it receives no IPv4 at all. */
static int v4_cover(const struct pl_sock *s, uint32_t *a, bool *any)
{
    *any = false;
    if (s->family == AF_INET) {
        memcpy(a, s->addr, 4);
        *any = *a == 0;
        return 1;
    }
    if (all_zero(s->addr, 16)) { /* [::] */
        *any = true;
        return s->v6only ? 0 : 1;
    }
    if (memcmp(s->addr, v4mapped_prefix, 12) == 0) {
        memcpy(a, s->addr + 12, 4);
        *any = *a == 0;
        return 1;
    }
    return 0;
}

/* The IPv6 (non-mapped) address an AF_INET6 socket covers. */
static int v6_cover(const struct pl_sock *s, bool *any)
{
    *any = false;
    if (s->family != AF_INET6)
        return 0;
    if (all_zero(s->addr, 16)) {
        *any = true;
        return 1;
    }
    return memcmp(s->addr, v4mapped_prefix, 12) == 0 ? 0 : 1;
}

static bool ip_overlap(const struct pl_sock *h, const struct pl_sock *r)
{
    uint32_t ha = 0, ra = 0;
    bool hany, rany;

    if (v4_cover(h, &ha, &hany) && v4_cover(r, &ra, &rany) && (hany || rany || ha == ra))
        return true;
    if (v6_cover(h, &hany) && v6_cover(r, &rany)) {
        if (hany || rany)
            return true;
        return memcmp(h->addr, r->addr, 16) == 0 && h->scope == r->scope;
    }
    return false;
}

static int classify_ip(const struct pl_sock *h, const struct pl_sock *r, int *reason)
{
    if (r->port == 0 || h->port != r->port || port_space(h) != port_space(r))
        return PL_NONE;
    /* Bound to two different devices: no conflict (the kernel's rule). */
    if (h->ifindex && r->ifindex && h->ifindex != r->ifindex)
        return PL_NONE;
    if (!ip_overlap(h, r))
        return PL_NONE;
    if (h->family == r->family && memcmp(h->addr, r->addr, 16) == 0 && h->scope == r->scope) {
        if (h->ifindex != r->ifindex) {
            *reason = PL_R_DEVICE;
            return PL_CONFLICT;
        }
        if (h->family == AF_INET6 && all_zero(h->addr, 16) && !h->v6only != !r->v6only) {
            *reason = PL_R_V6ONLY;
            return PL_CONFLICT;
        }
        if (h->type != r->type) {
            *reason = PL_R_TYPE;
            return PL_CONFLICT;
        }
        return PL_MATCH;
    }
    if (h->family == r->family) {
        *reason = PL_R_OVERLAP;
    } else {
        /* IPv4 against IPv6: either a dual-stack [::] or a mapped address. */
        const struct pl_sock *six = h->family == AF_INET6 ? h : r;
        *reason = all_zero(six->addr, 16) ? PL_R_DUALSTACK : PL_R_MAPPED;
    }
    return PL_CONFLICT;
}

static int classify_unix(const struct pl_sock *h, const struct pl_sock *r, int *reason)
{
    bool same;

    if (r->ukind == PL_UNIX_UNNAMED || h->ukind != r->ukind)
        return PL_NONE;
    if (h->ukind == PL_UNIX_ABSTRACT)
        same = h->namelen == r->namelen && memcmp(h->name, r->name, h->namelen) == 0;
    else
        same = (h->namelen == r->namelen && memcmp(h->name, r->name, h->namelen) == 0) ||
               (h->ino && r->ino && h->dev == r->dev && h->ino == r->ino);
    if (!same)
        return PL_NONE;
    if (h->type != r->type) {
        *reason = PL_R_TYPE;
        return PL_CONFLICT;
    }
    return PL_MATCH;
}

int pl_match(const struct pl_sock *held, size_t n, const struct pl_sock *req, size_t *index,
             int *reason)
{
    size_t conflict = n;
    int first_why = PL_R_NONE;

    if (reason)
        *reason = PL_R_NONE;
    for (size_t i = 0; i < n; i++) {
        const struct pl_sock *h = &held[i];
        int v = PL_NONE, why = PL_R_NONE;
        bool hip = h->family == AF_INET || h->family == AF_INET6;
        bool rip = req->family == AF_INET || req->family == AF_INET6;

        if (hip && rip)
            v = classify_ip(h, req, &why);
        else if (h->family == AF_UNIX && req->family == AF_UNIX)
            v = classify_unix(h, req, &why);
        if (v == PL_MATCH) {
            if (index)
                *index = i;
            return PL_MATCH;
        }
        if (v == PL_CONFLICT && conflict == n) {
            conflict = i;
            first_why = why;
        }
    }
    if (conflict < n) {
        if (index)
            *index = conflict;
        if (reason)
            *reason = first_why;
        return PL_CONFLICT;
    }
    return PL_NONE;
}

const char *pl_reason_text(int reason)
{
    switch (reason) {
    case PL_R_OVERLAP:
        return "a wildcard and a specific address on the same port overlap";
    case PL_R_V6ONLY:
        return "the IPV6_V6ONLY settings differ (one socket would serve IPv4 too, the other not)";
    case PL_R_DUALSTACK:
        return "a dual-stack [::] socket already receives the IPv4 connections of that port";
    case PL_R_MAPPED:
        return "an IPv4-mapped IPv6 address and an IPv4 socket are the same address";
    case PL_R_TYPE:
        return "the socket types differ";
    case PL_R_DEVICE:
        return "the SO_BINDTODEVICE settings differ";
    default:
        return "no conflict";
    }
}

size_t pl_sock_format(const struct pl_sock *s, char *buf, size_t len)
{
    size_t n = 0;
    int r;

#define PUT(...)                                                                                     \
    do {                                                                                             \
        r = snprintf(buf + n, n < len ? len - n : 0, __VA_ARGS__);                                  \
        if (r > 0)                                                                                   \
            n += (size_t)r;                                                                          \
    } while (0)

    if (len == 0)
        return 0;
    buf[0] = '\0';
    if (s->family == AF_INET) {
        PUT("%u.%u.%u.%u:%u", s->addr[0], s->addr[1], s->addr[2], s->addr[3], s->port);
    } else if (s->family == AF_INET6) {
        char a[INET6_ADDRSTRLEN];
        if (!inet_ntop(AF_INET6, s->addr, a, sizeof a))
            (void)snprintf(a, sizeof a, "?");
        PUT("[%s", a);
        if (s->scope)
            PUT("%%%u", s->scope);
        PUT("]:%u", s->port);
    } else if (s->family == AF_UNIX) {
        if (s->ukind == PL_UNIX_PATH) {
            PUT("unix:%s", s->name);
        } else if (s->ukind == PL_UNIX_ABSTRACT) {
            PUT("unix:@");
            for (uint32_t i = 0; i < s->namelen && i < sizeof s->name; i++) {
                unsigned char c = (unsigned char)s->name[i];
                if (c >= 0x20 && c < 0x7f && c != '\\')
                    PUT("%c", c);
                else
                    PUT("\\x%02x", c);
            }
        } else {
            PUT("unix:(unnamed)");
        }
    } else {
        PUT("(family %d)", s->family);
    }
    if (s->family == AF_INET || s->family == AF_INET6) {
        int sp = port_space(s);
        if (sp == IPPROTO_UDP)
            PUT("/udp");
        else if (sp != IPPROTO_TCP)
            PUT("/proto%d", sp);
    } else if (s->family == AF_UNIX && s->type == SOCK_DGRAM) {
        PUT("/dgram");
    } else if (s->family == AF_UNIX && s->type == SOCK_SEQPACKET) {
        PUT("/seqpacket");
    }
#undef PUT
    return n < len ? n : len - 1;
}

/*
 * addr.c - the address-spec parser and formatter. Pure functions: no
 * system call, no allocation, so they are easy to fuzz (fuzz/fuzz-addr.c).
 */
#include "handoff.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

/* The sentence goes to handoff_errmsg(NULL) and, for callers of the
 * older style, to errbuf. */
static int addr_err(char *errbuf, size_t errlen, const char *spec,
                    const char *why)
{
    (void)handoff__fail(NULL, -EINVAL, "bad address \"%.200s\": %s", spec, why);
    if (errbuf && errlen)
        (void)snprintf(errbuf, errlen, "%s", handoff_errmsg(NULL));
    return -EINVAL;
}

static int parse_port(const char *s, size_t len, uint16_t *out)
{
    unsigned long v = 0;

    if (len == 0 || len > 5)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

static int parse_unix(const char *spec, const char *path, handoff_addr *out,
                      char *errbuf, size_t errlen)
{
    struct sockaddr_un *sun = (struct sockaddr_un *)(void *)out->sa.raw;
    size_t len = strlen(path);

    if (len == 0 || (path[0] == '@' && len == 1))
        return addr_err(errbuf, errlen, spec, "empty unix socket path");
    if (len >= sizeof sun->sun_path)
        return addr_err(errbuf, errlen, spec, "unix socket path too long (max 107 bytes)");
    if (path[0] != '/' && path[0] != '@' && path[0] != '.')
        return addr_err(errbuf, errlen, spec, "unix socket path must be absolute, start with ./ or be @abstract");
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)path[i] < 0x20)
            return addr_err(errbuf, errlen, spec, "control character in unix socket path");
    out->kind = HANDOFF_ADDR_UNIX;
    out->family = AF_UNIX;
    out->socktype = SOCK_STREAM;
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, len);
    if (path[0] == '@') {
        /* Abstract namespace: leading NUL, length counts exactly the name
         * (no trailing NUL), as the kernel and systemd do. */
        sun->sun_path[0] = '\0';
        out->len = (uint32_t)(offsetof(struct sockaddr_un, sun_path) + len);
    } else {
        out->len = (uint32_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    }
    return 0;
}

int handoff_addr_parse(const char *spec, handoff_addr *out, char *errbuf,
                       size_t errlen)
{
    const char *s, *host, *colon;
    size_t hostlen;
    int kind = HANDOFF_ADDR_TCP, want_family = 0;
    uint16_t port;
    char hostbuf[64];

    if (!out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    if (!spec)
        return addr_err(errbuf, errlen, "(null)", "no address given");
    if (strlen(spec) > 512)
        return addr_err(errbuf, errlen, spec, "too long");
    s = spec;
    if (strncmp(s, "unix:", 5) == 0)
        return parse_unix(spec, s + 5, out, errbuf, errlen);
    if (s[0] == '/' || s[0] == '@')
        return parse_unix(spec, s, out, errbuf, errlen);
    if (strncmp(s, "tcp://", 6) == 0) {
        s += 6;
    } else if (strncmp(s, "tcp4://", 7) == 0) {
        s += 7;
        want_family = AF_INET;
    } else if (strncmp(s, "tcp6://", 7) == 0) {
        s += 7;
        want_family = AF_INET6;
    } else if (strncmp(s, "udp://", 6) == 0) {
        s += 6;
        kind = HANDOFF_ADDR_UDP;
    } else if (strncmp(s, "udp4://", 7) == 0) {
        s += 7;
        kind = HANDOFF_ADDR_UDP;
        want_family = AF_INET;
    } else if (strncmp(s, "udp6://", 7) == 0) {
        s += 7;
        kind = HANDOFF_ADDR_UDP;
        want_family = AF_INET6;
    } else if (strstr(s, "://")) {
        return addr_err(errbuf, errlen, spec, "unknown scheme (use tcp://, udp://, unix:)");
    }

    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end)
            return addr_err(errbuf, errlen, spec, "missing ']' after IPv6 address");
        host = s + 1;
        hostlen = (size_t)(end - host);
        if (end[1] != ':')
            return addr_err(errbuf, errlen, spec, "expected ':PORT' after ']'");
        colon = end + 1;
        if (want_family == AF_INET)
            return addr_err(errbuf, errlen, spec, "IPv6 address with tcp4/udp4");
        want_family = AF_INET6;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return addr_err(errbuf, errlen, spec, "expected HOST:PORT");
        host = s;
        hostlen = (size_t)(colon - s);
        if (memchr(host, ':', hostlen))
            return addr_err(errbuf, errlen, spec, "IPv6 addresses must be written in brackets: [::1]:80");
    }
    if (parse_port(colon + 1, strlen(colon + 1), &port) < 0)
        return addr_err(errbuf, errlen, spec, "port must be a number from 0 to 65535");
    if (hostlen >= sizeof hostbuf)
        return addr_err(errbuf, errlen, spec, "host too long");
    memcpy(hostbuf, host, hostlen);
    hostbuf[hostlen] = '\0';

    out->kind = kind;
    out->socktype = kind == HANDOFF_ADDR_UDP ? SOCK_DGRAM : SOCK_STREAM;
    if (want_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)(void *)out->sa.raw;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        if (hostlen == 0 || strcmp(hostbuf, "*") == 0)
            sin6->sin6_addr = in6addr_any;
        else if (inet_pton(AF_INET6, hostbuf, &sin6->sin6_addr) != 1)
            return addr_err(errbuf, errlen, spec, "invalid IPv6 address");
        out->family = AF_INET6;
        out->len = sizeof *sin6;
        return 0;
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)(void *)out->sa.raw;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    if (hostlen == 0 || strcmp(hostbuf, "*") == 0)
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (strcmp(hostbuf, "localhost") == 0)
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, hostbuf, &sin->sin_addr) != 1)
        return addr_err(errbuf, errlen, spec,
                        "invalid IPv4 address (host names are not resolved)");
    out->family = AF_INET;
    out->len = sizeof *sin;
    return 0;
}

static int addr_format(const handoff_addr *a, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN];
    const char *scheme;
    int n;

    if (!a || !buf)
        return -EINVAL;
    scheme = a->kind == HANDOFF_ADDR_UDP ? "udp://" : "";
    switch (a->family) {
    case AF_INET: {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)a->sa.raw;
        if (!inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip))
            return -EINVAL;
        n = snprintf(buf, len, "%s%s:%u", scheme, ip, ntohs(sin->sin_port));
        break;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)(const void *)a->sa.raw;
        if (!inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof ip))
            return -EINVAL;
        n = snprintf(buf, len, "%s[%s]:%u", scheme, ip, ntohs(sin6->sin6_port));
        break;
    }
    case AF_UNIX: {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)(const void *)a->sa.raw;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t plen = a->len > off ? a->len - off : 0;
        if (plen > sizeof sun->sun_path)
            return -EINVAL;
        if (plen > 0 && sun->sun_path[0] == '\0')
            n = snprintf(buf, len, "unix:@%.*s", (int)(plen - 1), sun->sun_path + 1);
        else
            n = snprintf(buf, len, "unix:%.*s", (int)strnlen(sun->sun_path, plen), sun->sun_path);
        break;
    }
    default:
        return -EINVAL;
    }
    if (n < 0)
        return -EINVAL;
    if ((size_t)n >= len)
        return -ENOSPC;
    return n;
}

int handoff_addr_format(const handoff_addr *a, char *buf, size_t len)
{
    int r = addr_format(a, buf, len);
    if (r == -ENOSPC)
        return handoff__fail(NULL, r, "address format: a buffer of %zu bytes is too small", len);
    if (r < 0)
        return handoff__fail(NULL, r, "address format: not a valid address");
    return r;
}

/* Unit tests for src/preload: the matching rules (match.c), the
 * HANDOFF_PRELOAD and LD_PRELOAD parsers (env.c), the broker's datagrams
 * and the epoll fdinfo lines (proto.c), and the executable checks
 * (exe.c). The kernel's own answer is the reference for the matching
 * rules: test_kernel_agrees binds real sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "preload.h"

/* ---- helpers ---- */

static struct pl_sock ip(const char *addr, int port, int type, int v6only)
{
    struct pl_sock s;
    memset(&s, 0, sizeof s);
    s.type = type;
    s.v6only = v6only;
    if (strchr(addr, ':')) {
        struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
        char a[64];
        const char *pct = strchr(addr, '%');
        (void)snprintf(a, sizeof a, "%.*s", pct ? (int)(pct - addr) : (int)strlen(addr), addr);
        assert_int_equal(inet_pton(AF_INET6, a, &in6.sin6_addr), 1);
        if (pct)
            in6.sin6_scope_id = (uint32_t)atoi(pct + 1);
        assert_int_equal(pl_sock_from_addr(&s, &in6, sizeof in6), 0);
    } else {
        struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        assert_int_equal(inet_pton(AF_INET, addr, &in.sin_addr), 1);
        assert_int_equal(pl_sock_from_addr(&s, &in, sizeof in), 0);
    }
    return s;
}

#define TCP(a, p) ip(a, p, SOCK_STREAM, 0)
#define TCP6(a, p, v6) ip(a, p, SOCK_STREAM, v6)
#define UDP(a, p) ip(a, p, SOCK_DGRAM, 0)

static struct pl_sock ux(const char *name, int type)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    struct pl_sock s;
    size_t n = strlen(name);
    socklen_t len;

    memset(&s, 0, sizeof s);
    s.type = type;
    memcpy(sun.sun_path, name, n);
    if (name[0] == '@') {
        sun.sun_path[0] = '\0';
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    assert_int_equal(pl_sock_from_addr(&s, &sun, len), 0);
    return s;
}

static int verdict(struct pl_sock h, struct pl_sock r, int *reason)
{
    size_t idx = 99;
    int why = -1, v = pl_match(&h, 1, &r, &idx, &why);
    if (v != PL_NONE)
        assert_int_equal(idx, 0);
    if (reason)
        *reason = why;
    return v;
}

/* ---- match.c ---- */

static void test_ipv4(void **state)
{
    int why;
    (void)state;
    assert_int_equal(verdict(TCP("127.0.0.1", 8080), TCP("127.0.0.1", 8080), NULL), PL_MATCH);
    assert_int_equal(verdict(TCP("0.0.0.0", 8080), TCP("0.0.0.0", 8080), NULL), PL_MATCH);
    /* Other port, other specific address: unrelated. */
    assert_int_equal(verdict(TCP("127.0.0.1", 8080), TCP("127.0.0.1", 8081), NULL), PL_NONE);
    assert_int_equal(verdict(TCP("127.0.0.1", 8080), TCP("127.0.0.2", 8080), NULL), PL_NONE);
    /* Wildcard against specific, either way: the kernel refuses it. */
    assert_int_equal(verdict(TCP("0.0.0.0", 8080), TCP("127.0.0.1", 8080), &why), PL_CONFLICT);
    assert_int_equal(why, PL_R_OVERLAP);
    assert_int_equal(verdict(TCP("127.0.0.1", 8080), TCP("0.0.0.0", 8080), &why), PL_CONFLICT);
    assert_int_equal(why, PL_R_OVERLAP);
    /* Port 0 is never the supervisor's. */
    assert_int_equal(verdict(TCP("0.0.0.0", 8080), TCP("0.0.0.0", 0), NULL), PL_NONE);
    assert_int_equal(verdict(TCP("127.0.0.1", 8080), TCP("127.0.0.1", 0), NULL), PL_NONE);
}

static void test_ports_and_protocols(void **state)
{
    struct pl_sock sctp = TCP("127.0.0.1", 9), h;
    (void)state;
    /* TCP and UDP have separate port spaces. */
    assert_int_equal(verdict(TCP("0.0.0.0", 53), UDP("0.0.0.0", 53), NULL), PL_NONE);
    assert_int_equal(verdict(UDP("0.0.0.0", 53), UDP("0.0.0.0", 53), NULL), PL_MATCH);
    assert_int_equal(verdict(UDP("0.0.0.0", 53), UDP("127.0.0.1", 53), NULL), PL_CONFLICT);
    /* An explicit protocol equal to the default is the same space. */
    h = TCP("127.0.0.1", 9);
    h.protocol = IPPROTO_TCP;
    assert_int_equal(verdict(h, TCP("127.0.0.1", 9), NULL), PL_MATCH);
    sctp.protocol = IPPROTO_SCTP;
    assert_int_equal(verdict(TCP("127.0.0.1", 9), sctp, NULL), PL_NONE);
    assert_int_equal(verdict(TCP("127.0.0.1", 65535), TCP("127.0.0.1", 65535), NULL), PL_MATCH);
}

static void test_ipv6(void **state)
{
    int why;
    (void)state;
    assert_int_equal(verdict(TCP6("::1", 80, 0), TCP6("::1", 80, 0), NULL), PL_MATCH);
    /* V6ONLY matters only for [::]. */
    assert_int_equal(verdict(TCP6("::1", 80, 1), TCP6("::1", 80, 0), NULL), PL_MATCH);
    assert_int_equal(verdict(TCP6("::", 80, 1), TCP6("::", 80, 1), NULL), PL_MATCH);
    assert_int_equal(verdict(TCP6("::", 80, 0), TCP6("::", 80, 0), NULL), PL_MATCH);
    assert_int_equal(verdict(TCP6("::", 80, 0), TCP6("::", 80, 1), &why), PL_CONFLICT);
    assert_int_equal(why, PL_R_V6ONLY);
    assert_int_equal(verdict(TCP6("::", 80, 1), TCP6("::", 80, 0), &why), PL_CONFLICT);
    assert_int_equal(why, PL_R_V6ONLY);
    /* [::] against a specific v6 address: overlap. */
    assert_int_equal(verdict(TCP6("::", 80, 1), TCP6("::1", 80, 0), &why), PL_CONFLICT);
    assert_int_equal(why, PL_R_OVERLAP);
    assert_int_equal(verdict(TCP6("::1", 80, 0), TCP6("2001:db8::1", 80, 0), NULL), PL_NONE);
    /* Link-local: the scope id is part of the address. */
    assert_int_equal(verdict(TCP6("fe80::1%2", 80, 0), TCP6("fe80::1%2", 80, 0), NULL), PL_MATCH);
    assert_int_equal(verdict(TCP6("fe80::1%2", 80, 0), TCP6("fe80::1%3", 80, 0), NULL), PL_NONE);
    /* ... and ignored elsewhere, as the kernel ignores it. */
    assert_int_equal(verdict(TCP6("::1", 80, 0), TCP6("::1%7", 80, 0), NULL), PL_MATCH);
}

static void test_dual_stack(void **state)
{
    struct pl_sock held[2];
    size_t idx;
    int why;
    (void)state;
    /* A dual-stack [::] receives IPv4: an IPv4 bind on its port overlaps. */
    assert_int_equal(verdict(TCP6("::", 80, 0), TCP("0.0.0.0", 80), &why), PL_CONFLICT);
    assert_int_equal(why, PL_R_DUALSTACK);
    assert_int_equal(verdict(TCP6("::", 80, 0), TCP("127.0.0.1", 80), &why), PL_CONFLICT);
    assert_int_equal(why, PL_R_DUALSTACK);
    assert_int_equal(verdict(TCP("127.0.0.1", 80), TCP6("::", 80, 0), &why), PL_CONFLICT);
    assert_int_equal(why, PL_R_DUALSTACK);
    /* With V6ONLY the two families are separate. */
    assert_int_equal(verdict(TCP6("::", 80, 1), TCP("0.0.0.0", 80), NULL), PL_NONE);
    assert_int_equal(verdict(TCP("0.0.0.0", 80), TCP6("::", 80, 1), NULL), PL_NONE);
    assert_int_equal(verdict(TCP6("::1", 80, 0), TCP("0.0.0.0", 80), NULL), PL_NONE);
    /* IPv4-mapped addresses are IPv4. */
    assert_int_equal(verdict(TCP("127.0.0.1", 80), TCP6("::ffff:127.0.0.1", 80, 0), &why), PL_CONFLICT);
    assert_int_equal(why, PL_R_MAPPED);
    assert_int_equal(verdict(TCP("0.0.0.0", 80), TCP6("::ffff:127.0.0.1", 80, 0), NULL), PL_CONFLICT);
    assert_int_equal(verdict(TCP("127.0.0.2", 80), TCP6("::ffff:127.0.0.1", 80, 0), NULL), PL_NONE);
    assert_int_equal(verdict(TCP6("::ffff:127.0.0.1", 80, 0), TCP6("::ffff:127.0.0.1", 80, 0), NULL), PL_MATCH);
    /* nginx's pair (0.0.0.0 and [::] ipv6only=on) against the same pair. */
    held[0] = TCP("0.0.0.0", 80);
    held[1] = TCP6("::", 80, 1);
    assert_int_equal(pl_match(held, 2, &(struct pl_sock){0}, &idx, NULL), PL_NONE);
    struct pl_sock r4 = TCP("0.0.0.0", 80), r6 = TCP6("::", 80, 1), r6d = TCP6("::", 80, 0);
    assert_int_equal(pl_match(held, 2, &r4, &idx, NULL), PL_MATCH);
    assert_int_equal(idx, 0);
    assert_int_equal(pl_match(held, 2, &r6, &idx, NULL), PL_MATCH);
    assert_int_equal(idx, 1);
    /* ... a dual-stack [::] against that pair half-overlaps both. */
    assert_int_equal(pl_match(held, 2, &r6d, &idx, &why), PL_CONFLICT);
    /* A server binding 0.0.0.0 and [::] against one dual-stack socket:
     * the [::] matches, the 0.0.0.0 is refused (never half-served). */
    held[0] = TCP6("::", 80, 0);
    assert_int_equal(pl_match(held, 1, &r6d, &idx, NULL), PL_MATCH);
    assert_int_equal(pl_match(held, 1, &r4, &idx, &why), PL_CONFLICT);
    assert_int_equal(why, PL_R_DUALSTACK);
}

static void test_devices(void **state)
{
    struct pl_sock h = TCP("0.0.0.0", 80), r = TCP("0.0.0.0", 80);
    int why;
    (void)state;
    r.ifindex = 2;
    assert_int_equal(verdict(h, r, &why), PL_CONFLICT);
    assert_int_equal(why, PL_R_DEVICE);
    h.ifindex = 3;
    assert_int_equal(verdict(h, r, NULL), PL_NONE); /* two devices: no conflict */
    h.ifindex = 2;
    assert_int_equal(verdict(h, r, NULL), PL_MATCH);
    r = TCP("127.0.0.1", 80);
    assert_int_equal(verdict(h, r, NULL), PL_CONFLICT); /* any device overlaps */
}

static void test_unix(void **state)
{
    struct pl_sock h, r;
    int why;
    (void)state;
    assert_int_equal(verdict(ux("/run/a.sock", SOCK_STREAM), ux("/run/a.sock", SOCK_STREAM), NULL), PL_MATCH);
    assert_int_equal(verdict(ux("/run/a.sock", SOCK_STREAM), ux("/run/b.sock", SOCK_STREAM), NULL), PL_NONE);
    assert_int_equal(verdict(ux("/run/a.sock", SOCK_STREAM), ux("/run/a.sock", SOCK_DGRAM), &why), PL_CONFLICT);
    assert_int_equal(why, PL_R_TYPE);
    /* A relative path naming the same socket file (dev/ino). */
    h = ux("/run/a.sock", SOCK_STREAM);
    r = ux("a.sock", SOCK_STREAM);
    assert_int_equal(verdict(h, r, NULL), PL_NONE);
    h.dev = r.dev = 5;
    h.ino = r.ino = 77;
    assert_int_equal(verdict(h, r, NULL), PL_MATCH);
    r.ino = 78;
    assert_int_equal(verdict(h, r, NULL), PL_NONE);
    /* Abstract names: exact bytes, length included, NUL bytes allowed. */
    assert_int_equal(verdict(ux("@app", SOCK_STREAM), ux("@app", SOCK_STREAM), NULL), PL_MATCH);
    assert_int_equal(verdict(ux("@app", SOCK_STREAM), ux("@app2", SOCK_STREAM), NULL), PL_NONE);
    assert_int_equal(verdict(ux("@app", SOCK_STREAM), ux("/app", SOCK_STREAM), NULL), PL_NONE);
    h = ux("@a", SOCK_STREAM);
    r = ux("@a", SOCK_STREAM);
    r.name[1] = '\0';
    r.namelen = 2;
    assert_int_equal(verdict(h, r, NULL), PL_NONE);
    /* Autobind (no name) is never held. */
    {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        memset(&r, 0, sizeof r);
        r.type = SOCK_STREAM;
        assert_int_equal(pl_sock_from_addr(&r, &sun, sizeof(sa_family_t)), 0);
        assert_int_equal(r.ukind, PL_UNIX_UNNAMED);
        assert_int_equal(verdict(ux("@app", SOCK_STREAM), r, NULL), PL_NONE);
    }
    /* Unix against IP: unrelated. */
    assert_int_equal(verdict(ux("/run/a.sock", SOCK_STREAM), TCP("0.0.0.0", 80), NULL), PL_NONE);
}

static void test_first_match_wins(void **state)
{
    struct pl_sock held[3] = {TCP("0.0.0.0", 81), TCP("127.0.0.1", 80), ux("/x", SOCK_STREAM)};
    struct pl_sock r = TCP("127.0.0.1", 80), c = TCP("127.0.0.1", 81);
    size_t idx;
    (void)state;
    assert_int_equal(pl_match(held, 3, &r, &idx, NULL), PL_MATCH);
    assert_int_equal(idx, 1);
    assert_int_equal(pl_match(held, 3, &c, &idx, NULL), PL_CONFLICT);
    assert_int_equal(idx, 0);
    assert_int_equal(pl_match(held, 0, &r, &idx, NULL), PL_NONE);
}

static void test_sockaddr_forms(void **state)
{
    struct sockaddr_in6 in6;
    struct sockaddr_in in;
    struct pl_sock s;
    uint8_t buf[128];
    (void)state;
    /* Short lengths and unknown families are refused. */
    memset(&in, 0, sizeof in);
    in.sin_family = AF_INET;
    assert_int_equal(pl_sock_from_addr(&s, &in, sizeof in - 1), -EINVAL);
    memset(&in6, 0, sizeof in6);
    in6.sin6_family = AF_INET6;
    assert_int_equal(pl_sock_from_addr(&s, &in6, sizeof in6 - 4), -EINVAL);
    in.sin_family = AF_APPLETALK;
    assert_int_equal(pl_sock_from_addr(&s, &in, sizeof in), -EINVAL);
    assert_int_equal(pl_sock_from_addr(&s, &in, 1), -EINVAL);
    /* Padding, flowinfo and a sockaddr_storage length do not matter. */
    struct sockaddr_storage ss;
    struct pl_sock a = TCP6("::1", 443, 0), b;
    memset(&ss, 0xa5, sizeof ss);
    memset(&in6, 0, sizeof in6);
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(443);
    in6.sin6_flowinfo = htonl(12345);
    in6.sin6_addr = in6addr_loopback;
    memcpy(&ss, &in6, sizeof in6);
    memset(&b, 0, sizeof b);
    b.type = SOCK_STREAM;
    assert_int_equal(pl_sock_from_addr(&b, &ss, sizeof ss), 0);
    assert_int_equal(verdict(a, b, NULL), PL_MATCH);
    /* Round trips. */
    const struct pl_sock forms[] = {TCP("10.1.2.3", 9), TCP6("fe80::1%4", 8, 0), ux("/tmp/s", SOCK_STREAM),
                                    ux("@abs", SOCK_STREAM)};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        int n = pl_sock_to_addr(&forms[i], buf, sizeof buf);
        assert_true(n > 0);
        memset(&b, 0, sizeof b);
        b.type = forms[i].type;
        assert_int_equal(pl_sock_from_addr(&b, buf, (size_t)n), 0);
        assert_int_equal(verdict(forms[i], b, NULL), PL_MATCH);
    }
}

static void test_format(void **state)
{
    char buf[200];
    struct pl_sock s;
    (void)state;
    s = TCP("127.0.0.1", 80);
    pl_sock_format(&s, buf, sizeof buf);
    assert_string_equal(buf, "127.0.0.1:80");
    s = TCP6("::", 8080, 0);
    pl_sock_format(&s, buf, sizeof buf);
    assert_string_equal(buf, "[::]:8080");
    s = TCP6("fe80::1%3", 1, 0);
    pl_sock_format(&s, buf, sizeof buf);
    assert_string_equal(buf, "[fe80::1%3]:1");
    s = UDP("::1", 53);
    pl_sock_format(&s, buf, sizeof buf);
    assert_string_equal(buf, "[::1]:53/udp");
    s = ux("/run/x", SOCK_STREAM);
    pl_sock_format(&s, buf, sizeof buf);
    assert_string_equal(buf, "unix:/run/x");
    s = ux("@a\tb", SOCK_DGRAM);
    pl_sock_format(&s, buf, sizeof buf);
    assert_string_equal(buf, "unix:@a\\x09b/dgram");
    /* Truncation keeps a terminated string. */
    s = TCP("127.0.0.1", 80);
    assert_int_equal(pl_sock_format(&s, buf, 5), 4);
    assert_string_equal(buf, "127.");
}

/* The rules against the kernel itself: for each pair, a real socket is
 * bound and listening as the supervisor's is, and a second one binds the
 * other address. The kernel's EADDRINUSE must be what pl_match calls an
 * overlap (MATCH or CONFLICT), and success what it calls NONE. */
static int kernel_bind(struct pl_sock s, int port, bool supervisor)
{
    uint8_t buf[128];
    int fd, one = 1, n;
    s.port = (uint16_t)port;
    fd = socket(s.family, s.type | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    /* libhandoff sets SO_REUSEADDR on TCP sockets only; servers set it on
     * whatever they bind. */
    if (!supervisor || s.type == SOCK_STREAM)
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (s.family == AF_INET6)
        assert_int_equal(setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &s.v6only, sizeof s.v6only), 0);
    n = pl_sock_to_addr(&s, buf, sizeof buf);
    if (bind(fd, (struct sockaddr *)buf, (socklen_t)n) < 0) {
        int e = errno;
        (void)close(fd);
        return -e;
    }
    if (s.type == SOCK_STREAM)
        assert_int_equal(listen(fd, 1), 0);
    return fd;
}

static int free_port(void)
{
    struct sockaddr_in in = {.sin_family = AF_INET};
    socklen_t len = sizeof in;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    assert_int_equal(bind(fd, (struct sockaddr *)&in, sizeof in), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&in, &len), 0);
    port = ntohs(in.sin_port);
    (void)close(fd);
    return port;
}

static void test_kernel_agrees(void **state)
{
    const struct pl_sock addrs[] = {TCP("0.0.0.0", 1),    TCP("127.0.0.1", 1),       TCP("127.0.0.2", 1),
                                    TCP6("::", 1, 0),     TCP6("::", 1, 1),          TCP6("::1", 1, 0),
                                    TCP6("::1", 1, 1),    TCP6("::ffff:127.0.0.1", 1, 0), UDP("0.0.0.0", 1),
                                    UDP("127.0.0.1", 1)};
    size_t n = sizeof addrs / sizeof addrs[0];
    int v6 = socket(AF_INET6, SOCK_STREAM, 0);
    (void)state;
    if (v6 < 0) {
        skip();
        return;
    }
    (void)close(v6);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++) {
            int port = free_port();
            int a = kernel_bind(addrs[i], port, true), b;
            struct pl_sock h = addrs[i], r = addrs[j];
            if (a < 0)
                continue; /* e.g. no IPv6 loopback here */
            b = kernel_bind(addrs[j], port, false);
            h.port = r.port = (uint16_t)port;
            int v = verdict(h, r, NULL);
            if ((b == -EADDRINUSE) != (v != PL_NONE)) {
                char x[100], y[100];
                pl_sock_format(&h, x, sizeof x);
                pl_sock_format(&r, y, sizeof y);
                print_error("held %s v6only=%d, bind %s v6only=%d: kernel %s, pl_match %d\n", x, h.v6only, y,
                            r.v6only, b >= 0 ? "ok" : strerror(-b), v);
                fail();
            }
            if (b >= 0)
                (void)close(b);
            (void)close(a);
        }
    }
}

/* ---- env.c ---- */

static void test_env_roundtrip(void **state)
{
    struct pl_env e, f;
    char buf[8192], err[128];
    int n;
    (void)state;
    memset(&e, 0, sizeof e);
    e.depth = 2;
    e.ready = true;
    e.log = 2;
    e.stop_signal = 3;
    e.netns_dev = 4;
    e.netns_ino = 4026531840ULL;
    strcpy(e.sock, "@handoff/1/preload/abc");
    strcpy(e.lib, "/usr/lib/libhandoff-preload.so");
    e.held[0] = TCP("0.0.0.0", 8080);
    e.held[0].sino = 1234;
    e.held[1] = TCP6("::", 8080, 1);
    e.held[2] = ux("/run/a.sock", SOCK_STREAM);
    e.held[2].dev = 64769;
    e.held[2].ino = 99;
    e.held[3] = ux("@abs\x01", SOCK_DGRAM);
    e.held[4] = UDP("127.0.0.1", 53);
    e.nheld = 5;
    n = pl_env_format(&e, buf, sizeof buf);
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(buf));
    /* The pid slot comes last, PL_PID_DIGITS wide. */
    assert_memory_equal(buf + n - PL_PID_DIGITS - 4, "pid=00000000000000000000", 24);
    pl_put_pid(buf + n - PL_PID_DIGITS, 4242);
    assert_int_equal(pl_env_parse(buf, &f, err, sizeof err), 0);
    assert_int_equal(f.pid, 4242);
    assert_int_equal(f.depth, 2);
    assert_true(f.ready);
    assert_int_equal(f.log, 2);
    assert_int_equal(f.stop_signal, 3);
    assert_int_equal(f.netns_ino, e.netns_ino);
    assert_string_equal(f.sock, e.sock);
    assert_string_equal(f.lib, e.lib);
    assert_int_equal(f.nheld, 5);
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(verdict(e.held[i], f.held[i], NULL), PL_MATCH);
        assert_int_equal(f.held[i].v6only, e.held[i].v6only);
        assert_int_equal(f.held[i].ino, e.held[i].ino);
        assert_int_equal(f.held[i].sino, e.held[i].sino);
    }
    /* No room: -ENOSPC, never a partial value. */
    assert_int_equal(pl_env_format(&e, buf, 100), -ENOSPC);
    /* What the syntax cannot carry. */
    strcpy(e.lib, "/a;b");
    assert_int_equal(pl_env_format(&e, buf, sizeof buf), -EINVAL);
}

static void test_env_rejects(void **state)
{
    static const char *bad[] = {
        "",
        "v2;sock=@a;pid=1",
        "v1",
        "v1;pid=1",
        "v1;sock=@a",
        "v1;sock=a;pid=1",
        "v1;sock=@;pid=1",
        "v1;sock=@a;pid=1;pid=2",
        "v1;sock=@a;pid=-1",
        "v1;sock=@a;pid=1x",
        "v1;sock=@a;pid=99999999999999999999999",
        "v1;sock=@a;depth=65;pid=1",
        "v1;sock=@a;ready=2;pid=1",
        "v1;sock=@a;stop=65;pid=1",
        "v1;sock=@a;noequals;pid=1",
        "v1;sock=@a;lib=relative;pid=1",
        "v1;sock=@a;netns=1;pid=1",
        "v1;sock=@a;listen=1.0.0.0.0.0.0.zz;pid=1",
        "v1;sock=@a;listen=1.0.0.0.0.0.0.0200;pid=1",           /* truncated sockaddr_in */
        "v1;sock=@a;listen=1.0.0.0.0.0.0.02001f90000000000000000000000000;pid=1", /* port 8080, ok? see below */
        "v1;sock=@a;listen=9.0.0.0.0.0.0.02001f907f0000010000000000000000;pid=1",  /* type 9 */
        "v1;sock=@a;listen=1.0.2.0.0.0.0.02001f907f0000010000000000000000;pid=1",  /* v6only 2 */
        "v1;sock=@a;listen=1.0.0.0.0.0.0.020000007f0000010000000000000000;pid=1",  /* port 0 */
        "v1;sock=@a;listen=1.0.0.0.0.0.0.02001f907f0000010000000000000000,;pid=1", /* trailing comma */
        "v1;sock=@a;pid=1;",
    };
    struct pl_env e;
    char err[128];
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int r = pl_env_parse(bad[i], &e, err, sizeof err);
        /* This entry is well formed: 0.0.0.0:8080 (a sanity check of
         * its neighbours, which differ in one field). */
        if (strstr(bad[i], "02001f90000000000000")) {
            assert_int_equal(r, 0);
            assert_int_equal(e.nheld, 1);
            assert_int_equal(e.held[0].port, 8080);
            continue;
        }
        if (r != -EINVAL)
            print_error("accepted: %s\n", bad[i]);
        assert_int_equal(r, -EINVAL);
        assert_true(err[0] != '\0');
    }
    assert_int_equal(pl_env_parse(NULL, &e, NULL, 0), -EINVAL);
    /* Unknown keys are ignored (a newer supervisor). */
    assert_int_equal(pl_env_parse("v1;sock=@a;future=1;pid=7", &e, NULL, 0), 0);
    assert_int_equal(e.pid, 7);
    assert_int_equal(e.log, 1);
}

static void test_preload_lists(void **state)
{
    char buf[512];
    const char *lib = "/opt/h/lib/libhandoff-preload.so";
    (void)state;
    strcpy(buf, "/a.so /opt/h/lib/libhandoff-preload.so /b.so");
    assert_int_equal(pl_preload_strip(buf, lib), strlen("/a.so /b.so"));
    assert_string_equal(buf, "/a.so /b.so");
    strcpy(buf, "/opt/h/lib/libhandoff-preload.so");
    assert_int_equal(pl_preload_strip(buf, lib), 0);
    assert_string_equal(buf, "");
    /* Colons, repeated separators, another copy of the shim by name. */
    strcpy(buf, "::/x/libhandoff-preload.so:libasan.so.8::/y.so:");
    pl_preload_strip(buf, lib);
    assert_string_equal(buf, "libasan.so.8:/y.so");
    /* A library whose name merely ends like the shim's is kept. */
    strcpy(buf, "/x/mylibhandoff-preload.so /x/libhandoff-preload.so.1");
    pl_preload_strip(buf, lib);
    assert_string_equal(buf, "/x/mylibhandoff-preload.so /x/libhandoff-preload.so.1");
    /* Adding: the user's entries first, the shim once, last. */
    assert_int_equal(pl_preload_add(buf, sizeof buf, NULL, lib), 0);
    assert_string_equal(buf, lib);
    assert_int_equal(pl_preload_add(buf, sizeof buf, "", lib), 0);
    assert_string_equal(buf, lib);
    assert_int_equal(pl_preload_add(buf, sizeof buf, "libasan.so.8 /j.so", lib), 0);
    assert_string_equal(buf, "libasan.so.8 /j.so:/opt/h/lib/libhandoff-preload.so");
    assert_int_equal(pl_preload_add(buf, sizeof buf, "/old/libhandoff-preload.so:/j.so", lib), 0);
    assert_string_equal(buf, "/j.so:/opt/h/lib/libhandoff-preload.so");
    assert_int_equal(pl_preload_add(buf, sizeof buf, "/j.so", "/a dir/libhandoff-preload.so"), -EINVAL);
    assert_int_equal(pl_preload_add(buf, sizeof buf, "/j.so", "/a:b/libhandoff-preload.so"), -EINVAL);
    assert_int_equal(pl_preload_add(buf, sizeof buf, "/j.so", "rel/libhandoff-preload.so"), -EINVAL);
    assert_int_equal(pl_preload_add(buf, 10, "/j.so", lib), -ENOSPC);
}

/* ---- proto.c ---- */

static void test_messages(void **state)
{
    struct pl_req q = {.op = PL_OP_BIND, .flags = PL_REQ_REUSEPORT, .sock = TCP6("::", 443, 1)}, q2;
    struct pl_rep p = {.status = EADDRINUSE, .index = 3}, p2;
    uint8_t buf[512];
    (void)state;
    q.sock.ifindex = 2;
    assert_int_equal(pl_req_encode(&q, buf, sizeof buf), PL_REQ_SIZE);
    assert_int_equal(pl_req_decode(buf, PL_REQ_SIZE, &q2), 0);
    assert_int_equal(q2.flags, PL_REQ_REUSEPORT);
    assert_int_equal(q2.sock.v6only, 1);
    assert_int_equal(q2.sock.ifindex, 2);
    assert_int_equal(verdict(q.sock, q2.sock, NULL), PL_MATCH);
    /* Wrong size, magic, version, op, type, flags. */
    assert_int_equal(pl_req_decode(buf, PL_REQ_SIZE - 1, &q2), -EINVAL);
    buf[0] ^= 1;
    assert_int_equal(pl_req_decode(buf, PL_REQ_SIZE, &q2), -EINVAL);
    buf[0] ^= 1;
    buf[4] = 9;
    assert_int_equal(pl_req_decode(buf, PL_REQ_SIZE, &q2), -EINVAL);
    buf[4] = 1;
    buf[6] = 2;
    assert_int_equal(pl_req_decode(buf, PL_REQ_SIZE, &q2), -EINVAL);
    buf[6] = 1;
    buf[12] = 77;
    assert_int_equal(pl_req_decode(buf, PL_REQ_SIZE, &q2), -EINVAL);
    buf[12] = SOCK_STREAM;
    buf[9] = 1;
    assert_int_equal(pl_req_decode(buf, PL_REQ_SIZE, &q2), -EINVAL);
    buf[9] = 0;
    buf[28] = 200; /* addrlen beyond the field */
    assert_int_equal(pl_req_decode(buf, PL_REQ_SIZE, &q2), -EINVAL);

    /* READY: no address, a mask of held sockets. */
    struct pl_req r = {.op = PL_OP_READY, .mask = 5};
    assert_int_equal(pl_req_encode(&r, buf, sizeof buf), PL_REQ_SIZE);
    assert_int_equal(pl_req_decode(buf, PL_REQ_SIZE, &q2), 0);
    assert_int_equal(q2.op, PL_OP_READY);
    assert_int_equal(q2.mask, 5);
    r.mask = 0; /* ready on nothing is not a message */
    pl_req_encode(&r, buf, sizeof buf);
    assert_int_equal(pl_req_decode(buf, PL_REQ_SIZE, &q2), -EINVAL);

    strcpy(p.msg, "already bound");
    assert_int_equal(pl_rep_encode(&p, buf, sizeof buf), PL_REP_SIZE);
    assert_int_equal(pl_rep_decode(buf, PL_REP_SIZE, &p2), 0);
    assert_int_equal(p2.status, EADDRINUSE);
    assert_int_equal(p2.index, 3);
    assert_string_equal(p2.msg, "already bound");
    /* An unterminated message, a negative status, a bad index. */
    memset(buf + 16, 'x', PL_REP_MSG);
    assert_int_equal(pl_rep_decode(buf, PL_REP_SIZE, &p2), -EINVAL);
    p.status = -1;
    pl_rep_encode(&p, buf, sizeof buf);
    assert_int_equal(pl_rep_decode(buf, PL_REP_SIZE, &p2), -EINVAL);
    p.status = 0;
    p.index = PL_MAX_HELD;
    pl_rep_encode(&p, buf, sizeof buf);
    assert_int_equal(pl_rep_decode(buf, PL_REP_SIZE, &p2), -EINVAL);
    assert_int_equal(pl_rep_encode(&p, buf, 10), -ENOSPC);
}

static void test_fdinfo(void **state)
{
    int tfd;
    uint32_t ev;
    uint64_t data;
    const char *l1 = "tfd:        5 events:       19 data:                5  pos:0 ino:1e5012 sdev:9";
    const char *l2 = "tfd:       12 events: 80000019 data:       1234567890  pos:0 ino:8 sdev:9";
    (void)state;
    assert_int_equal(pl_fdinfo_epoll_line(l1, strlen(l1), &tfd, &ev, &data), 1);
    assert_int_equal(tfd, 5);
    assert_int_equal(ev, 0x19);
    assert_int_equal(data, 5);
    assert_int_equal(pl_fdinfo_epoll_line(l2, strlen(l2), &tfd, &ev, &data), 1);
    assert_int_equal(tfd, 12);
    assert_int_equal(ev, 0x80000019u);
    assert_int_equal(data, 0x1234567890ULL);
    assert_int_equal(pl_fdinfo_epoll_line("pos:\t0", 6, &tfd, &ev, &data), 0);
    assert_int_equal(pl_fdinfo_epoll_line("tfd: 5 events: zz data: 1", 25, &tfd, &ev, &data), 0);
    assert_int_equal(pl_fdinfo_epoll_line("tfd: 99999999999 events: 1 data: 1", 34, &tfd, &ev, &data), 0);
    /* The length bounds the line, not a NUL. */
    assert_int_equal(pl_fdinfo_epoll_line(l1, 20, &tfd, &ev, &data), 0);
}

/* ---- exe.c ---- */

static void test_shebang(void **state)
{
    char i[64], a[64];
    (void)state;
    assert_int_equal(pl_shebang_parse("/bin/sh\n", 8, i, sizeof i, a, sizeof a), 0);
    assert_string_equal(i, "/bin/sh");
    assert_string_equal(a, "");
    assert_int_equal(pl_shebang_parse(" /usr/bin/env  python3 -u \t\nrest", 32, i, sizeof i, a, sizeof a), 0);
    assert_string_equal(i, "/usr/bin/env");
    assert_string_equal(a, "python3 -u"); /* one argument, as the kernel passes it */
    assert_int_equal(pl_shebang_parse("   \n", 4, i, sizeof i, a, sizeof a), -ENOEXEC);
    assert_int_equal(pl_shebang_parse("", 0, i, sizeof i, a, sizeof a), -ENOEXEC);
    assert_int_equal(pl_shebang_parse("/a/very/long/interpreter", 24, i, 8, a, sizeof a), -ENOEXEC);
}

struct mem {
    const uint8_t *p;
    size_t n;
};

static long mem_read(void *ctx, uint64_t off, void *buf, size_t len)
{
    const struct mem *m = ctx;
    if (off > m->n)
        return -1;
    size_t k = m->n - off < len ? m->n - off : len;
    memcpy(buf, m->p + off, k);
    return (long)k;
}

/* A minimal ELF64 file: header, program headers, optional notes. */
static size_t make_elf(uint8_t *buf, size_t cap, bool interp, bool go_note)
{
    Elf64_Ehdr *e = (Elf64_Ehdr *)buf;
    Elf64_Phdr *ph = (Elf64_Phdr *)(buf + sizeof *e);
    size_t off = sizeof *e + 2 * sizeof *ph;
    int n = 0;

    memset(buf, 0, cap);
    memcpy(e->e_ident, ELFMAG, SELFMAG);
    e->e_ident[EI_CLASS] = ELFCLASS64;
    e->e_ident[EI_DATA] = ELFDATA2LSB;
    e->e_ident[EI_VERSION] = EV_CURRENT;
    e->e_type = ET_DYN;
    e->e_machine = EM_X86_64;
    e->e_phoff = sizeof *e;
    e->e_phentsize = sizeof *ph;
    if (interp) {
        const char *path = "/lib64/ld-linux-x86-64.so.2";
        ph[n].p_type = PT_INTERP;
        ph[n].p_offset = off;
        ph[n].p_filesz = strlen(path) + 1;
        memcpy(buf + off, path, strlen(path) + 1);
        off += 32;
        n++;
    }
    if (go_note) {
        uint32_t hdr[3] = {3, 4, 4};
        ph[n].p_type = PT_NOTE;
        ph[n].p_offset = off;
        ph[n].p_filesz = 12 + 4 + 4;
        memcpy(buf + off, hdr, 12);
        memcpy(buf + off + 12, "Go\0\0", 4);
        memcpy(buf + off + 16, "abcd", 4);
        off += 20;
        n++;
    }
    e->e_phnum = (uint16_t)n;
    return off;
}

static void test_elf(void **state)
{
    uint8_t buf[1024];
    struct pl_elf_info info;
    struct mem m = {buf, 0};
    (void)state;
    m.n = make_elf(buf, sizeof buf, true, false);
    assert_int_equal(pl_elf_inspect(mem_read, &m, m.n, &info), 0);
    assert_true(info.has_interp);
    assert_string_equal(info.interp, "/lib64/ld-linux-x86-64.so.2");
    assert_false(info.go);
    m.n = make_elf(buf, sizeof buf, false, false);
    assert_int_equal(pl_elf_inspect(mem_read, &m, m.n, &info), 0);
    assert_false(info.has_interp);
    m.n = make_elf(buf, sizeof buf, true, true);
    assert_int_equal(pl_elf_inspect(mem_read, &m, m.n, &info), 0);
    assert_true(info.go);
    /* A program header table beyond the end of the file. */
    ((Elf64_Ehdr *)buf)->e_phoff = 4096;
    assert_int_equal(pl_elf_inspect(mem_read, &m, m.n, &info), -ENOEXEC);
    /* Not ELF at all, and truncated. */
    m.n = 3;
    assert_int_equal(pl_elf_inspect(mem_read, &m, m.n, &info), -ENOEXEC);
    memcpy(buf, "#!/bin/sh\n", 10);
    m.n = 10;
    assert_int_equal(pl_elf_inspect(mem_read, &m, m.n, &info), -ENOEXEC);
}

static void test_exe_check(void **state)
{
    char why[512], path[] = "/tmp/test-preload-XXXXXX";
    int fd;
    (void)state;
    /* This very program is a dynamically linked C program. */
    assert_int_equal(pl_exe_check("/proc/self/exe", why, sizeof why), 0);
    assert_int_equal(pl_exe_check("/bin/sh", why, sizeof why), 0);
    /* A script: its interpreter is checked, through env and PATH too. */
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "#!/usr/bin/env sh\necho\n", 23), 23);
    (void)close(fd);
    assert_int_equal(pl_exe_check(path, why, sizeof why), 0);
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, "#!/usr/bin/env no-such-program-here\n", 36), 36);
    (void)close(fd);
    assert_int_equal(pl_exe_check(path, why, sizeof why), -1);
    assert_non_null(strstr(why, "not in PATH"));
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, "#!\n", 3), 3);
    (void)close(fd);
    assert_int_equal(pl_exe_check(path, why, sizeof why), -1);
    assert_int_equal(pl_exe_check("/no/such/file", why, sizeof why), -1);
    assert_non_null(strstr(why, "No such file"));
    (void)unlink(path);
    /* A library, but not a program (even a position-independent one). */
    assert_int_equal(pl_lib_check("relative.so", why, sizeof why), -1);
    assert_int_equal(pl_lib_check("/a b/x.so", why, sizeof why), -1);
    assert_int_equal(pl_lib_check("/no/such/libhandoff-preload.so", why, sizeof why), -1);
    assert_int_equal(pl_lib_check("/bin/sh", why, sizeof why), -1);
    assert_non_null(strstr(why, "not a shared library"));
    if (pl_lib_check(PRELOAD_LIB, why, sizeof why) != 0)
        print_error("%s\n", why);
    assert_int_equal(pl_lib_check(PRELOAD_LIB, why, sizeof why), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4),          cmocka_unit_test(test_ports_and_protocols),
        cmocka_unit_test(test_ipv6),          cmocka_unit_test(test_dual_stack),
        cmocka_unit_test(test_devices),       cmocka_unit_test(test_unix),
        cmocka_unit_test(test_first_match_wins), cmocka_unit_test(test_sockaddr_forms),
        cmocka_unit_test(test_format),        cmocka_unit_test(test_kernel_agrees),
        cmocka_unit_test(test_env_roundtrip), cmocka_unit_test(test_env_rejects),
        cmocka_unit_test(test_preload_lists), cmocka_unit_test(test_messages),
        cmocka_unit_test(test_fdinfo),        cmocka_unit_test(test_shebang),
        cmocka_unit_test(test_elf),           cmocka_unit_test(test_exe_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Unit tests for the address-spec parser and formatter (src/addr.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "handoff.h"

static void roundtrip(const char *spec, const char *expect, int kind, int family)
{
    handoff_addr a, b;
    char buf[256], err[256];
    int r = handoff_addr_parse(spec, &a, err, sizeof err);
    if (r != 0)
        print_error("parse(%s): %s\n", spec, err);
    assert_int_equal(r, 0);
    assert_int_equal(a.kind, kind);
    assert_int_equal(a.family, family);
    r = handoff_addr_format(&a, buf, sizeof buf);
    assert_true(r > 0);
    assert_string_equal(buf, expect);
    /* The formatted form parses back to the same address. */
    assert_int_equal(handoff_addr_parse(buf, &b, NULL, 0), 0);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.sa.raw, b.sa.raw, a.len);
}

static void test_tcp(void **state)
{
    (void)state;
    roundtrip("127.0.0.1:8080", "127.0.0.1:8080", HANDOFF_ADDR_TCP, AF_INET);
    roundtrip("tcp://127.0.0.1:80", "127.0.0.1:80", HANDOFF_ADDR_TCP, AF_INET);
    roundtrip(":8080", "0.0.0.0:8080", HANDOFF_ADDR_TCP, AF_INET);
    roundtrip("*:8080", "0.0.0.0:8080", HANDOFF_ADDR_TCP, AF_INET);
    roundtrip("localhost:1", "127.0.0.1:1", HANDOFF_ADDR_TCP, AF_INET);
    roundtrip("[::1]:443", "[::1]:443", HANDOFF_ADDR_TCP, AF_INET6);
    roundtrip("[::]:0", "[::]:0", HANDOFF_ADDR_TCP, AF_INET6);
    roundtrip("tcp6://[::]:65535", "[::]:65535", HANDOFF_ADDR_TCP, AF_INET6);
    roundtrip("tcp4://10.1.2.3:9", "10.1.2.3:9", HANDOFF_ADDR_TCP, AF_INET);
}

static void test_udp_unix(void **state)
{
    (void)state;
    roundtrip("udp://127.0.0.1:53", "udp://127.0.0.1:53", HANDOFF_ADDR_UDP, AF_INET);
    roundtrip("udp://[::1]:53", "udp://[::1]:53", HANDOFF_ADDR_UDP, AF_INET6);
    roundtrip("unix:/run/x.sock", "unix:/run/x.sock", HANDOFF_ADDR_UNIX, AF_UNIX);
    roundtrip("/run/x.sock", "unix:/run/x.sock", HANDOFF_ADDR_UNIX, AF_UNIX);
    roundtrip("unix:@abstract", "unix:@abstract", HANDOFF_ADDR_UNIX, AF_UNIX);
    roundtrip("@abs", "unix:@abs", HANDOFF_ADDR_UNIX, AF_UNIX);

    handoff_addr a;
    assert_int_equal(handoff_addr_parse("unix:@abs", &a, NULL, 0), 0);
    /* Abstract: leading NUL and no trailing NUL counted. */
    assert_int_equal(a.len, offsetof(struct sockaddr_un, sun_path) + 4);
    assert_int_equal(a.socktype, SOCK_STREAM);
    assert_int_equal(handoff_addr_parse("udp://1.2.3.4:5", &a, NULL, 0), 0);
    assert_int_equal(a.socktype, SOCK_DGRAM);
}

static void test_errors(void **state)
{
    static const char *bad[] = {
        "", "8080", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1",
        "127.0.0.1:80x", "::1:80", "[::1]80", "[::1", "[zz]:80", "example.com:80",
        "http://127.0.0.1:80", "unix:", "unix:@", "unix:relative", "tcp4://[::1]:80",
        "1.2.3.4.5:80", "127.0.0.1:123456",
        ("unix:/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
    };
    char err[256];
    handoff_addr a;
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int r = handoff_addr_parse(bad[i], &a, err, sizeof err);
        if (r != -EINVAL)
            print_error("accepted bad spec \"%s\"\n", bad[i]);
        assert_int_equal(r, -EINVAL);
        assert_true(strlen(err) > 10); /* a sentence, not just a code */
        assert_non_null(strstr(err, "bad address"));
    }
    assert_int_equal(handoff_addr_parse(NULL, &a, err, sizeof err), -EINVAL);
    assert_int_equal(handoff_addr_parse("1.2.3.4:5", NULL, NULL, 0), -EINVAL);
}

static void test_format_space(void **state)
{
    handoff_addr a;
    char small[4];
    (void)state;
    assert_int_equal(handoff_addr_parse("127.0.0.1:8080", &a, NULL, 0), 0);
    assert_int_equal(handoff_addr_format(&a, small, sizeof small), -ENOSPC);
    memset(&a, 0, sizeof a);
    assert_int_equal(handoff_addr_format(&a, small, sizeof small), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tcp),
        cmocka_unit_test(test_udp_unix),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_format_space),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

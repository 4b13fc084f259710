/*
 * test-http-parse.c - unit tests for src/http/parse.c.
 *
 * Every input is copied so that it ends exactly at a PROT_NONE guard page
 * (the picohttpparser trick): a read past the end of the input crashes
 * the test instead of passing by luck. Every request is also parsed at
 * every prefix length, which must give HH_INCOMPLETE, or the same error
 * as the whole input.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "parse.h"

#define GUARD_AREA (64 * 1024)
#define MAXH 64

static char *area; /* GUARD_AREA readable bytes, then a PROT_NONE page */

static int guard_setup(void **state)
{
    (void)state;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char *m = mmap(NULL, GUARD_AREA + page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return -1;
    if (mprotect(m + GUARD_AREA, page, PROT_NONE) < 0)
        return -1;
    area = m;
    return 0;
}

static int guard_teardown(void **state)
{
    (void)state;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    munmap(area, GUARD_AREA + page);
    return 0;
}

/* Copies s[0..n) so that it ends at the guard page. */
static char *at_guard(const char *s, size_t n)
{
    assert_true(n <= GUARD_AREA);
    char *d = area + GUARD_AREA - n;
    memmove(d, s, n);
    return d;
}

static int parse_once(const char *s, size_t n, hh_request *req,
                      hh_header *h, size_t nh, const hh_limits *lim)
{
    return hh_parse_request(at_guard(s, n), n, req, h, nh, lim);
}

/*
 * Parses s at every prefix length, checking that a prefix gives
 * HH_INCOMPLETE or the final result, then parses all of it and leaves the
 * result in *req (pointing into the guard area). Returns the final result.
 */
static int parse_lim(const char *s, size_t n, hh_request *req, hh_header *h,
                     size_t nh, const hh_limits *lim)
{
    assert_true(nh <= MAXH);
    char *copy = malloc(n + 1);
    assert_non_null(copy);
    memcpy(copy, s, n);
    hh_request r2;
    hh_header h2[MAXH];
    int full = parse_once(copy, n, &r2, h2, nh, lim);
    for (size_t k = 0; k < n; k++) {
        int rk = parse_once(copy, k, &r2, h2, nh, lim);
        if (full > 0 && k >= (size_t)full) {
            assert_int_equal(rk, full);
        } else if (rk != HH_INCOMPLETE && rk != full) {
            fail_msg("prefix %zu of %zu gave %d, whole input %d", k, n, rk,
                     full);
        }
    }
    int r = parse_once(copy, n, req, h, nh, lim);
    assert_int_equal(r, full);
    free(copy);
    if (r > 0) {
        /* Every output points into the parsed bytes. */
        const char *b = area + GUARD_AREA - n, *e = b + r;
        const hh_str *strs[] = {&req->method, &req->target, &req->path,
                                &req->query, &req->host};
        for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
            assert_true(strs[i]->p >= b && strs[i]->p + strs[i]->len <= e);
        for (size_t i = 0; i < req->num_headers; i++) {
            assert_true(h[i].name.p >= b && h[i].name.p + h[i].name.len <= e);
            assert_true(h[i].value.p >= b &&
                        h[i].value.p + h[i].value.len <= e);
        }
    }
    return r;
}

static int parse(const char *s, hh_request *req, hh_header *h)
{
    return parse_lim(s, strlen(s), req, h, MAXH, NULL);
}

static int parse_status(const char *s)
{
    hh_request req;
    hh_header h[MAXH];
    return parse(s, &req, h);
}

static void assert_str(hh_str s, const char *want)
{
    if (s.len != strlen(want) || memcmp(s.p, want, s.len) != 0)
        fail_msg("got \"%.*s\", want \"%s\"", (int)s.len, s.p, want);
}

/* ---------------------------------------------------------------- valid */

static void test_get(void **state)
{
    (void)state;
    hh_request req;
    hh_header h[MAXH];
    const char *s = "GET /index.html?a=1&b=2?c HTTP/1.1\r\n"
                    "Host: example.com:8080\r\n"
                    "User-Agent:  curl/8.0 \t\r\n"
                    "Accept:*/*\r\n"
                    "X-Empty:\r\n"
                    "X-Obs: caf\xc3\xa9 \x80\xff\r\n"
                    "\r\n";
    int r = parse(s, &req, h);
    assert_int_equal(r, (int)strlen(s));
    assert_str(req.method, "GET");
    assert_str(req.target, "/index.html?a=1&b=2?c");
    assert_str(req.path, "/index.html");
    assert_str(req.query, "a=1&b=2?c");
    assert_int_equal(req.minor_version, 1);
    assert_int_equal(req.num_headers, 5);
    assert_ptr_equal(req.headers, h);
    assert_str(h[0].name, "Host");
    assert_str(h[0].value, "example.com:8080");
    assert_str(h[1].name, "User-Agent");
    assert_str(h[1].value, "curl/8.0");
    assert_str(h[2].value, "*/*");
    assert_str(h[3].name, "X-Empty");
    assert_str(h[3].value, "");
    assert_str(h[4].value, "caf\xc3\xa9 \x80\xff");
    assert_str(req.host, "example.com:8080");
    assert_int_equal(req.body_kind, HH_BODY_NONE);
    assert_int_equal(req.content_length, 0);
    assert_int_equal(req.keep_alive, 1);
    assert_int_equal(req.expect_continue, 0);
    assert_int_equal(req.expect_other, 0);
    assert_int_equal(req.upgrade, 0);
}

static void test_post_length(void **state)
{
    (void)state;
    hh_request req;
    hh_header h[MAXH];
    const char *s = "POST /submit HTTP/1.1\r\nHost: a\r\n"
                    "content-length: 5\r\nContent-Length: 5, 005\r\n\r\nhello";
    int r = parse(s, &req, h);
    assert_int_equal(r, (int)strlen(s) - 5);
    assert_int_equal(req.body_kind, HH_BODY_LENGTH);
    assert_int_equal(req.content_length, 5);
    assert_str(req.query, "");

    s = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    assert_true(parse(s, &req, h) > 0);
    assert_int_equal(req.body_kind, HH_BODY_NONE);

    s = "POST / HTTP/1.1\r\nHost: a\r\n"
        "Content-Length: 9223372036854775807\r\n\r\n";
    assert_true(parse(s, &req, h) > 0);
    assert_int_equal(req.content_length, INT64_MAX);
}

static void test_post_chunked(void **state)
{
    (void)state;
    hh_request req;
    hh_header h[MAXH];
    assert_true(parse("POST / HTTP/1.1\r\nHost: a\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n",
                      &req, h) > 0);
    assert_int_equal(req.body_kind, HH_BODY_CHUNKED);
    assert_true(parse("POST / HTTP/1.1\r\nHost: a\r\n"
                      "Transfer-Encoding:\tCHUNKED \r\n\r\n",
                      &req, h) > 0);
    assert_int_equal(req.body_kind, HH_BODY_CHUNKED);
}

static void test_pipelined(void **state)
{
    (void)state;
    hh_request req;
    hh_header h[MAXH];
    const char *s = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                    "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                    "GET /3 HTTP/1.0\r\n\r\n";
    size_t len = strlen(s), off = 0;
    const char *b = at_guard(s, len);
    int r = hh_parse_request(b, len, &req, h, MAXH, NULL);
    assert_int_equal(r, 28);
    assert_str(req.path, "/1");
    off += (size_t)r;
    r = hh_parse_request(b + off, len - off, &req, h, MAXH, NULL);
    assert_true(r > 0);
    assert_str(req.path, "/2");
    assert_int_equal(req.content_length, 3);
    off += (size_t)r + 3;
    r = hh_parse_request(b + off, len - off, &req, h, MAXH, NULL);
    assert_int_equal((size_t)r, len - off);
    assert_str(req.path, "/3");
    assert_int_equal(req.minor_version, 0);
}

static void test_leading_empty_lines(void **state)
{
    (void)state;
    hh_request req;
    hh_header h[MAXH];
    const char *s = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_int_equal(parse(s, &req, h), (int)strlen(s));
    assert_str(req.method, "GET");
    assert_int_equal(parse_status("\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
                     HH_ERR_BAD_REQUEST);
    assert_int_equal(parse_status("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
                     HH_ERR_BAD_REQUEST);
}

static void test_http10(void **state)
{
    (void)state;
    hh_request req;
    hh_header h[MAXH];
    assert_true(parse("GET / HTTP/1.0\r\n\r\n", &req, h) > 0);
    assert_int_equal(req.minor_version, 0);
    assert_int_equal(req.keep_alive, 0);
    assert_int_equal(req.host.len, 0);
    assert_true(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &req,
                      h) > 0);
    assert_int_equal(req.keep_alive, 1);
    assert_true(parse("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
                      &req, h) > 0);
    assert_int_equal(req.keep_alive, 0);
    /* 100-continue and Upgrade are ignored in HTTP/1.0. */
    assert_true(parse("GET / HTTP/1.0\r\nExpect: 100-continue\r\n"
                      "Connection: upgrade\r\nUpgrade: websocket\r\n\r\n",
                      &req, h) > 0);
    assert_int_equal(req.expect_continue, 0);
    assert_int_equal(req.upgrade, 0);
    assert_true(parse("POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\n", &req,
                      h) > 0);
    assert_int_equal(req.body_kind, HH_BODY_LENGTH);
}

static void test_connection(void **state)
{
    (void)state;
    hh_request req;
    hh_header h[MAXH];
    assert_true(
        parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: CLOSE\r\n\r\n", &req,
              h) > 0);
    assert_int_equal(req.keep_alive, 0);
    assert_true(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo,\r\n"
                      "Connection: ,bar , close\r\n\r\n",
                      &req, h) > 0);
    assert_int_equal(req.keep_alive, 0);
    assert_true(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, "
                      "Upgrade\r\nUpgrade: websocket\r\n\r\n",
                      &req, h) > 0);
    assert_int_equal(req.keep_alive, 1);
    assert_int_equal(req.upgrade, 1);
    /* "upgrade" without an Upgrade header, and the reverse. */
    assert_true(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n",
                      &req, h) > 0);
    assert_int_equal(req.upgrade, 0);
    assert_true(parse("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n", &req,
                      h) > 0);
    assert_int_equal(req.upgrade, 0);
    assert_true(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n"
                      "Upgrade:\r\n\r\n",
                      &req, h) > 0);
    assert_int_equal(req.upgrade, 0);
    /* A token that merely contains "close" is not "close". */
    assert_true(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n",
                      &req, h) > 0);
    assert_int_equal(req.keep_alive, 1);
}

static void test_expect(void **state)
{
    (void)state;
    hh_request req;
    hh_header h[MAXH];
    assert_true(parse("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n"
                      "Expect: 100-Continue\r\n\r\n",
                      &req, h) > 0);
    assert_int_equal(req.expect_continue, 1);
    assert_int_equal(req.expect_other, 0);
    assert_true(parse("PUT / HTTP/1.1\r\nHost: a\r\nExpect: bogus\r\n\r\n", &req,
                      h) > 0);
    assert_int_equal(req.expect_continue, 0);
    assert_int_equal(req.expect_other, 1);
}

static void test_target_forms(void **state)
{
    (void)state;
    hh_request req;
    hh_header h[MAXH];
    assert_true(parse("GET http://example.org:80/p/q?x=1 HTTP/1.1\r\n"
                      "Host: other\r\n\r\n",
                      &req, h) > 0);
    assert_str(req.host, "example.org:80");
    assert_str(req.path, "/p/q");
    assert_str(req.query, "x=1");
    assert_true(parse("GET https://[::1]?x HTTP/1.1\r\nHost: a\r\n\r\n", &req,
                      h) > 0);
    assert_str(req.host, "[::1]");
    assert_str(req.path, "");
    assert_str(req.query, "x");
    assert_true(parse("CONNECT example.org:443 HTTP/1.1\r\n"
                      "Host: example.org:443\r\n\r\n",
                      &req, h) > 0);
    assert_str(req.target, "example.org:443");
    assert_str(req.path, "");
    assert_str(req.host, "example.org:443");
    assert_true(parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &req, h) > 0);
    assert_str(req.path, "*");
    assert_true(parse("GET /? HTTP/1.1\r\nHost: a\r\n\r\n", &req, h) > 0);
    assert_str(req.path, "/");
    assert_str(req.query, "");

    static const char *bad[] = {
        "CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT example.org HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT example.org: HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT :443 HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT a:44x HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT u@a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http://user@evil/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http:/x HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http:abc/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET urn:isbn:0451450523 HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http:// HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET 1http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET example.org/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET ../etc HTTP/1.1\r\nHost: a\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int r = parse_status(bad[i]);
        if (r != HH_ERR_BAD_REQUEST)
            fail_msg("%s: got %d", bad[i], r);
    }
}

/* --------------------------------------------------------------- errors */

struct status_case {
    const char *in;
    int want;
};

static void run_cases(const struct status_case *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int r = parse_status(c[i].in);
        if (r != c[i].want)
            fail_msg("case %zu \"%s\": got %d, want %d", i, c[i].in, r,
                     c[i].want);
    }
}

#define RUN_CASES(arr) run_cases(arr, sizeof(arr) / sizeof(arr[0]))
#define BAD HH_ERR_BAD_REQUEST

static void test_bad_request_line(void **state)
{
    (void)state;
    static const struct status_case cases[] = {
        {"GET / HTTP/1.1\nHost: a\r\n\r\n", BAD},      /* bare LF */
        {"GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", BAD},  /* bare CR */
        {"GET / HTTP/1.1\rHost: a\r\n\r\n", BAD},
        {"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", BAD},   /* double SP */
        {"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", BAD},
        {"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", BAD},   /* trailing SP */
        {"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", BAD},   /* HTAB separator */
        {"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", BAD}, /* SP in target */
        {"GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", BAD},
        {"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", BAD},
        {"GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n", BAD},
        {"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", BAD},
        {" GET / HTTP/1.1\r\nHost: a\r\n\r\n", BAD},
        {"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", BAD},
        {"GET\x80 / HTTP/1.1\r\nHost: a\r\n\r\n", BAD},
        {" / HTTP/1.1\r\nHost: a\r\n\r\n", BAD}, /* no method */
        {"GET  HTTP/1.1\r\nHost: a\r\n\r\n", BAD},       /* no target */
        {"GET /\r\n\r\n", BAD},                          /* HTTP/0.9 */
        {"GET / http/1.1\r\nHost: a\r\n\r\n", BAD},
        {"GET / HTTPS/1.1\r\nHost: a\r\n\r\n", BAD},
        {"GET / HTTP/1\r\nHost: a\r\n\r\n", BAD},
        {"GET / HTTP/1.\r\nHost: a\r\n\r\n", BAD},
        {"GET / HTTP/1.10\r\nHost: a\r\n\r\n", BAD},
        {"GET / HTTP/11\r\nHost: a\r\n\r\n", BAD},
        {"GET / HTTP/x.1\r\nHost: a\r\n\r\n", BAD},
        {"GET / HTTP/\r\nHost: a\r\n\r\n", BAD},
        {"GET / HTTP/1.1\r\n", HH_INCOMPLETE},
        {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", BAD}, /* TLS */
    };
    RUN_CASES(cases);
}

static void test_version(void **state)
{
    (void)state;
    static const struct status_case cases[] = {
        {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", HH_ERR_VERSION},
        {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", HH_ERR_VERSION},
        {"GET / HTTP/1.2\r\nHost: a\r\n\r\n", HH_ERR_VERSION},
        {"GET / HTTP/1.9\r\nHost: a\r\n\r\n", HH_ERR_VERSION},
        {"GET / HTTP/0.9\r\nHost: a\r\n\r\n", HH_ERR_VERSION},
        {"GET / HTTP/3\r\nHost: a\r\n\r\n", HH_ERR_VERSION},
        {"GET / HTTP/2\r\n", HH_ERR_VERSION},
    };
    RUN_CASES(cases);
}

static void test_bad_fields(void **state)
{
    (void)state;
    static const struct status_case cases[] = {
        {"GET / HTTP/1.1\r\nHost: a\n\r\n", BAD},           /* bare LF */
        {"GET / HTTP/1.1\r\nHost: a\r\n\n", BAD},           /* bare LF end */
        {"GET / HTTP/1.1\r\nHost: a\r\nX: 1\nY: 2\r\n\r\n", BAD},
        {"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", BAD},      /* bare CR */
        {"GET / HTTP/1.1\r\nHost: a\r\n\rX\r\n", BAD},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", BAD}, /* fold */
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", BAD},
        {"GET / HTTP/1.1\r\n Host: a\r\n\r\n", BAD},
        {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", BAD},        /* SP before : */
        {"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", BAD},
        {"GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", BAD},  /* empty name */
        {"GET / HTTP/1.1\r\nHost: a\r\nNo colon\r\n\r\n", BAD},
        {"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", BAD},
        {"GET / HTTP/1.1\r\nHost: a\r\nX(y): z\r\n\r\n", BAD},
        {"GET / HTTP/1.1\r\nHost: a\r\nX\x80: z\r\n\r\n", BAD},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01z\r\n\r\n", BAD},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fz\r\n\r\n", BAD},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x1b[0m\r\n\r\n", BAD},
        {"GET / HTTP/1.1\r\n\r\n", BAD},                    /* no Host */
        {"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", BAD},
        {"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", BAD},
        {"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", BAD},
        {"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", BAD},
        {"GET / HTTP/1.1\r\nHost: \xc3\xa9\r\n\r\n", BAD},
    };
    RUN_CASES(cases);

    /* NUL cannot be written in a string literal case; build it. */
    const char nul[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
    hh_request req;
    hh_header h[MAXH];
    assert_int_equal(parse_lim(nul, sizeof(nul) - 1, &req, h, MAXH, NULL), BAD);
    const char nul2[] = "GET / HTTP/1.1\r\nHost: a\r\nX\0: b\r\n\r\n";
    assert_int_equal(parse_lim(nul2, sizeof(nul2) - 1, &req, h, MAXH, NULL),
                     BAD);
    const char nul3[] = "GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_int_equal(parse_lim(nul3, sizeof(nul3) - 1, &req, h, MAXH, NULL),
                     BAD);
}

static void test_smuggling(void **state)
{
    (void)state;
#define P "POST / HTTP/1.1\r\nHost: a\r\n"
    static const struct status_case cases[] = {
        {P "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", BAD},
        {P "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", BAD},
        {P "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", BAD},
        {P "Content-Length: 5, 6\r\n\r\n", BAD},
        {P "Content-Length: 5,\r\n\r\n", BAD},
        {P "Content-Length: ,5\r\n\r\n", BAD},
        {P "Content-Length:\r\n\r\n", BAD},
        {P "Content-Length: +5\r\n\r\n", BAD},
        {P "Content-Length: -5\r\n\r\n", BAD},
        {P "Content-Length: -0\r\n\r\n", BAD},
        {P "Content-Length: 0x10\r\n\r\n", BAD},
        {P "Content-Length: 5 5\r\n\r\n", BAD},
        {P "Content-Length: 5.0\r\n\r\n", BAD},
        {P "Content-Length: 1e3\r\n\r\n", BAD},
        {P "Content-Length: 9223372036854775808\r\n\r\n", BAD},
        {P "Content-Length: 18446744073709551616\r\n\r\n", BAD},
        {P "Content-Length: 99999999999999999999999999\r\n\r\n", BAD},
        {P "Content-Length : 5\r\n\r\n", BAD},
        {P "Content-Length:\x0b" "5\r\n\r\n", BAD},
        {P "Transfer-Encoding: chunked, chunked\r\n\r\n", BAD},
        {P "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
         BAD},
        {P "Transfer-Encoding : chunked\r\n\r\n", BAD},
        {P " Transfer-Encoding: chunked\r\n\r\n", BAD},
        {P "Transfer-Encoding: xchunked\r\n\r\n", BAD},
        {P "Transfer-Encoding: chunkedx\r\n\r\n", BAD},
        {P "Transfer-Encoding: chunked, gzip\r\n\r\n", BAD},
        {P "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", BAD},
        {P "Transfer-Encoding: gzip\r\n\r\n", BAD},
        {P "Transfer-Encoding:\r\n\r\n", BAD},
        {P "Transfer-Encoding: ,chunked\r\n\r\n", BAD},
        {P "Transfer-Encoding: chunked,\r\n\r\n", BAD},
        {P "Transfer-Encoding: chunked;q=1\r\n\r\n", BAD},
        {P "Transfer-Encoding: \"chunked\"\r\n\r\n", BAD},
        {P "Transfer-Encoding: chunked\x0b\r\n\r\n", BAD},
        {P "Transfer-Encoding: gzip, chunked\r\n\r\n", HH_ERR_NOT_IMPLEMENTED},
        {P "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
         HH_ERR_NOT_IMPLEMENTED},
        {P "Transfer-Encoding: identity, chunked\r\n\r\n",
         HH_ERR_NOT_IMPLEMENTED},
        {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", BAD},
        {P "X: y\r\n\tTransfer-Encoding: chunked\r\n\r\n", BAD},
        {P "Transfer-Encoding: chunked\r\n\r\n", 77},
    };
#undef P
    /* The last case is valid; check it separately. */
    run_cases(cases, sizeof(cases) / sizeof(cases[0]) - 1);
    assert_true(parse_status(cases[sizeof(cases) / sizeof(cases[0]) - 1].in) >
                0);
}

static void test_limits(void **state)
{
    (void)state;
    hh_request req;
    hh_header h[MAXH];
    hh_limits lim = {200, 50};
    char buf[40000];

    /* Target of exactly max_target is fine, one more is 414. */
    int n = snprintf(buf, sizeof(buf), "GET /%049d HTTP/1.1\r\nHost: a\r\n\r\n", 0);
    assert_int_equal(parse_lim(buf, (size_t)n, &req, h, MAXH, &lim), n);
    n = snprintf(buf, sizeof(buf), "GET /%050d HTTP/1.1\r\nHost: a\r\n\r\n", 0);
    assert_int_equal(parse_lim(buf, (size_t)n, &req, h, MAXH, &lim),
                     HH_ERR_URI_TOO_LONG);
    /* Early: 51 target bytes and no end in sight. */
    n = snprintf(buf, sizeof(buf), "GET /%050d", 0);
    assert_int_equal(parse_once(buf, (size_t)n, &req, h, MAXH, &lim),
                     HH_ERR_URI_TOO_LONG);
    assert_int_equal(parse_once(buf, (size_t)n - 1, &req, h, MAXH, &lim),
                     HH_INCOMPLETE);

    /* Default limits (8 KiB each): a target running past the head limit
     * is a 414 too, not a 431, since the target is what is too long. */
    memset(buf, 'a', sizeof(buf));
    memcpy(buf, "GET /", 5);
    assert_int_equal(parse_once(buf, 8192, &req, h, MAXH, NULL),
                     HH_INCOMPLETE);
    assert_int_equal(parse_once(buf, 8193, &req, h, MAXH, NULL),
                     HH_ERR_URI_TOO_LONG);
    /* A target that fits but leaves no room for the rest: 431. */
    buf[8192] = ' ';
    assert_int_equal(parse_once(buf, 8200, &req, h, MAXH, NULL),
                     HH_ERR_HEADERS_TOO_LARGE);
    buf[8192] = 'a';
    assert_int_equal(parse_once(buf, 30000, &req, h, MAXH, NULL),
                     HH_ERR_URI_TOO_LONG);

    /* Head of exactly max_header_bytes is fine, one more is 431. */
    const char *pre = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
    size_t plen = strlen(pre);
    memcpy(buf, pre, plen);
    memset(buf + plen, 'v', 200 - plen - 4);
    memcpy(buf + 200 - 4, "\r\n\r\n", 4);
    assert_int_equal(parse_lim(buf, 200, &req, h, MAXH, &lim), 200);
    memcpy(buf + 200 - 4, "v\r\n\r\n", 5);
    assert_int_equal(parse_lim(buf, 201, &req, h, MAXH, &lim),
                     HH_ERR_HEADERS_TOO_LARGE);
    /* Early: 201 bytes without an end. */
    memset(buf + plen, 'v', 300);
    assert_int_equal(parse_once(buf, 201, &req, h, MAXH, &lim),
                     HH_ERR_HEADERS_TOO_LARGE);
    assert_int_equal(parse_once(buf, 200, &req, h, MAXH, &lim), HH_INCOMPLETE);
    /* A complete head within the limit and a long body after it. */
    n = snprintf(buf, sizeof(buf),
                 "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n");
    memset(buf + n, 'b', 1000);
    assert_int_equal(parse_once(buf, (size_t)n + 1000, &req, h, MAXH, &lim), n);
    /* Leading empty lines count against the limit. */
    for (int i = 0; i < 200; i += 2)
        memcpy(buf + i, "\r\n", 2);
    assert_int_equal(parse_once(buf, 201, &req, h, MAXH, &lim),
                     HH_ERR_HEADERS_TOO_LARGE);

    /* Header count: max_headers is fine, one more is 431. */
    const char *three = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
    assert_int_equal(parse_lim(three, strlen(three), &req, h, 3, NULL),
                     (int)strlen(three));
    assert_int_equal(parse_lim(three, strlen(three), &req, h, 2, NULL),
                     HH_ERR_HEADERS_TOO_LARGE);
    assert_int_equal(parse_lim(three, strlen(three), &req, h, 0, NULL),
                     HH_ERR_HEADERS_TOO_LARGE);
    /* Huge limits are clamped, not trusted. */
    hh_limits huge = {SIZE_MAX, SIZE_MAX};
    assert_int_equal(parse_lim(three, strlen(three), &req, h, 3, &huge),
                     (int)strlen(three));
    const char *none = "GET / HTTP/1.0\r\n\r\n";
    assert_int_equal(parse_lim(none, strlen(none), &req, NULL, 0, NULL),
                     (int)strlen(none));
}

static void test_prefixes(void **state)
{
    (void)state;
    /* parse_lim() checks every prefix; make it explicit for a few valid
     * requests and a body that must not matter. */
    static const char *valid[] = {
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "\r\nOPTIONS * HTTP/1.0\r\n\r\n",
        ("POST /x?y HTTP/1.1\r\nHost: h:1\r\nTransfer-Encoding: chunked\r\n"
         "Connection: keep-alive\r\nExpect: 100-continue\r\n\r\n"),
        "GET http://a.b/c HTTP/1.1\r\nHost: x\r\nX:\t v \t\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        size_t n = strlen(valid[i]);
        hh_request req;
        hh_header h[MAXH];
        for (size_t k = 0; k < n; k++)
            assert_int_equal(parse_once(valid[i], k, &req, h, MAXH, NULL),
                             HH_INCOMPLETE);
        assert_int_equal(parse_lim(valid[i], n, &req, h, MAXH, NULL), (int)n);
    }
}

static void test_find_header(void **state)
{
    (void)state;
    hh_request req;
    hh_header h[MAXH];
    assert_true(parse("GET / HTTP/1.1\r\nHost: a\r\nX-Foo: 1\r\nx-foo: 2\r\n\r\n",
                      &req, h) > 0);
    const hh_header *f = hh_find_header(&req, "X-FOO");
    assert_non_null(f);
    assert_str(f->value, "1");
    assert_null(hh_find_header(&req, "X-Fo"));
    assert_null(hh_find_header(&req, "X-Fooo"));
    assert_non_null(hh_find_header(&req, "host"));
}

static void test_format_date(void **state)
{
    (void)state;
    char out[30];
    hh_format_date(784111777, out);
    assert_string_equal(out, "Sun, 06 Nov 1994 08:49:37 GMT");
    hh_format_date(0, out);
    assert_string_equal(out, "Thu, 01 Jan 1970 00:00:00 GMT");
    hh_format_date(951782400, out);
    assert_string_equal(out, "Tue, 29 Feb 2000 00:00:00 GMT");
    hh_format_date(4107542399, out);
    assert_string_equal(out, "Sun, 28 Feb 2100 23:59:59 GMT");
    hh_format_date(-5, out);
    assert_string_equal(out, "Thu, 01 Jan 1970 00:00:00 GMT");
    hh_format_date(INT64_MAX, out);
    assert_string_equal(out, "Fri, 31 Dec 9999 23:59:59 GMT");

    /* Against the C library for many times (strftime in the C locale). */
    uint64_t x = 88172645463325252u;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int64_t t = (int64_t)(x % 253402300800u);
        if (i < 1000)
            t = (int64_t)(x % 4102444800u);
        time_t tt = (time_t)t;
        struct tm tm;
        char want[64];
        assert_non_null(gmtime_r(&tt, &tm));
        strftime(want, sizeof(want), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        hh_format_date(t, out);
        if (strcmp(out, want) != 0)
            fail_msg("t=%lld: got %s want %s", (long long)t, out, want);
    }
}

/* -------------------------------------------------------------- chunked */

struct chunk_case {
    const char *in;
    size_t inlen; /* 0: strlen */
    const char *out;
    size_t outlen;   /* 0: strlen */
    size_t consumed; /* 0: inlen */
};

#define S(x) x, sizeof(x) - 1

static const struct chunk_case chunk_valid[] = {
    {"0\r\n\r\n", 0, "", 0, 0},
    {"5\r\nhello\r\n0\r\n\r\n", 0, "hello", 0, 0},
    {"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 0, "hello world", 0, 0},
    {"A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n", 0,
     "0123456789abcdefghij", 0, 0},
    {"0005\r\nhello\r\n0000\r\n\r\n", 0, "hello", 0, 0},
    {"1\r\n\r\r\n1\r\n\n\r\n0\r\n\r\n", 0, "\r\n", 0, 0},
    {S("3\r\n\0\0\0\r\n0\r\n\r\n"), S("\0\0\0"), 0},
    {"5;foo=bar\r\nhello\r\n0;last\r\n\r\n", 0, "hello", 0, 0},
    {"5;a=\"b \\\" c;\"\r\nhello\r\n0\r\n\r\n", 0, "hello", 0, 0},
    {"5;  a = b ;c;d=\"\"\t;e\r\nhello\r\n0\r\n\r\n", 0, "hello", 0, 0},
    {"5;a=\"\xc3\xa9\"\r\nhello\r\n0\r\n\r\n", 0, "hello", 0, 0},
    {"2\r\nab\r\n0\r\nX-Trailer: v\r\nY:\r\nZ: a \t b\r\n\r\n", 0, "ab", 0, 0},
    {"2\r\nab\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 0, "ab", 0, 12},
    {"2\r\nab\r\n0\r\n\r\n0\r\n\r\n", 0, "ab", 0, 12},
};

struct chunk_err {
    const char *in;
    size_t inlen;
    uint64_t max_body;
    int want;
};

static const struct chunk_err chunk_bad[] = {
    {"0x10\r\n", 0, 0, BAD},
    {"x\r\n", 0, 0, BAD},
    {" 5\r\nhello\r\n0\r\n\r\n", 0, 0, BAD},
    {"\t5\r\nhello\r\n0\r\n\r\n", 0, 0, BAD},
    {"5 \r\nhello\r\n0\r\n\r\n", 0, 0, BAD},
    {"5 ;a\r\nhello\r\n0\r\n\r\n", 0, 0, BAD},
    {"+5\r\nhello\r\n0\r\n\r\n", 0, 0, BAD},
    {"-5\r\nhello\r\n0\r\n\r\n", 0, 0, BAD},
    {"\r\n", 0, 0, BAD},
    {"5\nhello\r\n0\r\n\r\n", 0, 0, BAD},
    {"5\rhello\r\n0\r\n\r\n", 0, 0, BAD},
    {"5\r\nhelloX\r\n0\r\n\r\n", 0, 0, BAD},
    {"5\r\nhello\n0\r\n\r\n", 0, 0, BAD},
    {"5\r\nhello\r0\r\n\r\n", 0, 0, BAD},
    {"5\r\nhello0\r\n\r\n", 0, 0, BAD},
    /* A wrong byte where CR or LF belongs, with the CRLF still
     * following, so that only an exact check catches it. */
    {"5\rXhello\r\n0\r\n\r\n", 0, 0, BAD},
    {"5\r\nhelloX\n0\r\n\r\n", 0, 0, BAD},
    {"5\r\nhello\rX0\r\n\r\n", 0, 0, BAD},
    {"0\r\nA: b\rX\r\n", 0, 0, BAD},
    {"0\r\n\rX\r\n", 0, 0, BAD},
    {"4000000000000001\r\n", 0, 0, BAD},
    {"ffffffffffffffff\r\n", 0, 0, BAD},
    {"10000000000000000000000000000000\r\n", 0, 0, BAD},
    {"5;\r\nhello\r\n0\r\n\r\n", 0, 0, BAD},
    {"5;=x\r\nhello\r\n0\r\n\r\n", 0, 0, BAD},
    {"5;a=\r\nhello\r\n0\r\n\r\n", 0, 0, BAD},
    {"5;a \r\nhello\r\n0\r\n\r\n", 0, 0, BAD},
    {"5;a=b \r\nhello\r\n0\r\n\r\n", 0, 0, BAD},
    {"5;a\x01\r\nhello\r\n0\r\n\r\n", 0, 0, BAD},
    {"5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n", 0, 0, BAD},
    {"5;a=\"x\r\nhello\r\n0\r\n\r\n", 0, 0, BAD},
    {"5;a=\"x\"y\r\nhello\r\n0\r\n\r\n", 0, 0, BAD},
    {"5;a=b=c\r\nhello\r\n0\r\n\r\n", 0, 0, BAD},
    {S("5;a\0\r\nhello\r\n0\r\n\r\n"), 0, BAD},
    {"0\r\nA: b\r\n c\r\n\r\n", 0, 0, BAD},
    {"0\r\n A: b\r\n\r\n", 0, 0, BAD},
    {"0\r\nA b\r\n\r\n", 0, 0, BAD},
    {"0\r\nA : b\r\n\r\n", 0, 0, BAD},
    {"0\r\nA: b\n\r\n", 0, 0, BAD},
    {"0\r\nA: b\x7f\r\n\r\n", 0, 0, BAD},
    {S("0\r\nA: \0\r\n\r\n"), 0, BAD},
    {"0\r\n\n", 0, 0, BAD},
    {"0\r\n\rX", 0, 0, BAD},
    {"5\r\nhello\r\n", 0, 4, -413},
    {"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", 0, 5, -413},
    {"100000\r\n", 0, 0xfffff, -413},
};

/* Decodes in[0..n) in pieces cut by the sizes in cuts (cycled), each
 * piece placed against the guard page. Returns the final result. */
static int decode_pieces(const char *in, size_t n, const size_t *cuts,
                         size_t ncuts, uint64_t max_body, char *out,
                         size_t *out_len, size_t *consumed)
{
    hh_chunked dec;
    memset(&dec, 0, sizeof(dec));
    size_t off = 0, o = 0, ci = 0;
    int r = 0;
    while (off < n) {
        size_t piece = cuts[ci++ % ncuts];
        if (piece > n - off)
            piece = n - off;
        const char *p = at_guard(in + off, piece);
        size_t ol = 0, c = 0;
        r = hh_decode_chunked(&dec, p, piece, out + o, &ol, &c, max_body);
        assert_true(c <= piece);
        assert_true(ol <= c);
        o += ol;
        off += c;
        if (r != 0)
            break;
        assert_int_equal(c, piece);
    }
    *out_len = o;
    *consumed = off;
    assert_int_equal(dec.total, o);
    return r;
}

static void check_chunk_all_ways(const char *in, size_t n, uint64_t max_body,
                                 int want, const char *want_out,
                                 size_t want_outlen, size_t want_consumed)
{
    char *out = malloc(n + 1), *ref = malloc(n + 1);
    assert_non_null(out);
    assert_non_null(ref);
    size_t ol, c, ref_ol, ref_c;

    /* In one piece, separate output. */
    size_t whole = n;
    int r = decode_pieces(in, n, &whole, 1, max_body, ref, &ref_ol, &ref_c);
    if (r != want)
        fail_msg("\"%.*s\": got %d want %d", (int)n, in, r, want);
    if (want == 1) {
        assert_int_equal(ref_ol, want_outlen);
        assert_memory_equal(ref, want_out, want_outlen);
        assert_int_equal(ref_c, want_consumed);
    }

    /* In place. */
    {
        hh_chunked dec;
        memset(&dec, 0, sizeof(dec));
        char *p = at_guard(in, n);
        r = hh_decode_chunked(&dec, p, n, p, &ol, &c, max_body);
        assert_int_equal(r, want);
        assert_int_equal(ol, ref_ol);
        assert_int_equal(c, ref_c);
        assert_memory_equal(p, ref, ol);
    }

    /* Byte by byte. */
    size_t one = 1;
    r = decode_pieces(in, n, &one, 1, max_body, out, &ol, &c);
    assert_int_equal(r, want);
    assert_int_equal(ol, ref_ol);
    assert_int_equal(c, ref_c);
    assert_memory_equal(out, ref, ol);

    /* Random splits. */
    uint32_t seed = 12345;
    for (int iter = 0; iter < 200; iter++) {
        size_t cuts[16];
        for (size_t i = 0; i < 16; i++) {
            seed = seed * 1103515245u + 12345u;
            cuts[i] = 1 + (seed >> 16) % (iter < 100 ? 4 : 24);
        }
        r = decode_pieces(in, n, cuts, 16, max_body, out, &ol, &c);
        assert_int_equal(r, want);
        assert_int_equal(ol, ref_ol);
        assert_int_equal(c, ref_c);
        assert_memory_equal(out, ref, ol);
    }
    free(out);
    free(ref);
}

static void test_chunked_valid(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(chunk_valid) / sizeof(chunk_valid[0]); i++) {
        const struct chunk_case *c = &chunk_valid[i];
        size_t n = c->inlen ? c->inlen : strlen(c->in);
        size_t on = c->outlen ? c->outlen : strlen(c->out);
        check_chunk_all_ways(c->in, n, 0, 1, c->out, on,
                             c->consumed ? c->consumed : n);
        /* Every strict prefix needs more input. */
        size_t cons = c->consumed ? c->consumed : n;
        for (size_t k = 0; k < cons; k++) {
            hh_chunked dec;
            memset(&dec, 0, sizeof(dec));
            char out[256];
            size_t ol, cc;
            assert_true(k < sizeof(out));
            int r = hh_decode_chunked(&dec, at_guard(c->in, k), k, out, &ol,
                                      &cc, 0);
            assert_int_equal(r, 0);
            assert_int_equal(cc, k);
        }
    }
}

static void test_chunked_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(chunk_bad) / sizeof(chunk_bad[0]); i++) {
        const struct chunk_err *c = &chunk_bad[i];
        size_t n = c->inlen ? c->inlen : strlen(c->in);
        check_chunk_all_ways(c->in, n, c->max_body, c->want, NULL, 0, 0);
    }
}

static void test_chunked_limits(void **state)
{
    (void)state;
    static char buf[20000];
    hh_chunked dec;
    char out[64];
    size_t ol, c;

    /* 2^62 is the largest chunk size. */
    memset(&dec, 0, sizeof(dec));
    assert_int_equal(hh_decode_chunked(&dec, S("4000000000000000\r\nab"), out,
                                       &ol, &c, 0),
                     0);
    assert_int_equal(ol, 2);

    /* max_body equal to the body is fine. */
    memset(&dec, 0, sizeof(dec));
    assert_int_equal(hh_decode_chunked(&dec, S("5\r\nhello\r\n0\r\n\r\n"), out,
                                       &ol, &c, 5),
                     1);
    assert_int_equal(dec.total, 5);

    /* Size line: 4096 bytes with CRLF is fine, 4097 is not. */
    memset(buf, '0', 4093);
    memcpy(buf + 4093, "1\r\nx\r\n0\r\n\r\n", 12);
    check_chunk_all_ways(buf, 4093 + 11, 0, 1, "x", 1, 4093 + 11);
    memset(buf, '0', 4094);
    memcpy(buf + 4094, "1\r\nx\r\n0\r\n\r\n", 12);
    check_chunk_all_ways(buf, 4094 + 11, 0, BAD, NULL, 0, 0);
    memcpy(buf, "1;a=", 4);
    memset(buf + 4, 'b', 10000);
    check_chunk_all_ways(buf, 10004, 0, BAD, NULL, 0, 0);

    /* Trailer section: 8192 bytes including the final CRLF is fine. */
    size_t n = 0;
    memcpy(buf, "0\r\n", 3);
    n = 3;
    memcpy(buf + n, "X: ", 3);
    memset(buf + n + 3, 'v', 8192 - 3 - 4);
    memcpy(buf + n + 8192 - 4, "\r\n\r\n", 4);
    check_chunk_all_ways(buf, n + 8192, 0, 1, "", 0, n + 8192);
    memcpy(buf + n + 8192 - 4, "v\r\n\r\n", 5);
    check_chunk_all_ways(buf, n + 8193, 0, BAD, NULL, 0, 0);

    /* Errors are sticky; completion is final. */
    memset(&dec, 0, sizeof(dec));
    assert_int_equal(hh_decode_chunked(&dec, S("z"), out, &ol, &c, 0), BAD);
    assert_int_equal(hh_decode_chunked(&dec, S("0\r\n\r\n"), out, &ol, &c, 0),
                     BAD);
    assert_int_equal(c, 0);
    memset(&dec, 0, sizeof(dec));
    assert_int_equal(hh_decode_chunked(&dec, S("0\r\n\r\n"), out, &ol, &c, 0),
                     1);
    assert_int_equal(hh_decode_chunked(&dec, S("5\r\n"), out, &ol, &c, 0), 1);
    assert_int_equal(c, 0);
    assert_int_equal(ol, 0);
    /* Empty input. */
    memset(&dec, 0, sizeof(dec));
    assert_int_equal(hh_decode_chunked(&dec, "", 0, out, &ol, &c, 0), 0);
    assert_int_equal(c, 0);
}

/* ------------------------------------------------------- golden replay */

/* tests/data/http/<status>-<name>.req: the raw request; <status> is 200
 * when the head must parse, otherwise the expected error status. */
static void test_golden(void **state)
{
    (void)state;
#ifndef HH_TEST_DATA_DIR
    skip();
#else
    DIR *d = opendir(HH_TEST_DATA_DIR);
    assert_non_null(d);
    struct dirent *e;
    int count = 0;
    while ((e = readdir(d)) != NULL) {
        size_t nl = strlen(e->d_name);
        if (nl < 5 || strcmp(e->d_name + nl - 4, ".req") != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", HH_TEST_DATA_DIR, e->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        static char data[GUARD_AREA];
        size_t n = fread(data, 1, sizeof(data), f);
        fclose(f);
        int want = atoi(e->d_name);
        hh_request req;
        hh_header h[MAXH];
        int r = parse_lim(data, n, &req, h, MAXH, NULL);
        if (want == 200 ? r <= 0 : r != -want)
            fail_msg("%s: got %d", e->d_name, r);
        count++;
    }
    closedir(d);
    assert_true(count > 0);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get),
        cmocka_unit_test(test_post_length),
        cmocka_unit_test(test_post_chunked),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_leading_empty_lines),
        cmocka_unit_test(test_http10),
        cmocka_unit_test(test_connection),
        cmocka_unit_test(test_expect),
        cmocka_unit_test(test_target_forms),
        cmocka_unit_test(test_bad_request_line),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_bad_fields),
        cmocka_unit_test(test_smuggling),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_prefixes),
        cmocka_unit_test(test_find_header),
        cmocka_unit_test(test_format_date),
        cmocka_unit_test(test_chunked_valid),
        cmocka_unit_test(test_chunked_errors),
        cmocka_unit_test(test_chunked_limits),
        cmocka_unit_test(test_golden),
    };
    return cmocka_run_group_tests(tests, guard_setup, guard_teardown);
}

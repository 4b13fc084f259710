/*
 * fuzz-http-request.c - libFuzzer harness for hh_parse_request().
 *
 * Parses the input with a few limit settings and checks invariants that
 * must hold for any input:
 *  - the result is > 0 and <= len, or one of the HH_* codes;
 *  - on success every output lies inside the parsed head, header names
 *    are tokens and values hold no CR, LF or NUL, and the derived fields
 *    are in range;
 *  - parsing is prefix-consistent: a prefix of the input gives
 *    HH_INCOMPLETE or the same result as the whole input (the same length
 *    once the prefix covers the head).
 * Prefixes are copied into exact-size heap buffers so that ASan catches
 * any read past the length given.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,      \
                    __LINE__, #cond);                                       \
            abort();                                                        \
        }                                                                   \
    } while (0)

#define NH 16

static int valid_result(int r, size_t len)
{
    if (r > 0)
        return (size_t)r <= len;
    return r == HH_INCOMPLETE || r == HH_ERR_BAD_REQUEST ||
           r == HH_ERR_URI_TOO_LONG || r == HH_ERR_HEADERS_TOO_LARGE ||
           r == HH_ERR_NOT_IMPLEMENTED || r == HH_ERR_VERSION;
}

static void check_str(hh_str s, const char *b, const char *e)
{
    CHECK(s.p != NULL || s.len == 0);
    if (s.len)
        CHECK(s.p >= b && s.p + s.len <= e);
}

static void check_request(const hh_request *req, const hh_header *h,
                          size_t nh, const char *b, int r)
{
    const char *e = b + r;
    check_str(req->method, b, e);
    check_str(req->target, b, e);
    check_str(req->path, b, e);
    check_str(req->query, b, e);
    check_str(req->host, b, e);
    CHECK(req->method.len > 0 && req->target.len > 0);
    CHECK(req->minor_version == 0 || req->minor_version == 1);
    CHECK(req->headers == h && req->num_headers <= nh);
    CHECK(req->body_kind == HH_BODY_NONE || req->body_kind == HH_BODY_LENGTH ||
          req->body_kind == HH_BODY_CHUNKED);
    CHECK(req->body_kind == HH_BODY_LENGTH ? req->content_length > 0
                                           : req->content_length == 0);
    CHECK(req->content_length <= (uint64_t)INT64_MAX);
    CHECK(req->body_kind != HH_BODY_CHUNKED || req->minor_version == 1);
    CHECK(req->keep_alive == 0 || req->keep_alive == 1);
    CHECK(req->upgrade == 0 || req->upgrade == 1);
    CHECK(req->expect_continue == 0 || req->expect_continue == 1);
    CHECK(req->path.len + req->query.len <= req->target.len);
    for (size_t i = 0; i < req->num_headers; i++) {
        check_str(h[i].name, b, e);
        check_str(h[i].value, b, e);
        CHECK(h[i].name.len > 0);
        for (size_t j = 0; j < h[i].name.len; j++) {
            unsigned char c = (unsigned char)h[i].name.p[j];
            CHECK(c > 0x20 && c < 0x7f && c != ':');
        }
        for (size_t j = 0; j < h[i].value.len; j++) {
            unsigned char c = (unsigned char)h[i].value.p[j];
            CHECK(c != '\r' && c != '\n' && c != 0);
        }
        if (h[i].value.len) {
            CHECK(h[i].value.p[0] != ' ' && h[i].value.p[0] != '\t');
            char last = h[i].value.p[h[i].value.len - 1];
            CHECK(last != ' ' && last != '\t');
        }
    }
    if (req->minor_version == 1)
        CHECK(hh_find_header(req, "host") != NULL);
}

static int parse_copy(const uint8_t *data, size_t len, hh_header *h, size_t nh,
                      const hh_limits *lim)
{
    char *copy = calloc(len ? len : 1, 1);
    CHECK(copy != NULL);
    if (len)
        memcpy(copy, data, len);
    hh_request req;
    int r = hh_parse_request(copy, len, &req, h, nh, lim);
    CHECK(valid_result(r, len));
    if (r > 0)
        check_request(&req, h, nh, copy, r);
    free(copy);
    return r;
}

static void run(const uint8_t *data, size_t size, size_t nh,
                const hh_limits *lim)
{
    hh_header h[NH];
    int r = parse_copy(data, size, h, nh, lim);

    /* Prefix consistency at a few cut points (all of them would make the
     * harness quadratic). */
    size_t cuts[4] = {size ? size - 1 : 0, size / 2, 0, 0};
    size_t ncuts = 2;
    if (r > 0) {
        cuts[ncuts++] = (size_t)r;
        cuts[ncuts++] = (size_t)r - 1;
    } else if (size > 2) {
        cuts[ncuts++] = (size_t)(data[0] ^ (data[size - 1] << 8)) % size;
    }
    for (size_t i = 0; i < ncuts; i++) {
        size_t k = cuts[i];
        if (k > size)
            continue;
        int rk = parse_copy(data, k, h, nh, lim);
        if (r > 0 && k >= (size_t)r)
            CHECK(rk == r);
        else
            CHECK(rk == HH_INCOMPLETE || rk == r);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const hh_limits small = {96, 24};
    static const hh_limits tiny = {24, 8};
    run(data, size, NH, NULL);
    run(data, size, 3, &small);
    run(data, size, 1, &tiny);
    return 0;
}

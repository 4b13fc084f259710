/*
 * fuzz-chunked.c - libFuzzer harness for hh_decode_chunked().
 *
 * Decodes the input in one piece, in place, byte by byte and in pieces
 * whose sizes come from a PRNG seeded by the input, and checks that all
 * ways give the same result, the same payload and the same consumed
 * count; also that output never exceeds consumed input and consumed input
 * never exceeds what was given. A second pass with a small max_body
 * checks the limit. Every piece is copied into an exact-size heap buffer
 * so that ASan catches reads past the piece.
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

typedef struct outcome {
    int r;
    size_t out_len, consumed;
    uint64_t total;
} outcome;

/* piece == 0: random piece sizes from seed; otherwise fixed size. */
static outcome decode(const uint8_t *data, size_t size, size_t piece,
                      uint32_t seed, uint64_t max_body, char *out)
{
    hh_chunked dec;
    memset(&dec, 0, sizeof(dec));
    outcome o = {0, 0, 0, 0};
    size_t off = 0;
    do {
        size_t n = piece;
        if (n == 0) {
            seed = seed * 1103515245u + 12345u;
            n = 1 + (seed >> 16) % 32;
        }
        if (n > size - off)
            n = size - off;
        char *in = malloc(n ? n : 1);
        CHECK(in != NULL);
        if (n)
            memcpy(in, data + off, n);
        size_t ol = 0, c = 0;
        int r = hh_decode_chunked(&dec, in, n, out + o.out_len, &ol, &c,
                                  max_body);
        free(in);
        CHECK(r == 0 || r == 1 || r == HH_ERR_BAD_REQUEST || r == -413);
        CHECK(c <= n && ol <= c);
        o.out_len += ol;
        off += c;
        o.r = r;
        if (r != 0)
            break;
        CHECK(c == n);
    } while (off < size);
    o.consumed = off;
    o.total = dec.total;
    CHECK(o.total == o.out_len);
    CHECK(o.out_len <= o.consumed);
    if (max_body)
        CHECK(o.total <= max_body);
    return o;
}

static void same(outcome a, const char *aout, outcome b, const char *bout)
{
    CHECK(a.r == b.r);
    CHECK(a.out_len == b.out_len);
    CHECK(a.consumed == b.consumed);
    CHECK(memcmp(aout, bout, a.out_len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t cap = size ? size : 1;
    char *ref = malloc(cap), *out = malloc(cap), *inplace = malloc(cap);
    CHECK(ref && out && inplace);
    uint32_t seed = (uint32_t)size;
    for (size_t i = 0; i < size && i < 16; i++)
        seed = seed * 31u + data[i];

    outcome whole = decode(data, size, size ? size : 1, 0, 0, ref);

    /* In place: out == in. */
    {
        hh_chunked dec;
        memset(&dec, 0, sizeof(dec));
        if (size)
            memcpy(inplace, data, size);
        size_t ol = 0, c = 0;
        int r = hh_decode_chunked(&dec, inplace, size, inplace, &ol, &c, 0);
        outcome o = {r, ol, c, dec.total};
        same(whole, ref, o, inplace);
    }

    same(whole, ref, decode(data, size, 1, 0, 0, out), out);
    same(whole, ref, decode(data, size, 0, seed, 0, out), out);
    same(whole, ref, decode(data, size, 0, seed ^ 0x9e3779b9u, 0, out), out);

    /* With a body limit: identical up to the point where the limit hits,
     * and a success means the whole body fitted. */
    uint64_t limit = 1 + (seed % 64);
    outcome lim = decode(data, size, 0, seed, limit, out);
    if (whole.r == 1 && whole.total <= limit)
        same(whole, ref, lim, out);
    if (lim.r == 1)
        same(whole, ref, lim, out);
    /* The limit counts declared chunk sizes, so it can hit before the
     * data arrives, but never for a complete body that fits. */
    if (lim.r == -413)
        CHECK(whole.r != 1 || whole.total > limit);
    /* Until the limit hits, decoding is the same as without one. */
    CHECK(lim.out_len <= whole.out_len);
    CHECK(memcmp(out, ref, lim.out_len) == 0);
    if (lim.r != -413)
        same(whole, ref, lim, out);

    free(ref);
    free(out);
    free(inplace);
    return 0;
}

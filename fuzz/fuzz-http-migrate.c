/*
 * fuzz-http-migrate.c - libFuzzer harness for hs_mig_parse(), the reader
 * of the state blob an HTTP/1.1 connection brings from the previous
 * generation (src/http/migrate_blob.c; untrusted input for the successor).
 *
 * The input is parsed from an exact-size heap copy (ASan catches reads
 * past it). A blob that parses has consistent lengths (the input lies
 * inside the blob, the header is at least 32 bytes); building it again
 * from what was parsed and parsing that gives the same fields and input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/migrate.h" /* src/migrate.h is the core's */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__,      \
                    __LINE__, #cond);                                       \
            abort();                                                        \
        }                                                                   \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *copy = calloc(1, size ? size : 1);
    if (!copy)
        return 0;
    if (size)
        memcpy(copy, data, size);
    struct hs_mig_state st;
    int r = hs_mig_parse(copy, size, &st);
    if (r == 0) {
        CHECK(size >= HS_MIG_HDR);
        CHECK(st.len <= size - HS_MIG_HDR);
        CHECK(st.len == 0 || (st.in >= (const char *)copy + HS_MIG_HDR &&
                              st.in + st.len == (const char *)copy + size));
        CHECK(st.wait <= HS_MIG_WAIT_HEAD);
        unsigned char *again = malloc(HS_MIG_HDR + st.len);
        if (again) {
            hs_mig_build(&st, again);
            struct hs_mig_state st2;
            CHECK(hs_mig_parse(again, HS_MIG_HDR + st.len, &st2) == 0);
            CHECK(st2.nreq == st.nreq && st2.elapsed == st.elapsed && st2.wait == st.wait &&
                  st2.len == st.len);
            CHECK(st.len == 0 || memcmp(st2.in, st.in, st.len) == 0);
            free(again);
        }
    } else {
        CHECK(r == -71 /* EPROTO */ || r == -22 /* EINVAL */);
    }
    free(copy);
    return 0;
}

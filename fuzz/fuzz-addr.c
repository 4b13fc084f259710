/* libFuzzer harness: the address-spec parser. Invariants: no crash; a
 * parsed address has a consistent kind/family/type and length; formatting
 * it and parsing the result gives the same socket address back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "handoff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char spec[1024], buf[256], err[256];
    handoff_addr a, b;

    if (size >= sizeof spec)
        return 0;
    memcpy(spec, data, size);
    spec[size] = '\0';
    if (handoff_addr_parse(spec, &a, err, sizeof err) != 0)
        return 0;
    if (a.len == 0 || a.len > sizeof a.sa.raw)
        abort();
    if ((a.kind == HANDOFF_ADDR_UDP) != (a.socktype == SOCK_DGRAM))
        abort();
    if ((a.kind == HANDOFF_ADDR_UNIX) != (a.family == AF_UNIX))
        abort();
    int n = handoff_addr_format(&a, buf, sizeof buf);
    if (n <= 0)
        abort();
    if (handoff_addr_parse(buf, &b, err, sizeof err) != 0)
        abort();
    if (a.len != b.len || a.kind != b.kind || memcmp(a.sa.raw, b.sa.raw, a.len) != 0)
        abort();
    return 0;
}

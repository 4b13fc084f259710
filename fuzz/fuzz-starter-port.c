/* libFuzzer harness: the SERVER_STARTER_PORT parser. Invariants: no
 * crash; a result within 0..max or -EINVAL with a message; every entry has
 * a non-empty key without control characters and an fd in 0..65535, with
 * no fd twice. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct hf_starter_entry e[8];
    char *s = malloc(size + 1), err[256];

    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    int n = handoff__parse_starter_port(s, e, 8, err, sizeof err);
    if (n < 0 && (n != -EINVAL || !err[0]))
        abort();
    if (n > 8)
        abort();
    for (int i = 0; i < n; i++) {
        if (!e[i].key[0] || e[i].fd < 0 || e[i].fd > 65535)
            abort();
        for (int j = 0; j < i; j++)
            if (e[j].fd == e[i].fd)
                abort();
        for (const char *k = e[i].key; *k; k++)
            if ((unsigned char)*k < 0x20)
                abort();
    }
    free(s);
    return 0;
}

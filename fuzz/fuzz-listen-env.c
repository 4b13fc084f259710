/* libFuzzer harness: the LISTEN_PID / LISTEN_FDS / LISTEN_FDNAMES parser.
 * The input is split at NUL bytes into up to three strings (a missing one
 * stands for an unset variable). Invariants: no crash, a result within
 * 0..4096 or a negative errno, names (when returned) one per fd and valid
 * or empty. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1), *parts[3] = {NULL, NULL, NULL}, err[256];
    struct hf_listen_env e;
    size_t k = 0;

    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    parts[0] = buf;
    for (size_t i = 0; i < size && k < 2; i++) {
        if (buf[i] == '\0')
            parts[++k] = buf + i + 1;
    }
    int r = handoff__parse_listen_env(parts[0], k >= 1 ? parts[1] : NULL,
                                      k >= 2 ? parts[2] : NULL, 4242, &e, err, sizeof err);
    if (r > HF_MAX_INHERIT || (r < 0 && r != -EINVAL && r != -ESRCH && r != -ENOMEM))
        abort();
    if (r >= 0 && e.nfds != r)
        abort();
    if (e.names) {
        for (int i = 0; i < e.nfds; i++)
            if (e.names[i][0] && !handoff__valid_name(e.names[i]))
                abort();
    }
    if (strlen(err) >= sizeof err)
        abort();
    handoff__listen_env_done(&e);
    free(buf);
    return 0;
}

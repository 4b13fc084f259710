/* libFuzzer harness: what the preload shim parses from its environment
 * (src/preload/env.c). The first byte picks the parser:
 *  0: HANDOFF_PRELOAD (pl_env_parse). A value it accepts formats back
 *     (pl_env_format) to one it accepts again, equal field by field, and
 *     every held socket formats (pl_sock_format) to a terminated string.
 *  1: LD_PRELOAD editing: pl_preload_strip() leaves no entry naming the
 *     shim, keeps the other entries in order, never grows the list;
 *     pl_preload_add() puts the shim last, exactly once.
 * The rest of the input is the text (a NUL ends it), copied into an
 * exact-size heap buffer so that ASan sees any read past it. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "preload.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *lib = "/usr/lib/x86_64-linux-gnu/libhandoff-preload.so";

static void env_case(const char *s)
{
    static struct pl_env a, b;
    static char buf[65536];
    char err[128];
    int n;

    if (pl_env_parse(s, &a, err, sizeof err) < 0) {
        if (!memchr(err, '\0', sizeof err) || !err[0])
            abort();
        return;
    }
    for (size_t i = 0; i < a.nheld; i++) {
        char f[200];
        if (pl_sock_format(&a.held[i], f, sizeof f) >= sizeof f || !memchr(f, '\0', sizeof f))
            abort();
    }
    n = pl_env_format(&a, buf, sizeof buf);
    if (n == -EINVAL && !a.lib[0])
        return; /* no lib= given: nothing to format it with */
    if (n < 0)
        abort();
    pl_put_pid(buf + n - PL_PID_DIGITS, a.pid);
    if (pl_env_parse(buf, &b, NULL, 0) < 0)
        abort();
    if (a.pid != b.pid || a.depth != b.depth || a.ready != b.ready || a.log != b.log ||
        a.stop_signal != b.stop_signal || a.netns_ino != b.netns_ino || strcmp(a.sock, b.sock) ||
        strcmp(a.lib, b.lib) || a.nheld != b.nheld)
        abort();
    for (size_t i = 0; i < a.nheld; i++) {
        size_t idx;
        if (pl_match(&a.held[i], 1, &b.held[i], &idx, NULL) != PL_MATCH || a.held[i].sino != b.held[i].sino)
            abort();
    }
}

static bool sep(char c)
{
    return c == ' ' || c == ':';
}

static void preload_case(const char *s)
{
    size_t len = strlen(s);
    char *copy = malloc(len + 1), *out = malloc(len + strlen(lib) + 2);
    size_t n, r = 0, w = 0;

    if (!copy || !out)
        abort();
    memcpy(copy, s, len + 1);
    n = pl_preload_strip(copy, lib);
    if (n > len || strlen(copy) != n)
        abort();
    /* The entries left are the original's non-shim entries, in order. */
    while (s[r]) {
        size_t st, l;
        while (sep(s[r]))
            r++;
        st = r;
        while (s[r] && !sep(s[r]))
            r++;
        l = r - st;
        if (!l || pl_preload_is_shim(s + st, l, lib))
            continue;
        while (sep(copy[w]))
            w++;
        if (strncmp(copy + w, s + st, l) != 0 || (copy[w + l] && !sep(copy[w + l])))
            abort();
        w += l;
    }
    while (sep(copy[w]))
        w++;
    if (copy[w])
        abort();
    if (pl_preload_add(out, len + strlen(lib) + 2, s, lib) == 0) {
        /* The last entry is lib; no other entry names the shim. */
        size_t ol = strlen(out), ll = strlen(lib), i = 0;
        if (ol < ll || strcmp(out + ol - ll, lib) != 0 || (ol > ll && !sep(out[ol - ll - 1])))
            abort();
        while (i < ol - ll) {
            size_t st;
            while (i < ol - ll && sep(out[i]))
                i++;
            st = i;
            while (i < ol - ll && !sep(out[i]))
                i++;
            if (i > st && pl_preload_is_shim(out + st, i - st, lib))
                abort();
        }
    }
    free(copy);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s;

    if (size < 1)
        return 0;
    s = malloc(size);
    if (!s)
        return 0;
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    if (data[0] & 1)
        preload_case(s);
    else
        env_case(s);
    free(s);
    return 0;
}
